"""Registration: creating, changing, deleting and listing handles, with Handle's rules.

Every write is authorised against HS_ADMIN rights, applied with compare-and-set on the record
version (retrying when a concurrent writer got there first), and invalidated in every cache of
the node before it is acknowledged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from registry.authorization import (
    DEFAULT_ADMIN_RIGHTS,
    Fetch,
    Right,
    rights,
)
from registry.invalidation import Invalidator
from registry.quotas import Quotas
from registry.secrets import is_stored, needs_resealing, seal_secret, verify_secret, weakness
from registry.templates import TemplateCheck
from registry.usage import Usage
from resolver.errors import (
    AuthenticationNeeded,
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InsufficientPermissions,
    InvalidValue,
    PrefixNotHomed,
    ProtocolError,
    QuotaExceeded,
    ServerBusy,
    ValueAlreadyExists,
    ValuesNotFound,
)
from resolver.homes import HOMES_KEY, Homes
from resolver.identifiers import Handle, fold, prefix_handle
from resolver.ports import RecordStore
from resolver.search import entries, kinds_of, may_hold_entries
from resolver.templates import Template, UniqueValueTaken
from resolver.values import (
    ADMIN_GROUP_INDEX,
    ADMIN_INDEX,
    ADMIN_WRITE,
    HS_ADMIN,
    HS_SECKEY,
    MAX_VALUES,
    AdminRef,
    Data,
    HandleValue,
    Record,
    Ref,
)

MAX_ATTEMPTS = 5
"""Tries of an optimistic write (read, then put at that version) before answering busy."""
MAX_PAGE_SIZE = 10_000
MAX_BATCH = 2000


@dataclass(frozen=True, slots=True)
class WriteResult:
    handle: str
    created: bool
    changed: bool


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One handle of a batch, already parsed (or the error that parsing it raised)."""

    handle: Handle | None
    values: tuple[HandleValue, ...]
    error: HandleError | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class ItemResult:
    handle: str
    code: int
    status: str
    message: str = ""


def _require(identity: Ref | None) -> Ref:
    if identity is None:
        raise AuthenticationNeeded("this operation needs authentication")
    return identity


def creation_authority(handle: Handle) -> tuple[str, Right]:
    """Whose HS_ADMIN decides creation, and which right it needs.

    ``P/S`` needs add-handle on ``0.NA/P``; a derived prefix record ``0.NA/P.X`` needs
    add-derived-prefix on ``0.NA/P``.
    """
    if handle.is_prefix_record:
        parent = handle.suffix.rpartition(".")[0]
        return prefix_handle(parent or handle.suffix), Right.ADD_DERIVED_PREFIX
    return prefix_handle(handle.prefix), Right.ADD_HANDLE


def default_admin(handle: Handle, values: Sequence[HandleValue], now: int) -> HandleValue:
    """The HS_ADMIN a new handle without one gets: the creation authority's admin group.

    It takes index 100, or the first index from 100 that ``values`` leave free.  Shared by the
    write path and the bulk importer, so that both create identical records.
    """
    used = {v.index for v in values}
    index = next(i for i in range(ADMIN_INDEX, ADMIN_INDEX + MAX_VALUES + 1) if i not in used)
    authority, _ = creation_authority(handle)
    admin = AdminRef(authority, ADMIN_GROUP_INDEX, DEFAULT_ADMIN_RIGHTS)
    return HandleValue(index, HS_ADMIN, Data("admin", admin), timestamp=now)


class Registrar:
    def __init__(
        self,
        store: RecordStore,
        homes: Homes,
        invalidator: Invalidator,
        fetch: Fetch,
        clock: Callable[[], float] = time.time,
        quotas: Quotas | None = None,
        usage: Usage | None = None,
    ) -> None:
        """``fetch`` reads records for authorization (through the node's caches).

        ``quotas``, if given, counts creations against the registration and prefix quotas
        (registry/quotas.py); ``usage``, if given, counts handles created and deleted for the
        national statistics (registry/usage.py).
        """
        self._store = store
        self._homes = homes
        self._invalidator = invalidator
        self._fetch = fetch
        self._clock = clock
        self._templates = TemplateCheck(fetch)
        self._quotas = quotas
        self._usage = usage

    # --- authorization -------------------------------------------------------------------

    async def _rights_over(self, identity: Ref, handle_text: str) -> int:
        return await rights(identity, await self._fetch(fold(handle_text)), self._fetch)

    async def _check_create(self, identity: Ref, handle: Handle) -> None:
        authority, needed = creation_authority(handle)
        if not await self._rights_over(identity, authority) & needed:
            raise InsufficientPermissions(
                f"{identity} may not create handles here ({needed.name} on {authority})",
                handle=handle.text,
            )

    async def _check_change(
        self, identity: Ref, record: Record, new: Sequence[HandleValue], handle: str
    ) -> None:
        granted = await rights(identity, record, self._fetch)
        old = record.by_index()
        fresh = {v.index: v for v in new}
        for index, value in fresh.items():
            before = old.get(index)
            if before is None:
                needed = Right.ADD_ADMIN if value.type == HS_ADMIN else Right.ADD_VALUE
            elif before.same_content(value):
                continue
            else:
                needed = Right.MODIFY_ADMIN if before.type == HS_ADMIN else Right.MODIFY_VALUE
                self._check_writable(before, handle)
            if not granted & needed:
                raise InsufficientPermissions(f"{identity} lacks {needed.name}", handle=handle)
        for index, before in old.items():
            if index not in fresh:
                needed = Right.REMOVE_ADMIN if before.type == HS_ADMIN else Right.REMOVE_VALUE
                self._check_writable(before, handle)
                if not granted & needed:
                    raise InsufficientPermissions(f"{identity} lacks {needed.name}", handle=handle)

    @staticmethod
    def _check_writable(value: HandleValue, handle: str) -> None:
        if not value.permissions & ADMIN_WRITE:
            raise InsufficientPermissions(f"value {value.index} is read-only", handle=handle)

    async def _check_lives_here(self, handle: Handle) -> None:
        if not await self._homes.serves(handle.key):
            raise PrefixNotHomed(f"prefix {handle.prefix} doesn't live here", handle=handle.text)

    # --- preparing values ----------------------------------------------------------------

    async def _settle(
        self, values: Sequence[HandleValue], old: Record | None, handle: Handle
    ) -> tuple[HandleValue, ...]:
        """The values as they will be stored.

        Secrets are sealed (a secret that matches the stored one keeps it, so re-sending the
        same record is not a change); unchanged values keep their timestamps; values without
        HS_ADMIN get one naming the prefix administrators, on creation and on a whole
        replacement alike, so that re-sending a record is not a change and never strips the
        administrators of their own handle.
        """
        previous = old.by_index() if old else {}
        settled = []
        for value in values:
            before = previous.get(value.index)
            if value.type == HS_SECKEY and value.data.format == "string":
                secret = value.data.value
                # A legacy scrypt hash takes tens of milliseconds: keep it off the event loop.
                if (
                    before is not None
                    and before.type == HS_SECKEY
                    and not needs_resealing(before.data.value)
                    and await asyncio.to_thread(verify_secret, secret, before.data.value)
                ):
                    value = replace(value, data=before.data)
                elif not is_stored(secret):
                    # A new secret set by a client; stored ones (copies, restores) pass as
                    # they are, their strength unknowable.
                    problem = weakness(secret)
                    if problem is not None:
                        raise InvalidValue(
                            f"HS_SECKEY {value.index}: {problem}", handle=handle.text
                        )
                    value = replace(value, data=Data("string", seal_secret(secret)))
            if before is not None and before.same_content(value):
                value = before
            settled.append(value)
        if not any(v.type == HS_ADMIN for v in settled):
            admin = default_admin(handle, settled, int(self._clock()))
            before = previous.get(admin.index)
            settled.append(before if before is not None and before.same_content(admin) else admin)
        if len(settled) > MAX_VALUES:
            raise InvalidValue(f"more than {MAX_VALUES} values", handle=handle.text)
        return tuple(sorted(settled, key=lambda v: v.index))

    async def _record(
        self,
        handle: Handle,
        values: tuple[HandleValue, ...],
        old: Record | None,
        templates: dict[str, Template] | None = None,
    ) -> Record:
        """The record to store, refused if its data template refuses it, holding the unique
        template values it takes (``templates``: see :meth:`TemplateCheck.checked`)."""
        claims, template = await self._templates.checked(handle, values, old, templates)
        record = Record(old.handle if old else handle.text, values).with_claims(claims)
        # None (leave the index alone) when this record has no entries and the one it
        # replaces can hold none: plain and untemplated records, and those of templates
        # without searchable items, cost the store nothing (no row, no DELETE).
        found = entries(values, kinds_of(template))
        if found or (old is not None and may_hold_entries(old.values, values, template)):
            return record.with_entries(found)
        return record

    # --- single-handle writes --------------------------------------------------------------

    async def put(
        self,
        handle: Handle,
        values: tuple[HandleValue, ...],
        identity: Ref | None,
        *,
        overwrite: bool = True,
        indexes: Sequence[int] | None = None,
    ) -> WriteResult:
        """PUT semantics of the Handle REST API.

        Without ``indexes`` the values replace the whole record (or create it).  With
        ``indexes`` only those values are added or replaced, and the indexes of the body must be
        exactly the listed ones.  ``overwrite=False`` refuses to touch an existing handle
        (101), or with ``indexes`` an existing value (201).
        """
        who = _require(identity)
        await self._check_lives_here(handle)
        if not values:
            raise InvalidValue("no values given", handle=handle.text)
        if indexes is not None and {v.index for v in values} != set(indexes):
            raise ProtocolError(
                "mismatched indexes: the index parameters must list the body's indexes",
                handle=handle.text,
            )
        for _ in range(MAX_ATTEMPTS):
            record = await self._store.get(handle.key)
            if record is None:
                await self._check_create(who, handle)
                new = await self._record(handle, await self._settle(values, None, handle), None)
                if await self._create(who, handle, new):
                    await self._invalidator.written([handle.key])
                    if self._usage is not None:
                        self._usage.registered(handle.key)
                    return WriteResult(handle.text, created=True, changed=True)
                continue
            if indexes is None:
                if not overwrite:
                    raise HandleAlreadyExists("handle already exists", handle=handle.text)
                merged: Sequence[HandleValue] = values
            else:
                current = record.by_index()
                if not overwrite and any(v.index in current for v in values):
                    raise ValueAlreadyExists("a value at that index exists", handle=handle.text)
                current.update({v.index: v for v in values})
                merged = list(current.values())
            settled = await self._settle(merged, record, handle)
            await self._check_change(who, record, settled, handle.text)
            if record.same_content(settled):
                return WriteResult(handle.text, created=False, changed=False)
            new = await self._record(handle, settled, record)
            if await self._store.put(handle.key, new, record.version):
                await self._invalidator.written([handle.key])
                return WriteResult(handle.text, created=False, changed=True)
        raise ServerBusy("too many concurrent writes to this handle", handle=handle.text)

    async def _create(self, who: Ref, handle: Handle, new: Record) -> bool:
        """Put ``new`` as a creation, counted against the quotas (given back if not written)."""
        if self._quotas is None:
            return await self._store.put(handle.key, new, None)
        await self._quotas.reserve(who, [handle])
        done = False
        try:
            done = await self._store.put(handle.key, new, None)
        finally:
            if not done:
                await self._quotas.release(who, [handle], deleted=False)
        return done

    async def mint(
        self, prefix: Handle, values: tuple[HandleValue, ...], identity: Ref | None
    ) -> WriteResult:
        """Create a handle under ``prefix/`` with a new random suffix (a lowercase UUID)."""
        handle = Handle.parse(f"{prefix.text}{uuid.uuid4()}")
        return await self.put(handle, values, identity, overwrite=False)

    async def delete(
        self, handle: Handle, identity: Ref | None, indexes: Sequence[int] | None = None
    ) -> None:
        """Delete the handle, or only the values at ``indexes`` (200 if any of them is absent)."""
        who = _require(identity)
        await self._check_lives_here(handle)
        for _ in range(MAX_ATTEMPTS):
            record = await self._store.get(handle.key)
            if record is None:
                raise HandleNotFound("handle not found", handle=handle.text)
            if indexes is None:
                if not await rights(who, record, self._fetch) & Right.DELETE_HANDLE:
                    raise InsufficientPermissions(f"{who} lacks DELETE_HANDLE", handle=handle.text)
                done = await self._store.delete(handle.key, record.version)
            else:
                missing = [i for i in indexes if i not in record.by_index()]
                if missing:
                    raise ValuesNotFound(f"no value at index {missing[0]}", handle=handle.text)
                kept = tuple(v for v in record.values if v.index not in set(indexes))
                await self._check_change(who, record, kept, handle.text)
                new = await self._record(handle, kept, record)
                done = await self._store.put(handle.key, new, record.version)
            if done:
                await self._invalidator.written([handle.key])
                if indexes is None and self._usage is not None:
                    self._usage.deleted(handle.key)
                if indexes is None and self._quotas is not None:
                    await self._quotas.release(who, [handle], deleted=True)
                return
        raise ServerBusy("too many concurrent writes to this handle", handle=handle.text)

    # --- volume ------------------------------------------------------------------------------

    async def batch(
        self,
        items: Sequence[BatchItem],
        identity: Ref | None,
        *,
        overwrite: bool = True,
        create: bool = True,
    ) -> list[ItemResult]:
        """Create or replace many handles, one result per item, idempotently.

        An item whose handle already holds the same values succeeds as ``unchanged``, so a
        client retrying a batch after a timeout gets success, not conflicts.  With
        ``overwrite=False`` an item whose handle holds *different* values fails with 101.
        Items are independent: one failing item does not stop the others.  ``create=False``
        only changes handles that exist (100 for the others).
        """
        who = _require(identity)
        if len(items) > MAX_BATCH:
            raise ProtocolError(f"a batch holds at most {MAX_BATCH} handles")
        results: dict[int, ItemResult] = {}
        pending: dict[int, BatchItem] = {}
        seen: set[str] = set()
        for n, item in enumerate(items):
            if item.error is not None or item.handle is None:
                error = item.error or InvalidValue("no handle")
                results[n] = ItemResult(item.text, error.code, "error", error.message)
            elif item.handle.key in seen:
                results[n] = ItemResult(item.text, 101, "error", "handle repeated in batch")
            else:
                seen.add(item.handle.key)
                pending[n] = item
        create_rights: dict[str, int] = {}
        for _ in range(MAX_ATTEMPTS):
            if not pending:
                break
            templates: dict[str, Template] = {}  # read once an attempt (its writes follow)
            keys = [item.handle.key for item in pending.values() if item.handle]
            existing = await self._store.get_many(keys)
            writes: list[tuple[int, str, Record, int | None]] = []
            for n, item in list(pending.items()):
                assert item.handle is not None
                try:
                    record = existing.get(item.handle.key)
                    if record is None and not create:
                        raise HandleNotFound("handle not found", handle=item.handle.text)
                    outcome = await self._plan_item(
                        who, item, record, overwrite, create_rights, templates
                    )
                except HandleError as error:
                    results[n] = ItemResult(item.text, error.code, "error", error.message)
                    del pending[n]
                    continue
                if isinstance(outcome, ItemResult):
                    results[n] = outcome
                    del pending[n]
                else:
                    writes.append((n, item.handle.key, *outcome))
            writes = await self._reserve_creations(who, writes, pending, results)
            try:
                done = await self._store.put_many([(k, r, e) for _, k, r, e in writes])
            except UniqueValueTaken as taken:
                # Nothing was written: the creations give their quota back, the items whose
                # unique value is taken fail, the others go again.
                if self._quotas is not None:
                    made = [pending[n].handle for n, _, _, e in writes if e is None]
                    await self._quotas.release(who, [h for h in made if h], deleted=False)
                for n, key, _, _ in writes:
                    if key in taken.taken:
                        results[n] = ItemResult(pending.pop(n).text, 202, "error", taken.taken[key])
                continue
            written, unmade = [], []
            for (n, key, _, expected), ok in zip(writes, done, strict=True):
                if ok:
                    status = "created" if expected is None else "updated"
                    if expected is None and self._usage is not None:
                        self._usage.registered(key)
                    results[n] = ItemResult(pending.pop(n).text, 1, status)
                    written.append(key)
                elif expected is None and (handle := pending[n].handle) is not None:
                    unmade.append(handle)
            if unmade and self._quotas is not None:
                await self._quotas.release(who, unmade, deleted=False)
            await self._invalidator.written(written)
        for n, item in pending.items():
            results[n] = ItemResult(item.text, 3, "error", "too many concurrent writes")
        return [results[n] for n in range(len(items))]

    async def _reserve_creations(
        self,
        who: Ref,
        writes: list[tuple[int, str, Record, int | None]],
        pending: dict[int, BatchItem],
        results: dict[int, ItemResult],
    ) -> list[tuple[int, str, Record, int | None]]:
        """The writes that may go ahead: the batch's creations count against the quotas all
        together, and fail together (604 or 605) if that would pass a limit."""
        creations = [w for w in writes if w[3] is None]
        if self._quotas is None or not creations:
            return writes
        try:
            handles = [h for n, *_ in creations if (h := pending[n].handle) is not None]
            await self._quotas.reserve(who, handles)
        except QuotaExceeded as error:
            for n, *_ in creations:
                results[n] = ItemResult(pending.pop(n).text, error.code, "error", error.message)
            return [w for w in writes if w[3] is not None]
        return writes

    async def _plan_item(
        self,
        who: Ref,
        item: BatchItem,
        record: Record | None,
        overwrite: bool,
        create_rights: dict[str, int],
        templates: dict[str, Template],
    ) -> ItemResult | tuple[Record, int | None]:
        handle = item.handle
        assert handle is not None
        await self._check_lives_here(handle)
        if not item.values:
            raise InvalidValue("no values given", handle=handle.text)
        if record is None:
            authority, needed = creation_authority(handle)
            if authority not in create_rights:
                create_rights[authority] = await self._rights_over(who, authority)
            if not create_rights[authority] & needed:
                raise InsufficientPermissions(f"{who} lacks {needed.name} on {authority}")
            settled = await self._settle(item.values, None, handle)
            return await self._record(handle, settled, None, templates), None
        settled = await self._settle(item.values, record, handle)
        if record.same_content(settled):
            return ItemResult(item.text, 1, "unchanged")
        if not overwrite:
            raise HandleAlreadyExists("handle exists with other values", handle=handle.text)
        await self._check_change(who, record, settled, handle.text)
        return await self._record(handle, settled, record, templates), record.version

    async def reseal(self, identity: Ref, secret: str) -> None:
        """Replace the legacy scrypt hash at ``identity`` by ``secret`` sealed, if that hash is
        still there and matches (its holder just logged in with it); no rights needed."""
        handle = Handle.parse(identity.handle)
        for _ in range(MAX_ATTEMPTS):
            record = await self._store.get(handle.key)
            value = record.by_index().get(identity.index) if record else None
            if record is None or value is None or value.type != HS_SECKEY:
                return
            stored = value.data.value
            if not (isinstance(stored, str) and needs_resealing(stored)):
                return
            if not await asyncio.to_thread(verify_secret, secret, stored):
                return
            sealed = replace(value, data=Data("string", seal_secret(secret)))
            values = tuple(sealed if v.index == identity.index else v for v in record.values)
            if await self._store.put(handle.key, Record(record.handle, values), record.version):
                await self._invalidator.written([handle.key])
                return

    # --- reading lists -------------------------------------------------------------------

    async def list_handles(
        self, prefix: str, identity: Ref | None, page: int, page_size: int
    ) -> tuple[int, list[str]]:
        """One page of the handles under ``prefix``; needs list-handles on ``0.NA/prefix``."""
        who = _require(identity)
        if page < 0 or not 0 <= page_size <= MAX_PAGE_SIZE:
            raise ProtocolError(f"page must be >= 0 and pageSize from 0 to {MAX_PAGE_SIZE}")
        if not await self._rights_over(who, prefix_handle(prefix)) & Right.LIST_HANDLES:
            raise InsufficientPermissions(f"{who} lacks LIST_HANDLES on {prefix_handle(prefix)}")
        return await self._store.list_handles(fold(prefix), page * page_size, page_size)

    async def homed_prefixes(self) -> list[str]:
        return await self._store.homed_prefixes()

    async def set_homed(self, prefix: str, identity: Ref | None, *, homed: bool) -> bool:
        """Home (or unhome) ``prefix`` here; True if that changed anything (both are
        idempotent).  The rule: ``0.NA/prefix`` is stored here and ``identity`` holds
        MODIFY_ADMIN on it, i.e. administers the prefix itself (as ``idis prefix init`` makes
        its administrator), not merely holds a prefix delegated from here."""
        who = _require(identity)
        na = Handle.parse(prefix_handle(prefix))
        if await self._fetch(na.key) is None:
            raise HandleNotFound(f"{na.text} is not stored here", handle=na.text)
        if not await self._rights_over(who, na.text) & Right.MODIFY_ADMIN:
            raise InsufficientPermissions(f"{who} lacks MODIFY_ADMIN on {na.text}", handle=na.text)
        store = self._store
        changed = await (store.home_prefix(prefix) if homed else store.unhome_prefix(prefix))
        if changed:
            await self._invalidator.written([HOMES_KEY])
        return changed
