"""Searching the identifiers of a prefix by what they carry, showing only what the caller may
read.

A search names a prefix, a type (the English key of an item of a data template declared
``searchable``: only templated records are indexed, at their template's enabled searchable
items, see :mod:`resolver.search`; case-insensitive; a type no such item has finds nothing,
answered as an empty page: saying "not searchable" instead would read the prefix's templates
on every search, or on every search finding nothing) and one of: ``value`` (exact, case-sensitive),
``startsWith`` (the value's beginning) or ``min``/``max`` (an inclusive range of numbers, dates
or date-times, for template items of those types).  It answers a page of handles in keyset
order, and a cursor for the next page.

Under a prefix ``P`` means the handles ``P/...``; with ``subtree`` also those of every prefix
derived from it (``P.X/...``, ``P.X.Y/...``).

Authorization: a value without public read permission matches only for a caller holding
READ_VALUE over the prefix record ``0.NA/P`` (an administrator of the prefix, or a token
scoped to it or above it with that right) and over the handle itself (its own HS_ADMIN, as
its resolution decides; checked for each private match of a page, so a page may hold fewer
handles than its size), and never in a subtree search (an administrator of ``P`` is not one
of ``P.X``'s handles): a handle is never revealed by a value its reader may not see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from registry.authorization import Fetch, Right, rights
from resolver.errors import HandleError, ProtocolError
from resolver.identifiers import fold, prefix_handle
from resolver.ports import RecordStore
from resolver.search import (
    DEFAULT_PAGE_SIZE,
    MAX_INDEXED_CHARS,
    MAX_PAGE_SIZE,
    Hit,
    Query,
    bound,
    decode_cursor,
    page_of,
)
from resolver.values import Ref

Get = Callable[[str], str | None]
"""Reads one query parameter (None when absent)."""

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"", "false", "0", "no", "off"}


@dataclass(frozen=True, slots=True)
class Page:
    prefix: str
    page_size: int
    handles: list[str]
    next: str | None


def _flag(get: Get, name: str) -> bool:
    text = (get(name) or "").strip().lower()
    if text not in _TRUE | _FALSE:
        raise ProtocolError(f"{name} must be true or false")
    return text in _TRUE


def parse(get: Get) -> Query:
    """The query the parameters ask for (without authorization: ``private`` is False);
    :class:`ProtocolError` (400) naming what is wrong with them."""
    prefix = (get("prefix") or "").strip()
    if not prefix or "/" in prefix or len(prefix) > 255:
        raise ProtocolError("prefix is required: a handle prefix such as 88.100.1, without '/'")
    kind = (get("type") or "").strip()
    if not kind or len(kind) > 1024:
        raise ProtocolError("type is required: the template item's key")
    exact, starts, low_text, high_text = (get(n) for n in ("value", "startsWith", "min", "max"))
    given = [n for n, v in (("value", exact), ("startsWith", starts)) if v is not None]
    if low_text is not None or high_text is not None:
        given.append("min/max")
    if len(given) != 1:
        raise ProtocolError("give exactly one of value, startsWith, or min and/or max")
    if exact is not None and len(exact) > MAX_INDEXED_CHARS:
        raise ProtocolError(
            f"values are matched exactly up to {MAX_INDEXED_CHARS} characters: use startsWith"
        )
    if starts is not None and not 0 < len(starts) <= MAX_INDEXED_CHARS:
        raise ProtocolError(f"startsWith must have 1 to {MAX_INDEXED_CHARS} characters")
    try:
        low = bound(low_text, "min") if low_text else None
        high = bound(high_text, "max") if high_text else None
    except HandleError as error:
        raise ProtocolError(error.message) from None
    if given == ["min/max"] and low is None and high is None:
        raise ProtocolError("min or max must name a bound")
    if low is not None and high is not None and low > high:
        raise ProtocolError("min is above max")
    size_text = get("pageSize")
    try:
        limit = int(size_text) if size_text else DEFAULT_PAGE_SIZE
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ProtocolError(f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}")
    query = Query(
        fold(prefix),
        kind.upper(),
        exact=exact,
        starts=starts,
        low=low,
        high=high,
        subtree=_flag(get, "subtree"),
        limit=limit,
    )
    after = get("after")
    if after:
        try:
            position = decode_cursor(after, query.mode)
        except HandleError as error:
            raise ProtocolError(error.message) from None
        query = replace(query, after=position)
    return query


class Searcher:
    """Answers searches from a store's index, reading prefix records with ``fetch`` (through
    the node's caches) to decide what a caller may see."""

    def __init__(self, store: RecordStore, fetch: Fetch) -> None:
        self._store = store
        self._fetch = fetch

    async def may_read_private(self, query: Query, identity: Ref | None) -> bool:
        if identity is None or query.subtree:
            return False
        authority = await self._fetch(fold(prefix_handle(query.prefix_key)))
        return bool(await rights(identity, authority, self._fetch) & Right.READ_VALUE)

    async def _readable(self, identity: Ref, key: str) -> bool:
        record = await self._fetch(key)
        return bool(await rights(identity, record, self._fetch) & Right.READ_VALUE)

    async def search(self, get: Get, identity: Ref | None) -> Page:
        """One page of the search the parameters ask for, as ``identity`` (None: anonymous)
        may see it."""
        query = parse(get)
        hidden: list[Hit] = []
        if identity is not None and await self.may_read_private(query, identity):
            query = replace(query, private=True)
            hits = await self._store.search(query)
            # The prefix's administrators read its handles' private values, unless a handle's
            # own HS_ADMIN says otherwise: each private match is checked as resolution would.
            for hit in hits[: query.limit]:
                if not hit.public and not await self._readable(identity, hit.position[1]):
                    hidden.append(hit)
        else:
            hits = await self._store.search(query)
        handles, following = page_of(hits, query.limit, hidden)
        return Page((get("prefix") or "").strip(), query.limit, handles, following)
