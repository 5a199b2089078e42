"""Registration with Handle's rules: rights, overwrite and index semantics, idempotent batches."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import pytest

import registry.prefixes
from registry.authorization import ALL_RIGHTS, DEFAULT_ADMIN_RIGHTS, Right
from registry.invalidation import Invalidator
from registry.prefixes import init_prefix
from registry.secrets import hash_secret, is_hashed, verify_secret
from registry.service import MAX_BATCH, MAX_SECRETS_PER_BATCH, BatchItem, Registrar
from resolver.answers import Outcome, TtlPolicy
from resolver.cache import MemoryCache
from resolver.chain import MemoryLayer, StoreLookup, build
from resolver.errors import (
    AuthenticationNeeded,
    HandleAlreadyExists,
    HandleNotFound,
    InsufficientPermissions,
    InvalidHandle,
    InvalidValue,
    PrefixNotHomed,
    ProtocolError,
    ValueAlreadyExists,
    ValuesNotFound,
)
from resolver.homes import Homes
from resolver.identifiers import Handle
from resolver.memory import LocalGenerations, MemorySharedCache, MemoryStore
from resolver.values import AdminRef, Data, HandleValue, Record, Ref

SECRET = "s3cret:with:colons"
T1, T2 = 1_700_000_000, 1_700_000_500


@pytest.fixture(autouse=True)
def _fast_prefix_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """init_prefix hashes with scrypt; one hash per secret is enough for these tests."""
    monkeypatch.setattr(registry.prefixes, "hash_secret", _cached_hash)


@functools.cache
def _cached_hash(secret: str) -> str:
    return hash_secret(secret)


@dataclass
class World:
    store: MemoryStore
    generations: LocalGenerations
    shared: MemorySharedCache
    registrar: Registrar
    admin: Ref
    stranger: Ref

    async def record(self, handle: str) -> Record | None:
        return await self.store.get(handle.upper())


@pytest.fixture
async def world() -> World:
    store = MemoryStore()
    generations = LocalGenerations()
    shared = MemorySharedCache()
    invalidator = Invalidator(generations, shared)
    admin = (await init_prefix(store, invalidator, "88.100.1", SECRET)).identity
    stranger = (await init_prefix(store, invalidator, "88.100.2", "other")).identity
    registrar = Registrar(
        store, Homes(store, generations), invalidator, store.get, clock=lambda: float(T2)
    )
    return World(store, generations, shared, registrar, admin, stranger)


def h(text: str) -> Handle:
    return Handle.parse(text)


def url(index: int = 1, target: str = "https://example.com/a", **kw: object) -> HandleValue:
    return HandleValue(index, "URL", Data("string", target), timestamp=T1, **kw)  # type: ignore[arg-type]


def seckey(secret: str, index: int = 300) -> HandleValue:
    return HandleValue(index, "HS_SECKEY", Data("string", secret), timestamp=T1, permissions=0b1100)


def admin_value(handle: str, index: int, rights: int, at: int = 100) -> HandleValue:
    return HandleValue(at, "HS_ADMIN", Data("admin", AdminRef(handle, index, rights)), timestamp=T1)


async def grant_on_prefix(world: World, rights: int, name: str = "LIMITED") -> Ref:
    """An identity ``300:88.100.1/<name>`` named by an extra HS_ADMIN of ``0.NA/88.100.1``."""
    identity = Ref(f"88.100.1/{name}", 300)
    na = await world.record("0.NA/88.100.1")
    assert na is not None
    extra = admin_value(identity.handle, 300, rights, at=101 + len(na.values))
    assert await world.store.put(
        "0.NA/88.100.1", Record(na.handle, (*na.values, extra)), na.version
    )
    return identity


def by_index(record: Record | None) -> dict[int, HandleValue]:
    assert record is not None
    return record.by_index()


# --- prefix setup ----------------------------------------------------------------------------


async def test_init_prefix_homes_the_prefix_and_creates_its_admin(world: World) -> None:
    assert world.admin == Ref("88.100.1/ADMIN", 300)
    assert "88.100.1" in await world.registrar.homed_prefixes()
    key = by_index(await world.record("88.100.1/ADMIN"))[300]
    assert is_hashed(key.data.value) and verify_secret(SECRET, key.data.value)
    assert not key.public_read


async def test_init_prefix_again_homes_and_keeps_the_secret(world: World) -> None:
    before = await world.store.get("88.100.1/ADMIN")
    await world.store.unhome_prefix("88.100.1")
    again = await init_prefix(world.store, Invalidator(world.generations), "88.100.1", "other")
    assert not again.created
    assert "88.100.1" in await world.store.homed_prefixes()
    assert await world.store.get("88.100.1/ADMIN") == before


async def test_init_prefix_over_a_stray_admin_handle_is_refused(world: World) -> None:
    await world.store.delete("0.NA/88.100.1", (await world.store.get("0.NA/88.100.1")).version)
    with pytest.raises(HandleAlreadyExists):
        await init_prefix(world.store, Invalidator(world.generations), "88.100.1", "x")
    assert await world.store.get("0.NA/88.100.1") is None


# --- create ----------------------------------------------------------------------------------


async def test_prefix_admin_creates_a_handle(world: World) -> None:
    result = await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    assert (result.handle, result.created, result.changed) == ("88.100.1/abc", True, True)
    record = await world.record("88.100.1/abc")
    assert record is not None and record.handle == "88.100.1/abc"
    assert by_index(record)[1] == url()


async def test_create_adds_the_default_admin_when_none_is_given(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    admin = by_index(await world.record("88.100.1/abc"))[100]
    assert admin.type == "HS_ADMIN"
    assert admin.data == Data("admin", AdminRef("0.NA/88.100.1", 200, DEFAULT_ADMIN_RIGHTS))
    assert format(admin.data.value.permissions, "012b") == "011111111111"


async def test_default_admin_takes_the_next_free_index_from_100(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(100),), world.admin)
    values = by_index(await world.record("88.100.1/abc"))
    assert values[100].type == "URL"
    assert values[101].type == "HS_ADMIN"


async def test_create_with_an_admin_value_adds_no_default(world: World) -> None:
    mine = admin_value("88.100.1/ADMIN", 300, ALL_RIGHTS, at=150)
    await world.registrar.put(h("88.100.1/abc"), (url(), mine), world.admin)
    values = by_index(await world.record("88.100.1/abc"))
    assert sorted(values) == [1, 150]


async def test_create_needs_add_handle_on_the_prefix_record(world: World) -> None:
    limited = await grant_on_prefix(world, ALL_RIGHTS & ~Right.ADD_HANDLE)
    with pytest.raises(InsufficientPermissions) as caught:
        await world.registrar.put(h("88.100.1/abc"), (url(),), limited)
    assert caught.value.code == 401
    assert await world.record("88.100.1/abc") is None


async def test_add_handle_alone_is_enough_to_create(world: World) -> None:
    creator = await grant_on_prefix(world, Right.ADD_HANDLE)
    assert (await world.registrar.put(h("88.100.1/abc"), (url(),), creator)).created


async def test_derived_prefix_record_needs_add_derived_prefix(world: World) -> None:
    result = await world.registrar.put(h("0.NA/88.100.1.5"), (url(),), world.admin)
    assert result.created
    admin = by_index(await world.record("0.NA/88.100.1.5"))[100]
    assert admin.data.value.handle == "0.NA/88.100.1"
    limited = await grant_on_prefix(world, ALL_RIGHTS & ~Right.ADD_DERIVED_PREFIX)
    with pytest.raises(InsufficientPermissions):
        await world.registrar.put(h("0.NA/88.100.1.6"), (url(),), limited)


async def test_create_of_an_existing_handle_without_overwrite_is_101(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    with pytest.raises(HandleAlreadyExists) as caught:
        await world.registrar.put(h("88.100.1/ABC"), (url(2),), world.admin, overwrite=False)
    assert caught.value.code == 101
    assert sorted(by_index(await world.record("88.100.1/abc"))) == [1, 100]


async def test_handles_differing_only_in_ascii_case_are_one_handle(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    result = await world.registrar.put(h("88.100.1/ABC"), (url(target="x"),), world.admin)
    assert not result.created
    record = await world.record("88.100.1/abc")
    assert record is not None and record.handle == "88.100.1/abc"  # registered case kept


# --- authentication and rights ---------------------------------------------------------------


async def test_anonymous_writes_need_authentication(world: World) -> None:
    with pytest.raises(AuthenticationNeeded) as caught:
        await world.registrar.put(h("88.100.1/abc"), (url(),), None)
    assert caught.value.code == 402
    with pytest.raises(AuthenticationNeeded):
        await world.registrar.delete(h("88.100.1/ADMIN"), None)
    with pytest.raises(AuthenticationNeeded):
        await world.registrar.batch([], None)
    with pytest.raises(AuthenticationNeeded):
        await world.registrar.list_handles("88.100.1", None, 0, 10)


async def test_stranger_cannot_create_under_another_prefix(world: World) -> None:
    with pytest.raises(InsufficientPermissions) as caught:
        await world.registrar.put(h("88.100.1/abc"), (url(),), world.stranger)
    assert caught.value.code == 401
    assert await world.record("88.100.1/abc") is None


async def test_stranger_cannot_modify_and_nothing_is_written(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    before = await world.record("88.100.1/abc")
    generation = world.generations.current("88.100.1/ABC")
    with pytest.raises(InsufficientPermissions):
        await world.registrar.put(h("88.100.1/abc"), (url(target="evil"),), world.stranger)
    assert await world.record("88.100.1/abc") == before
    assert world.generations.current("88.100.1/ABC") == generation


async def test_stranger_cannot_delete(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    with pytest.raises(InsufficientPermissions):
        await world.registrar.delete(h("88.100.1/abc"), world.stranger)
    with pytest.raises(InsufficientPermissions):
        await world.registrar.delete(h("88.100.1/abc"), world.stranger, indexes=[1])
    assert sorted(by_index(await world.record("88.100.1/abc"))) == [1, 100]


async def test_modify_value_is_needed_to_change_a_value(world: World) -> None:
    editor = Ref("88.100.1/EDITOR", 300)
    admins = (
        admin_value("0.NA/88.100.1", 200, ALL_RIGHTS, at=100),
        admin_value(editor.handle, 300, ALL_RIGHTS & ~Right.MODIFY_VALUE, at=101),
    )
    await world.registrar.put(h("88.100.1/abc"), (url(), *admins), world.admin)
    with pytest.raises(InsufficientPermissions):
        await world.registrar.put(h("88.100.1/abc"), (url(target="new"),), editor, indexes=[1])
    result = await world.registrar.put(h("88.100.1/abc"), (url(2),), editor, indexes=[2])
    assert result.changed  # adding a value is a different right


async def test_rights_come_from_the_handle_not_from_the_prefix(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    prefix_admin = await grant_on_prefix(world, ALL_RIGHTS)  # not in the admin group 200
    with pytest.raises(InsufficientPermissions):
        await world.registrar.put(h("88.100.1/abc"), (url(2),), prefix_admin, indexes=[2])


async def test_read_only_value_cannot_be_modified_or_removed(world: World) -> None:
    fixed = url(target="fixed", permissions=0b1010)  # no admin_write
    await world.registrar.put(h("88.100.1/abc"), (fixed, url(2)), world.admin)
    with pytest.raises(InsufficientPermissions):
        await world.registrar.put(h("88.100.1/abc"), (url(target="x"),), world.admin, indexes=[1])
    with pytest.raises(InsufficientPermissions):
        await world.registrar.delete(h("88.100.1/abc"), world.admin, indexes=[1])
    assert by_index(await world.record("88.100.1/abc"))[1].data.value == "fixed"


async def test_values_beside_a_read_only_value_remain_writable(world: World) -> None:
    fixed = url(target="fixed", permissions=0b1010)
    await world.registrar.put(h("88.100.1/abc"), (fixed, url(2)), world.admin)
    result = await world.registrar.put(
        h("88.100.1/abc"), (url(2, target="changed"),), world.admin, indexes=[2]
    )
    assert result.changed


async def test_writes_to_a_prefix_not_homed_here_are_301(world: World) -> None:
    with pytest.raises(PrefixNotHomed) as caught:
        await world.registrar.put(h("88.100.9/abc"), (url(),), world.admin)
    assert caught.value.code == 301
    with pytest.raises(PrefixNotHomed):
        await world.registrar.delete(h("88.100.9/abc"), world.admin)


# --- partial updates -------------------------------------------------------------------------


async def test_indexes_replace_only_the_listed_values(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(1), url(2)), world.admin)
    await world.registrar.put(
        h("88.100.1/abc"), (url(2, target="new"), url(3)), world.admin, indexes=[2, 3]
    )
    values = by_index(await world.record("88.100.1/abc"))
    assert sorted(values) == [1, 2, 3, 100]
    assert values[1].data.value == "https://example.com/a"
    assert values[2].data.value == "new"


async def test_indexes_that_do_not_match_the_body_are_a_protocol_error(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(1),), world.admin)
    with pytest.raises(ProtocolError) as caught:
        await world.registrar.put(h("88.100.1/abc"), (url(2),), world.admin, indexes=[3])
    assert caught.value.code == 4
    with pytest.raises(ProtocolError):
        await world.registrar.put(h("88.100.1/abc"), (url(2), url(3)), world.admin, indexes=[2])


async def test_no_overwrite_with_indexes_refuses_an_existing_value(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(1),), world.admin)
    with pytest.raises(ValueAlreadyExists) as caught:
        await world.registrar.put(
            h("88.100.1/abc"), (url(1, target="x"),), world.admin, overwrite=False, indexes=[1]
        )
    assert caught.value.code == 201
    added = await world.registrar.put(
        h("88.100.1/abc"), (url(2),), world.admin, overwrite=False, indexes=[2]
    )
    assert added.changed


async def test_whole_record_put_replaces_every_value(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(1), url(2)), world.admin)
    admin = by_index(await world.record("88.100.1/abc"))[100]
    await world.registrar.put(h("88.100.1/abc"), (url(3), admin), world.admin)
    assert sorted(by_index(await world.record("88.100.1/abc"))) == [3, 100]


# --- what counts as a change -----------------------------------------------------------------


async def test_unchanged_values_keep_their_timestamps(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(1), url(2)), world.admin)
    later = (
        HandleValue(1, "URL", Data("string", "https://example.com/a"), timestamp=T2),
        HandleValue(2, "URL", Data("string", "changed"), timestamp=T2),
    )
    await world.registrar.put(h("88.100.1/abc"), later, world.admin)
    values = by_index(await world.record("88.100.1/abc"))
    assert values[1].timestamp == T1
    assert values[2].timestamp == T2


async def test_re_sending_the_same_values_is_not_a_change(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    before = await world.record("88.100.1/abc")
    generation = world.generations.current("88.100.1/ABC")
    result = await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    assert (result.created, result.changed) == (False, False)
    assert await world.record("88.100.1/abc") == before  # same version, default admin kept
    assert world.generations.current("88.100.1/ABC") == generation


async def test_re_sending_a_record_without_admin_keeps_the_default_admin(world: World) -> None:
    for _ in range(3):
        await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    admin = by_index(await world.record("88.100.1/abc"))[100]
    assert admin.data.value == AdminRef("0.NA/88.100.1", 200, DEFAULT_ADMIN_RIGHTS)
    result = await world.registrar.put(h("88.100.1/abc"), (url(target="new"),), world.admin)
    assert result.changed


PW = "user-pass-phrase"
NEW_PW = "another-pass-phrase"


async def test_secret_key_is_stored_hashed(world: World) -> None:
    await world.registrar.put(h("88.100.1/user"), (seckey(PW),), world.admin)
    stored = by_index(await world.record("88.100.1/user"))[300].data.value
    assert stored != PW
    assert is_hashed(stored) and verify_secret(PW, stored)


async def test_re_sending_the_same_secret_is_not_a_change(world: World) -> None:
    await world.registrar.put(h("88.100.1/user"), (seckey(PW),), world.admin)
    before = await world.record("88.100.1/user")
    result = await world.registrar.put(h("88.100.1/user"), (seckey(PW),), world.admin)
    assert not result.changed
    assert await world.record("88.100.1/user") == before


async def test_sending_another_secret_replaces_the_hash(world: World) -> None:
    await world.registrar.put(h("88.100.1/user"), (seckey(PW),), world.admin)
    result = await world.registrar.put(h("88.100.1/user"), (seckey(NEW_PW),), world.admin)
    assert result.changed
    stored = by_index(await world.record("88.100.1/user"))[300].data.value
    assert verify_secret(NEW_PW, stored) and not verify_secret(PW, stored)


async def test_a_weak_secret_is_refused(world: World) -> None:
    for weak in ("pw", "aaaaaaaaaaaaaaaa", "abcabcabcabc"):
        with pytest.raises(InvalidValue, match="at least 12 characters"):
            await world.registrar.put(h("88.100.1/user"), (seckey(weak),), world.admin)
    assert await world.record("88.100.1/user") is None


# --- delete ----------------------------------------------------------------------------------


async def test_delete_removes_the_handle(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    await world.registrar.delete(h("88.100.1/ABC"), world.admin)
    assert await world.record("88.100.1/abc") is None


async def test_delete_by_index_removes_only_those_values(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(1), url(2)), world.admin)
    await world.registrar.delete(h("88.100.1/abc"), world.admin, indexes=[2])
    assert sorted(by_index(await world.record("88.100.1/abc"))) == [1, 100]


async def test_delete_of_a_missing_index_is_200(world: World) -> None:
    await world.registrar.put(h("88.100.1/abc"), (url(1),), world.admin)
    with pytest.raises(ValuesNotFound) as caught:
        await world.registrar.delete(h("88.100.1/abc"), world.admin, indexes=[1, 7])
    assert caught.value.code == 200
    assert sorted(by_index(await world.record("88.100.1/abc"))) == [1, 100]


async def test_delete_of_a_missing_handle_is_100(world: World) -> None:
    with pytest.raises(HandleNotFound) as caught:
        await world.registrar.delete(h("88.100.1/nope"), world.admin)
    assert caught.value.code == 100


# --- freshness -------------------------------------------------------------------------------


async def test_writes_bump_the_generation_of_the_key(world: World) -> None:
    key = "88.100.1/ABC"
    start = world.generations.current(key)
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    created = world.generations.current(key)
    await world.registrar.put(h("88.100.1/abc"), (url(target="x"),), world.admin)
    updated = world.generations.current(key)
    await world.registrar.delete(h("88.100.1/abc"), world.admin)
    assert start < created < updated < world.generations.current(key)


async def test_writes_drop_the_shared_cache_entry(world: World) -> None:
    await world.shared.set("88.100.1/ABC", b"cached", 60)
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    assert await world.shared.get("88.100.1/ABC") is None


async def test_read_after_write_through_a_memory_cached_chain(world: World) -> None:
    homes = Homes(world.store, world.generations)
    resolve = build(
        [MemoryLayer(MemoryCache(world.generations), world.generations)],
        StoreLookup(world.store, homes, TtlPolicy()),
    )
    assert (await resolve("88.100.1/ABC", False)).outcome is Outcome.NOT_FOUND
    await world.registrar.put(h("88.100.1/abc"), (url(),), world.admin)
    assert (await resolve("88.100.1/ABC", False)).outcome is Outcome.FOUND
    await world.registrar.put(h("88.100.1/abc"), (url(target="v2"),), world.admin)
    found = await resolve("88.100.1/ABC", False)
    assert found.record is not None
    assert found.record.by_index()[1].data.value == "v2"


# --- mint ------------------------------------------------------------------------------------


async def test_mint_creates_a_lowercase_uuid_suffix(world: World) -> None:
    prefix = Handle.parse("88.100.1/", allow_empty_suffix=True)
    result = await world.registrar.mint(prefix, (url(),), world.admin)
    assert result.created
    suffix = result.handle.removeprefix("88.100.1/")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", suffix)
    assert await world.record(result.handle) is not None


async def test_mint_gives_a_new_suffix_each_time(world: World) -> None:
    prefix = Handle.parse("88.100.1/", allow_empty_suffix=True)
    a = await world.registrar.mint(prefix, (url(),), world.admin)
    b = await world.registrar.mint(prefix, (url(),), world.admin)
    assert a.handle != b.handle


# --- batch -----------------------------------------------------------------------------------


def item(text: str, *values: HandleValue) -> BatchItem:
    try:
        return BatchItem(Handle.parse(text), values or (url(),), text=text)
    except InvalidHandle as error:
        return BatchItem(None, (), error, text)


async def test_batch_creates_each_item(world: World) -> None:
    results = await world.registrar.batch([item("88.100.1/a"), item("88.100.1/b")], world.admin)
    assert [(r.handle, r.code, r.status) for r in results] == [
        ("88.100.1/a", 1, "created"),
        ("88.100.1/b", 1, "created"),
    ]
    assert await world.record("88.100.1/a") is not None


async def test_batch_items_fail_on_their_own(world: World) -> None:
    items = [
        item("88.100.1/good"),
        item("no-slash"),
        item("88.100.9/elsewhere"),
        item("88.100.2/not-mine"),
        item("88.100.1/also-good"),
    ]
    results = await world.registrar.batch(items, world.admin)
    assert [(r.handle, r.code) for r in results] == [
        ("88.100.1/good", 1),
        ("no-slash", 102),
        ("88.100.9/elsewhere", 301),
        ("88.100.2/not-mine", 401),
        ("88.100.1/also-good", 1),
    ]
    assert [r.status for r in results] == ["created", "error", "error", "error", "created"]
    assert await world.record("88.100.2/not-mine") is None


async def test_re_sending_a_batch_is_unchanged_and_bumps_no_version(world: World) -> None:
    items = [item("88.100.1/a"), item("88.100.1/b", url(), seckey(PW))]
    await world.registrar.batch(items, world.admin)
    before = [await world.record("88.100.1/a"), await world.record("88.100.1/b")]
    results = await world.registrar.batch(items, world.admin)
    assert [(r.code, r.status) for r in results] == [(1, "unchanged"), (1, "unchanged")]
    assert [await world.record("88.100.1/a"), await world.record("88.100.1/b")] == before


async def test_batch_re_send_without_overwrite_is_still_unchanged(world: World) -> None:
    items = [item("88.100.1/a")]
    await world.registrar.batch(items, world.admin, overwrite=False)
    results = await world.registrar.batch(items, world.admin, overwrite=False)
    assert (results[0].code, results[0].status) == (1, "unchanged")


async def test_batch_updates_an_item_with_new_values(world: World) -> None:
    await world.registrar.batch([item("88.100.1/a")], world.admin)
    results = await world.registrar.batch([item("88.100.1/a", url(target="v2"))], world.admin)
    assert results[0].status == "updated"
    assert by_index(await world.record("88.100.1/a"))[1].data.value == "v2"


async def test_batch_without_overwrite_refuses_different_values_per_item(world: World) -> None:
    await world.registrar.batch([item("88.100.1/a"), item("88.100.1/b")], world.admin)
    changed = [item("88.100.1/a", url(target="v2")), item("88.100.1/b", url(target="v2"))]
    results = await world.registrar.batch(changed, world.admin, overwrite=False)
    assert [r.code for r in results] == [101, 101]
    assert by_index(await world.record("88.100.1/a"))[1].data.value == "https://example.com/a"


async def test_batch_of_more_than_the_limit_is_a_protocol_error(world: World) -> None:
    items = [item(f"88.100.1/{n}") for n in range(MAX_BATCH + 1)]
    with pytest.raises(ProtocolError):
        await world.registrar.batch(items, world.admin)
    assert await world.record("88.100.1/0") is None


async def test_batch_at_the_limit_is_accepted(world: World) -> None:
    items = [item(f"88.100.1/{n}") for n in range(MAX_BATCH)]
    results = await world.registrar.batch(items, world.admin)
    assert {r.status for r in results} == {"created"}


async def test_handle_repeated_in_a_batch_is_refused_after_the_first(world: World) -> None:
    items = [item("88.100.1/a"), item("88.100.1/A", url(target="other"))]
    results = await world.registrar.batch(items, world.admin)
    assert [(r.code, r.status) for r in results] == [(1, "created"), (101, "error")]
    assert by_index(await world.record("88.100.1/a"))[1].data.value == "https://example.com/a"


async def test_batch_stranger_cannot_overwrite(world: World) -> None:
    await world.registrar.batch([item("88.100.1/a")], world.admin)
    results = await world.registrar.batch([item("88.100.1/a", url(target="x"))], world.stranger)
    assert results[0].code == 401


async def test_batch_writes_bump_generations(world: World) -> None:
    start = world.generations.current("88.100.1/A")
    await world.registrar.batch([item("88.100.1/a")], world.admin)
    assert world.generations.current("88.100.1/A") > start


# --- listing ---------------------------------------------------------------------------------


async def test_prefix_admin_lists_handles_in_pages(world: World) -> None:
    for name in ("c", "a", "b"):
        await world.registrar.put(h(f"88.100.1/{name}"), (url(),), world.admin)
    total, first = await world.registrar.list_handles("88.100.1", world.admin, 0, 2)
    _, second = await world.registrar.list_handles("88.100.1", world.admin, 1, 2)
    assert total == 4  # a, b, c and ADMIN
    assert first == ["88.100.1/a", "88.100.1/ADMIN"]
    assert second == ["88.100.1/b", "88.100.1/c"]


async def test_page_size_zero_gives_only_the_count(world: World) -> None:
    assert await world.registrar.list_handles("88.100.1", world.admin, 0, 0) == (1, [])


async def test_listing_needs_list_handles(world: World) -> None:
    with pytest.raises(InsufficientPermissions):
        await world.registrar.list_handles("88.100.1", world.stranger, 0, 10)
    lister = await grant_on_prefix(world, DEFAULT_ADMIN_RIGHTS)  # everything but listing
    with pytest.raises(InsufficientPermissions):
        await world.registrar.list_handles("88.100.1", lister, 0, 10)


@pytest.mark.parametrize(("page", "size"), [(-1, 10), (0, -1), (0, 10_001)])
async def test_bad_paging_is_a_protocol_error(world: World, page: int, size: int) -> None:
    with pytest.raises(ProtocolError):
        await world.registrar.list_handles("88.100.1", world.admin, page, size)


async def test_a_batch_hashes_a_bounded_number_of_secrets(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each secret costs a scrypt run: a batch full of them must not buy minutes of CPU.
    hashed: list[str] = []

    def counting_hash(secret: str) -> str:
        hashed.append(secret)
        return _cached_hash(secret)

    monkeypatch.setattr(registry.service, "hash_secret", counting_hash)
    per_item = 8
    items = [
        item(f"88.100.1/k{n}", *(seckey("strong-pass-phrase", 300 + i) for i in range(per_item)))
        for n in range(10)
    ]
    results = await world.registrar.batch(items, world.admin)
    admitted = MAX_SECRETS_PER_BATCH // per_item
    assert [(r.code, r.status) for r in results] == [(1, "created")] * admitted + [(3, "error")] * (
        10 - admitted
    )
    assert "send this item again" in results[-1].message
    assert len(hashed) == MAX_SECRETS_PER_BATCH
    assert await world.record(f"88.100.1/k{admitted}") is None
    # Sent again on their own, the refused items are written.
    again = await world.registrar.batch(items[admitted:], world.admin)
    assert {(r.code, r.status) for r in again} == {(1, "created")}
