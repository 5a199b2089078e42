"""Homing a prefix on this node and creating its administrator, as Handle services are set up.

``0.NA/PREFIX`` gets an HS_ADMIN naming its own admin group (``200:0.NA/PREFIX``) with every
right, and that group (an HS_VLIST at index 200) names ``300:PREFIX/ADMIN``, whose HS_SECKEY at
index 300 holds the salted hash of the secret.  This is the arrangement pyhandle's defaults
(``handleowner`` 200:0.NA/PREFIX) assume.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry.authorization import ALL_RIGHTS, Right
from registry.invalidation import Invalidator
from registry.secrets import seal_secret
from resolver.errors import HandleAlreadyExists, PrefixNotHomed
from resolver.homes import HOMES_KEY
from resolver.identifiers import Handle, fold, parent_prefixes, prefix_handle, validate_prefix
from resolver.ports import RecordStore
from resolver.sites import HS_SITE_PREFIX, site_data
from resolver.values import (
    ADMIN_GROUP_INDEX,
    ADMIN_INDEX,
    HS_ADMIN,
    HS_SECKEY,
    HS_SITE,
    HS_VLIST,
    SECRET_KEY_INDEX,
    SECRET_PERMISSIONS,
    AdminRef,
    Data,
    HandleValue,
    Record,
    Ref,
)

ADMIN_SUFFIX = "ADMIN"
SITE_INDEX = 1
DERIVED_SITE_INDEX = 2


@dataclass(frozen=True, slots=True)
class PrefixAdmin:
    prefix: str
    identity: Ref
    created: bool = True
    """False when the records existed already (set up earlier, or replicated from a peer)."""


def admin_group(prefix: str) -> AdminRef:
    """The HS_ADMIN of a homed prefix's records: its admin group ``200:0.NA/PREFIX``, all rights."""
    return AdminRef(prefix_handle(prefix), ADMIN_GROUP_INDEX, ALL_RIGHTS)


def admin_identity(prefix: str) -> Ref:
    """The prefix administrator ``300:PREFIX/ADMIN``, the one member of the admin group."""
    return Ref(f"{prefix}/{ADMIN_SUFFIX}", SECRET_KEY_INDEX)


def secret_key(secret_hash: str, now: int) -> HandleValue:
    """An HS_SECKEY at index 300 holding an already hashed secret, readable by admins only."""
    return HandleValue(
        SECRET_KEY_INDEX,
        HS_SECKEY,
        Data("string", secret_hash),
        timestamp=now,
        permissions=SECRET_PERMISSIONS,
    )


def site_values(
    url: str,
    description: str,
    *,
    derived: bool = False,
    now: int = 0,
    native_port: int | None = None,
    public_key: dict[str, Any] | None = None,
) -> list[HandleValue]:
    """For ``0.NA/PREFIX``: the HS_SITE saying that the idis node at ``url`` answers for the
    handles under PREFIX, and with ``derived`` the HS_SITE.PREFIX saying that it administers
    the prefixes derived from PREFIX.  ``now`` stamps them (a server stamps what it is sent).
    ``native_port`` and ``public_key`` add the native interfaces and the site's key (see
    :func:`resolver.sites.site_data`)."""
    data = Data(
        "site",
        site_data([url], description, native_port=native_port, public_key=public_key),
    )
    values = [HandleValue(SITE_INDEX, HS_SITE, data, timestamp=now)]
    if derived:
        values.append(HandleValue(DERIVED_SITE_INDEX, HS_SITE_PREFIX, data, timestamp=now))
    return values


def prefix_record(prefix: str, now: int, extra: Sequence[HandleValue] = ()) -> Record:
    """``0.NA/PREFIX`` administered by its admin group (HS_ADMIN at 100, the group's HS_VLIST at
    200 naming :func:`admin_identity`), plus ``extra`` values (an HS_SITE, say)."""
    group = admin_group(prefix)
    values = (
        *extra,
        HandleValue(ADMIN_INDEX, HS_ADMIN, Data("admin", group), timestamp=now),
        HandleValue(
            ADMIN_GROUP_INDEX, HS_VLIST, Data("vlist", (admin_identity(prefix),)), timestamp=now
        ),
    )
    return Record(group.handle, tuple(sorted(values, key=lambda v: v.index)))


def admin_record(prefix: str, secret_hash: str, now: int) -> Record:
    """``PREFIX/ADMIN``: administered by the admin group, authenticated by its HS_SECKEY."""
    return Record(
        admin_identity(prefix).handle,
        (
            HandleValue(ADMIN_INDEX, HS_ADMIN, Data("admin", admin_group(prefix)), timestamp=now),
            secret_key(secret_hash, now),
        ),
    )


async def init_prefix(
    store: RecordStore, invalidator: Invalidator, prefix: str, secret: str
) -> PrefixAdmin:
    """Home ``prefix`` and create ``0.NA/PREFIX`` and ``PREFIX/ADMIN``.

    When both records exist already (the prefix was set up before, here or at a top-level
    peer whose records replicated here) the prefix is only homed and the secret is left as it
    is (``created`` is False).  Raises :class:`HandleAlreadyExists` if only one of them exists:
    that is not a set-up this function made, and nothing is changed.
    """
    validate_prefix(prefix)
    now = int(time.time())
    na_record = prefix_record(prefix, now)
    secret_record = admin_record(prefix, seal_secret(secret), now)
    na = Handle.parse(na_record.handle)
    admin = Handle.parse(secret_record.handle)
    existing = await store.get_many([na.key, admin.key])
    if len(existing) == 1:
        taken = ", ".join(r.handle for r in existing.values())
        raise HandleAlreadyExists(f"{taken} already exists", handle=na.text)
    if not existing:
        done = await store.put_many([(na.key, na_record, None), (admin.key, secret_record, None)])
        if not all(done):
            raise HandleAlreadyExists("prefix was initialised concurrently", handle=na.text)
    await store.home_prefix(prefix)
    await invalidator.written([na.key, admin.key, HOMES_KEY])
    return PrefixAdmin(prefix, admin_identity(prefix), created=not existing)


PREFIX_HOLDER_RIGHTS = (
    Right.ADD_VALUE
    | Right.MODIFY_VALUE
    | Right.REMOVE_VALUE
    | Right.ADD_DERIVED_PREFIX
    | Right.DELETE_DERIVED_PREFIX
    | Right.READ_VALUE
)
"""What the holder of a delegated prefix may do to its prefix record at the top level: point it
at its own sites and allocate derived prefixes, but not delete it or change who administers it."""


async def allocate_prefix(
    store: RecordStore, invalidator: Invalidator, prefix: str, secret: str
) -> Ref:
    """Create the prefix record ``0.NA/PREFIX`` for a prefix delegated to another node.

    The record authenticates its holder itself (HS_SECKEY at index 300, the identity
    ``300:0.NA/PREFIX``, as Handle's prefix administrators are usually set up) and grants it
    :data:`PREFIX_HOLDER_RIGHTS`; the holder then registers its sites with an ordinary
    authenticated write.  The parent prefix must be homed here (raises 301 otherwise).
    """
    validate_prefix(prefix)
    na = Handle.parse(prefix_handle(prefix))
    homed = {fold(p) for p in await store.homed_prefixes()}
    if not any(p in homed for p in parent_prefixes(fold(prefix))[1:]):
        raise PrefixNotHomed(f"no parent of {prefix} is homed on this node", handle=na.text)
    now = int(time.time())
    identity = Ref(na.text, SECRET_KEY_INDEX)
    holder = AdminRef(na.text, SECRET_KEY_INDEX, PREFIX_HOLDER_RIGHTS)
    record = Record(
        na.text,
        (
            HandleValue(ADMIN_INDEX, HS_ADMIN, Data("admin", holder), timestamp=now),
            secret_key(seal_secret(secret), now),
        ),
    )
    if not await store.put(na.key, record, None):
        raise HandleAlreadyExists(f"{na.text} already exists", handle=na.text)
    await invalidator.written([na.key])
    return identity
