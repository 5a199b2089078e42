"""HS_ADMIN rights: who may do what to a handle (RFC 3651 section 3.5.1).

An HS_ADMIN value grants its 12 rights to the identity it names, either directly
(``index:handle`` of a key value; index 0 matches any index of that handle) or through an
HS_VLIST group that lists the identity, groups nesting recursively.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from resolver.identifiers import fold
from resolver.values import HS_ADMIN, HS_VLIST, AdminRef, HandleValue, Record, Ref

Fetch = Callable[[str], Awaitable[Record | None]]
"""Reads a record by folded key."""

MAX_GROUP_DEPTH = 16


class Right(enum.IntFlag):
    ADD_HANDLE = 1 << 0
    DELETE_HANDLE = 1 << 1
    ADD_DERIVED_PREFIX = 1 << 2
    DELETE_DERIVED_PREFIX = 1 << 3
    MODIFY_VALUE = 1 << 4
    REMOVE_VALUE = 1 << 5
    ADD_VALUE = 1 << 6
    MODIFY_ADMIN = 1 << 7
    REMOVE_ADMIN = 1 << 8
    ADD_ADMIN = 1 << 9
    READ_VALUE = 1 << 10
    LIST_HANDLES = 1 << 11


ALL_RIGHTS = 0xFFF
DEFAULT_ADMIN_RIGHTS = 0b011111111111
"""Everything but listing: what a new handle's default HS_ADMIN grants (as Handle.Net does)."""


def admins(values: Iterable[HandleValue]) -> list[AdminRef]:
    return [v.data.value for v in values if v.type == HS_ADMIN and v.data.format == "admin"]


@dataclass(frozen=True, slots=True)
class Scoped(Ref):
    """An identity acting through a scoped API token (registry/tokens.py): it holds at most
    the rights in ``mask``, and only over handles under ``prefix`` (its derived prefixes
    included; ``""`` is every prefix).  Everywhere else it is the identity it names."""

    prefix: str = ""
    mask: int = 0


def in_scope(handle: str, prefix: str) -> bool:
    """Whether ``handle`` lies under ``prefix``: ``P/S``, a derived ``P.X/S``, and the prefix
    records ``0.NA/P`` and ``0.NA/P.X`` (which decide creation and listing under them)."""
    if not prefix:
        return True
    head, _, tail = fold(handle).partition("/")
    owner = tail if head == "0.NA" else head
    scope = fold(prefix)
    return owner == scope or owner.startswith(scope + ".")


async def rights(identity: Ref, record: Record | None, fetch: Fetch) -> int:
    """The union of the rights that ``record``'s HS_ADMIN values grant ``identity``, within
    its scope if it is :class:`Scoped`."""
    if record is None:
        return 0
    if isinstance(identity, Scoped):
        if not in_scope(record.handle, identity.prefix):
            return 0
        return await rights(Ref(identity.handle, identity.index), record, fetch) & identity.mask
    granted = 0
    for admin in admins(record.values):
        if admin.permissions & ~granted and await _names(
            Ref(admin.handle, admin.index), identity, fetch, set(), 0
        ):
            granted |= admin.permissions
    return granted


async def _names(ref: Ref, identity: Ref, fetch: Fetch, seen: set[Ref], depth: int) -> bool:
    """True if ``ref`` is ``identity`` or a group (HS_VLIST) that contains it."""
    if fold(ref.handle) == fold(identity.handle) and ref.index in (0, identity.index):
        return True
    if ref in seen or depth >= MAX_GROUP_DEPTH:  # a cycle or a runaway nesting grants nothing
        return False
    seen.add(ref)
    record = await fetch(fold(ref.handle))
    if record is None:
        return False
    for value in record.values:
        if value.type != HS_VLIST or value.data.format != "vlist":
            continue
        if ref.index not in (0, value.index):
            continue
        for member in value.data.value:
            if await _names(member, identity, fetch, seen, depth + 1):
                return True
    return False
