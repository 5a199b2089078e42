"""Finding identifiers by what they carry: the index entries of a record, and search queries.

The search index holds what data templates declare searchable, nothing else.  A record whose
index 1001 names a template (see :func:`resolver.templates.named_template`) has one
:class:`Entry` per value at the index of an *enabled, searchable* item (``"searchable": true``,
as ``unique`` is declared) of the template version it was checked against, whose data is
format ``string``; the entry is keyed by the value's type upper-cased, which
:func:`resolver.templates.validate` makes the item's English key, so searching by type finds a
templated record's values by their item's key.  Values of items not declared searchable,
values at 2000 or above of untemplated records, and records naming no template are not
indexed: a search by such a type finds nothing.  Plain and untemplated writes and imports
(bulk loads toward billions of identifiers) pay one check for it, never an index row; so do
records of a template with no searchable item, which also skip removing old rows
(:func:`may_hold_entries`).  An item disabled in a later version of the template stops being
indexed when a record is next changed (records are indexed by the version that checked them;
a record sent again unchanged is not written); an item made searchable by a later version is
indexed for the records written after it.

The entry holds the value's text (its first :data:`MAX_INDEXED_CHARS` characters) and, for
items typed ``number``, ``date`` or ``date-time``, a number that sorts as the value does:

- a number is itself, as a 64-bit float (exact to 15 significant digits);
- a date or a date-time is seconds since 1970-01-01T00:00:00Z (a date is its midnight UTC).

Dates share the numeric column rather than getting their own: one range index serves numbers
and times alike, a row stays one float wider than a plain text entry, and a date range then
also finds the date-times of those days.  The kind of a range's bounds follows their form
(``12.5`` is a number, ``2026-01-31`` a date), so an item's numbers and dates cannot meet
unless two templates give one key two types.

Pure: the stores keep the entries (``attr_index``), :mod:`registry.search` answers queries,
:mod:`registry.import_index` makes the same rows for ``idis import``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

import orjson

from resolver.errors import InvalidValue
from resolver.templates import _DATE, _DATE_TIME, _NUMBER, Template, named_template
from resolver.values import PUBLIC_READ, HandleValue

MAX_INDEXED_CHARS = 256
"""Characters of a value's text kept in its entry: exact matches of longer texts are refused
(match their start with ``startsWith``), and an index row stays far below btree's limit."""
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
NUMERIC_KINDS = frozenset({"number", "date", "date-time"})
_EPOCH_DAY = date(1970, 1, 1).toordinal()


class Entry(NamedTuple):
    """One value of a record in the search index (a tuple: made for every attribute of
    every record written, it must cost little)."""

    idx: int
    type: str
    """The value's type upper-cased: searches by type are case-insensitive, as Handle's are."""
    text: str
    number: float | None
    public: bool


Kinds = Mapping[int, str]
"""Item index -> item type (``number``, ``date``...) of the enabled searchable items of a
record's template: the indexes a record's entries come from."""


def kinds_of(template: Template | None) -> Kinds:
    """The types of ``template``'s enabled searchable items by index (empty for no template,
    or one without any)."""
    if template is None or not template.indexed:
        return {}
    return {
        item.index: item.rule.type for item in template.items if item.enabled and item.searchable
    }


def sortable(kind: str, text: str) -> float | None:
    """The number a value of ``kind`` sorts by (see the module's docstring), None if ``text``
    is not of that kind or ``kind`` is not numeric."""
    try:
        if kind == "number":
            return float(text) if _NUMBER.fullmatch(text) else None
        if kind == "date":
            if _DATE.fullmatch(text) is None:
                return None
            return float((date.fromisoformat(text).toordinal() - _EPOCH_DAY) * 86400)
        if kind == "date-time":
            if _DATE_TIME.fullmatch(text) is None:
                return None
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None
    return None


def has_entries(values: Sequence[HandleValue]) -> bool:
    """Whether a record with ``values`` may have index entries: it names a template at 1001
    (a cheap test: records naming none never have any)."""
    return named_template(values) is not None


def may_hold_entries(
    old: Sequence[HandleValue], new: Sequence[HandleValue], template: Template | None
) -> bool:
    """Whether the record ``old``, which ``new`` (checked against ``template``, None if it
    names none) replaces, may hold index entries that must go: it names a template, unless
    it names the same one as ``new`` and that template never had a searchable item (a
    version never unflags one, so none of its versions indexed ``old``).  Template names
    are compared as written: a difference in case only costs a needless look."""
    named = named_template(old)
    if named is None:
        return False
    return template is None or template.indexed or named != named_template(new)


def entries(values: Sequence[HandleValue], kinds: Kinds | None = None) -> tuple[Entry, ...]:
    """The index entries of a record's ``values``: those at the indexes of ``kinds`` (the
    enabled searchable items of the template the record was checked against; none without
    one)."""
    if not kinds:
        return ()
    found = []
    for value in values:
        kind = kinds.get(value.index)
        if kind is None or value.data.format != "string":
            continue
        text = value.data.value
        number = sortable(kind, text) if kind in NUMERIC_KINDS else None
        public = bool(value.permissions & PUBLIC_READ)
        text = text[:MAX_INDEXED_CHARS]
        found.append(Entry(value.index, value.type.upper(), text, number, public))
    return tuple(found)


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """One search: entries of ``type`` under ``prefix_key`` (folded) matching one of

    - ``exact``: text equal to it;
    - ``starts``: text starting with it;
    - ``low``/``high``: number between them, inclusive (either may be None: unbounded).

    Answers come in keyset order: by key for ``exact``, by (text, key) for ``starts``, by
    (number, key) for a range; ``after`` is the position of the last answer of the page before.
    ``subtree`` widens the prefix to its derived prefixes (``P.X``); ``private`` admits values
    without public read permission.
    """

    prefix_key: str
    type: str
    exact: str | None = None
    starts: str | None = None
    low: float | None = None
    high: float | None = None
    subtree: bool = False
    private: bool = False
    limit: int = DEFAULT_PAGE_SIZE
    after: tuple[str | float, str, int] | None = None

    @property
    def key_range(self) -> tuple[str, str]:
        """``[low, high)`` of the keys searched: ``'0'`` follows ``'/'`` and ``'/'`` follows
        ``'.'`` in byte order, so ``P/`` to ``P0`` is the handles of ``P`` and ``P.`` to
        ``P0`` those of ``P`` and of every prefix derived from it."""
        return self.prefix_key + ("." if self.subtree else "/"), self.prefix_key + "0"

    @property
    def mode(self) -> str:
        return (
            "exact" if self.exact is not None else "starts" if self.starts is not None else "range"
        )


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching entry: the handle's display text and its keyset position."""

    handle: str
    position: tuple[str | float, str, int]
    public: bool = True
    """False if it matched by a value without public read permission (a private search)."""


def text_after(prefix: str) -> str:
    """The least string greater than every string starting with ``prefix`` (code point order,
    which is the byte order of UTF-8 and of the "C" collation), or "" if there is none."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if last == 0xD800:
            last = 0xE000  # surrogates are never stored
        if last <= 0x10FFFF:
            return "".join(chars) + chr(last)
    return ""


def bound(text: str, name: str) -> float:
    """A range bound as the index compares it: a decimal number, a date or a date-time."""
    for kind in ("number", "date", "date-time"):
        number = sortable(kind, text)
        if number is not None:
            return number
    raise InvalidValue(
        f"{name} must be a decimal number, a date YYYY-MM-DD"
        " or an ISO 8601 date-time with a time zone"
    )


def encode_cursor(position: tuple[str | float, str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).rstrip(b"=").decode()


def decode_cursor(text: str, mode: str) -> tuple[str | float, str, int]:
    """The position a cursor of :func:`encode_cursor` names; :class:`InvalidValue` if it is not
    one of a search of ``mode``."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidValue("after is not a cursor this search answered") from None
    wanted = (int, float) if mode == "range" else (str,)
    if (
        not isinstance(raw, list)
        or len(raw) != 3
        or isinstance(raw[0], bool)
        or not isinstance(raw[0], wanted)
        or not isinstance(raw[1], str)
        or not isinstance(raw[2], int)
        or isinstance(raw[2], bool)
    ):
        raise InvalidValue("after is not a cursor of this kind of search")
    first: str | float = float(raw[0]) if mode == "range" else raw[0]
    return first, raw[1], raw[2]


def page_of(
    hits: Sequence[Hit], limit: int, hidden: Sequence[Hit] = ()
) -> tuple[list[str], str | None]:
    """The handles of a page of ``hits`` (``limit + 1`` were asked for, to know whether more
    follow) but those ``hidden`` (which the caller may not read), and the cursor of the next
    page, if any: a page may hold fewer handles than ``limit`` and still be followed by
    another.  A handle matching by two values in a row is named once."""
    shown = hits[:limit]
    handles: list[str] = []
    for hit in shown:
        if hit in hidden:
            continue
        if not handles or handles[-1] != hit.handle:
            handles.append(hit.handle)
    following = encode_cursor(shown[-1].position) if len(hits) > limit and shown else None
    return handles, following


def position(query: Query, key: str, entry: Entry) -> tuple[str | float, str, int] | None:
    """Where ``entry`` of ``key`` stands in ``query``'s keyset order, or None if it does not
    match ``query`` (what the SQL stores' statement selects, for the in-memory store)."""
    low, high = query.key_range
    if entry.type != query.type or not low <= key < high or not (entry.public or query.private):
        return None
    if query.exact is not None:
        return (entry.text, key, entry.idx) if entry.text == query.exact else None
    if query.starts is not None:
        return (entry.text, key, entry.idx) if entry.text.startswith(query.starts) else None
    number = entry.number
    if number is None:
        return None
    if (query.low is not None and number < query.low) or (
        query.high is not None and number > query.high
    ):
        return None
    return number, key, entry.idx


def order_key(query: Query, place: tuple[str | float, str, int]) -> tuple[str | float, str, int]:
    """The part of a position the order compares (an exact match orders by key alone)."""
    return ("", place[1], place[2]) if query.mode == "exact" else place
