"""Homing a prefix on this node and creating its administrator, as Handle services are set up.

``0.NA/PREFIX`` gets an HS_ADMIN naming its own admin group (``200:0.NA/PREFIX``) with every
right, and that group (an HS_VLIST at index 200) names ``300:PREFIX/ADMIN``, whose HS_SECKEY at
index 300 holds the salted hash of the secret.  This is the arrangement pyhandle's defaults
(``handleowner`` 200:0.NA/PREFIX) assume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from registry.authorization import ALL_RIGHTS, Right
from registry.invalidation import Invalidator
from registry.secrets import hash_secret
from resolver.errors import HandleAlreadyExists, PrefixNotHomed
from resolver.homes import HOMES_KEY
from resolver.identifiers import Handle, fold, parent_prefixes, prefix_handle, validate_prefix
from resolver.ports import RecordStore
from resolver.values import (
    ADMIN_GROUP_INDEX,
    ADMIN_INDEX,
    HS_ADMIN,
    HS_SECKEY,
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


@dataclass(frozen=True, slots=True)
class PrefixAdmin:
    prefix: str
    identity: Ref


async def init_prefix(
    store: RecordStore, invalidator: Invalidator, prefix: str, secret: str
) -> PrefixAdmin:
    """Home ``prefix`` and create ``0.NA/PREFIX`` and ``PREFIX/ADMIN``.

    Raises :class:`HandleAlreadyExists` if either handle exists already (nothing is changed
    then); homing an already homed prefix is not an error.
    """
    validate_prefix(prefix)
    now = int(time.time())
    na = Handle.parse(prefix_handle(prefix))
    admin = Handle.parse(f"{prefix}/{ADMIN_SUFFIX}")
    group = AdminRef(na.text, ADMIN_GROUP_INDEX, ALL_RIGHTS)
    identity = Ref(admin.text, SECRET_KEY_INDEX)
    na_record = Record(
        na.text,
        (
            HandleValue(ADMIN_INDEX, HS_ADMIN, Data("admin", group), timestamp=now),
            HandleValue(ADMIN_GROUP_INDEX, HS_VLIST, Data("vlist", (identity,)), timestamp=now),
        ),
    )
    admin_record = Record(
        admin.text,
        (
            HandleValue(ADMIN_INDEX, HS_ADMIN, Data("admin", group), timestamp=now),
            HandleValue(
                SECRET_KEY_INDEX,
                HS_SECKEY,
                Data("string", hash_secret(secret)),
                timestamp=now,
                permissions=SECRET_PERMISSIONS,
            ),
        ),
    )
    existing = await store.get_many([na.key, admin.key])
    if existing:
        taken = ", ".join(r.handle for r in existing.values())
        raise HandleAlreadyExists(f"{taken} already exists", handle=na.text)
    done = await store.put_many([(na.key, na_record, None), (admin.key, admin_record, None)])
    if not all(done):
        raise HandleAlreadyExists("prefix was initialised concurrently", handle=na.text)
    await store.home_prefix(prefix)
    await invalidator.written([na.key, admin.key, HOMES_KEY])
    return PrefixAdmin(prefix, identity)


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
            HandleValue(
                SECRET_KEY_INDEX,
                HS_SECKEY,
                Data("string", hash_secret(secret)),
                timestamp=now,
                permissions=SECRET_PERMISSIONS,
            ),
        ),
    )
    if not await store.put(na.key, record, None):
        raise HandleAlreadyExists(f"{na.text} already exists", handle=na.text)
    await invalidator.written([na.key])
    return identity
