"""The RecordStore contract, run against every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest

from resolver.identifiers import fold
from resolver.ports import RecordStore
from resolver.templates import UniqueValueTaken
from resolver.values import AdminRef, Data, HandleValue, Record, Ref

ADMIN = HandleValue(100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88.100.1", 200, 0b011111111111)))


def record(handle: str, url: str = "https://example.com/p") -> Record:
    return Record(handle, (ADMIN, HandleValue(1, "URL", Data("string", url), timestamp=1768084906)))


def rich_record(handle: str) -> Record:
    """Every part of a value that the stored form must keep."""
    return Record(
        handle,
        (
            ADMIN,
            HandleValue(1, "URL", Data("string", "https://例え.jp/產品?q=1"), ttl=60, timestamp=7),
            HandleValue(
                200,
                "HS_VLIST",
                Data("vlist", (Ref("88.100.1/admin", 300), Ref("88.100.1/組", 200))),
            ),
            HandleValue(2, "EXPIRES", Data("string", "x"), ttl=1893456000, ttl_absolute=True),
            HandleValue(
                300, "HS_SECKEY", Data("base64", "c2VjcmV0"), permissions=0b1100, timestamp=9
            ),
            HandleValue(
                3,
                "DESC",
                Data("string", ""),
                permissions=0b1111,
                references=(Ref("88.100.1/other", 1), Ref("88.100.2/b", 2)),
            ),
            HandleValue(10, "HS_SITE", Data("site", {"version": 1, "servers": [{"id": 1}]})),
            HandleValue(2001, "重量", Data("string", "12.5 kg")),
        ),
    )


async def put(store: RecordStore, *handles: str) -> None:
    """Create a plain record for each of ``handles`` (display texts)."""
    results = await store.put_many([(fold(h), record(h), None) for h in handles])
    assert results == [True] * len(handles)


async def test_get_missing(store: RecordStore) -> None:
    assert await store.get("88.100.1/NOPE") is None


async def test_create_round_trips_values_exactly(store: RecordStore) -> None:
    handle = "88.100.1/產品-Äbc"
    original = rich_record(handle)
    assert await store.put(fold(handle), original, None)
    got = await store.get(fold(handle))
    assert got == Record(handle, original.values, 1)
    assert await store.get_many([fold(handle)]) == {fold(handle): got}


async def test_create_ignores_record_version(store: RecordStore) -> None:
    assert await store.put("88.100.1/A", Record("88.100.1/a", (), version=42), None)
    assert await store.get("88.100.1/A") == Record("88.100.1/a", (), 1)


async def test_create_fails_if_key_exists(store: RecordStore) -> None:
    assert await store.put("88.100.1/A", record("88.100.1/a"), None)
    assert not await store.put("88.100.1/A", record("88.100.1/A", "https://other"), None)
    assert await store.get("88.100.1/A") == Record("88.100.1/a", record("88.100.1/a").values, 1)


async def test_update_is_compare_and_set(store: RecordStore) -> None:
    assert await store.put("88.100.1/A", record("88.100.1/a"), None)
    changed = record("88.100.1/A", "https://changed")
    assert await store.put("88.100.1/A", changed, 1)
    assert await store.get("88.100.1/A") == Record("88.100.1/A", changed.values, 2)
    assert not await store.put("88.100.1/A", record("88.100.1/a", "https://lost"), 1)
    assert not await store.put("88.100.1/A", record("88.100.1/a", "https://lost"), 3)
    assert await store.put("88.100.1/A", record("88.100.1/a", "https://third"), 2)
    third = await store.get("88.100.1/A")
    assert third is not None
    assert (third.version, third.values[1].data.value) == (3, "https://third")


async def test_update_of_missing_key_fails(store: RecordStore) -> None:
    assert not await store.put("88.100.1/A", record("88.100.1/a"), 1)
    assert await store.get("88.100.1/A") is None


async def test_put_many_mixed_results(store: RecordStore) -> None:
    await put(store, "88.100.1/old", "88.100.1/stale")
    results = await store.put_many(
        [
            ("88.100.1/NEW", record("88.100.1/new"), None),
            ("88.100.1/OLD", record("88.100.1/old", "https://again"), None),
            ("88.100.1/STALE", record("88.100.1/stale", "https://lost"), 5),
            ("88.100.1/MISSING", record("88.100.1/missing"), 1),
            ("88.100.1/OLD2", record("88.100.1/old2"), None),
        ]
    )
    assert results == [True, False, False, False, True]
    results = await store.put_many(
        [
            ("88.100.1/STALE", record("88.100.1/stale", "https://won"), 1),
            ("88.100.1/OLD", record("88.100.1/OLD", "https://updated"), 1),
        ]
    )
    assert results == [True, True]
    found = await store.get_many(
        ["88.100.1/NEW", "88.100.1/OLD", "88.100.1/STALE", "88.100.1/MISSING", "88.100.1/OLD2"]
    )
    assert {k: (r.handle, r.version, r.values[1].data.value) for k, r in found.items()} == {
        "88.100.1/NEW": ("88.100.1/new", 1, "https://example.com/p"),
        "88.100.1/OLD": ("88.100.1/OLD", 2, "https://updated"),
        "88.100.1/STALE": ("88.100.1/stale", 2, "https://won"),
        "88.100.1/OLD2": ("88.100.1/old2", 1, "https://example.com/p"),
    }


async def test_put_many_repeated_key_applies_items_in_order(store: RecordStore) -> None:
    results = await store.put_many(
        [
            ("88.100.1/A", record("88.100.1/a", "https://1"), 1),
            ("88.100.1/A", record("88.100.1/a", "https://2"), None),
            ("88.100.1/A", record("88.100.1/a", "https://3"), 1),
            ("88.100.1/A", record("88.100.1/a", "https://4"), 1),
            ("88.100.1/B", record("88.100.1/b"), None),
        ]
    )
    assert results == [False, True, True, False, True]
    got = await store.get("88.100.1/A")
    assert got is not None and (got.version, got.values[1].data.value) == (2, "https://3")


async def test_put_many_large_batch(store: RecordStore) -> None:
    handles = [f"88.100.1/item-{n:05}" for n in range(2000)]
    await put(store, *handles)
    updates = [(fold(h), record(h, f"https://u/{n}"), 1) for n, h in enumerate(handles)]
    updates[1234] = (updates[1234][0], updates[1234][1], 7)
    results = await store.put_many(updates)
    assert results == [n != 1234 for n in range(2000)]
    got = await store.get_many([fold(h) for h in handles])
    assert len(got) == 2000
    assert got[fold(handles[1999])].values[1].data.value == "https://u/1999"
    assert got[fold(handles[1999])].version == 2
    assert got[fold(handles[1234])].version == 1


async def test_put_many_empty(store: RecordStore) -> None:
    assert await store.put_many([]) == []


async def test_get_many(store: RecordStore) -> None:
    await put(store, "88.100.1/a", "88.100.1/b")
    got = await store.get_many(["88.100.1/A", "88.100.1/MISSING", "88.100.1/B"])
    assert {k: r.handle for k, r in got.items()} == {
        "88.100.1/A": "88.100.1/a",
        "88.100.1/B": "88.100.1/b",
    }
    assert await store.get_many([]) == {}


async def test_delete_is_compare_and_set(store: RecordStore) -> None:
    await put(store, "88.100.1/a")
    assert not await store.delete("88.100.1/A", 2)
    assert not await store.delete("88.100.1/MISSING", 1)
    assert await store.delete("88.100.1/A", 1)
    assert await store.get("88.100.1/A") is None
    assert not await store.delete("88.100.1/A", 1)
    assert await store.put("88.100.1/A", record("88.100.1/a"), None)
    again = await store.get("88.100.1/A")
    assert again is not None and again.version == 1


async def test_list_handles_pages_in_key_order(store: RecordStore) -> None:
    under = [
        "88.100.1/c",
        "88.100.1/A",
        "88.100.1/b",
        "88.100.1/產品",
        "88.100.1/0",
        "88.100.1/a.b",
    ]
    near = ["88.100.10/A", "88.100/A", "88.100.1.5/A", "88.100.1-/A", "88.100.2/A", "88.100.1"]
    await put(store, *under, *near)
    in_key_order = sorted(under, key=fold)
    assert await store.list_handles("88.100.1", 0, 100) == (6, in_key_order)
    assert await store.list_handles("88.100.1", 0, 4) == (6, in_key_order[:4])
    assert await store.list_handles("88.100.1", 4, 4) == (6, in_key_order[4:])
    assert await store.list_handles("88.100.1", 6, 4) == (6, [])
    assert await store.list_handles("88.100.1", 0, 0) == (6, [])
    assert await store.list_handles("88.100.10", 0, 10) == (1, ["88.100.10/A"])
    assert await store.list_handles("88.100", 0, 10) == (1, ["88.100/A"])
    assert await store.list_handles("88.100.3", 0, 10) == (0, [])


async def test_records_under_a_prefix_by_key_up_to_a_limit(store: RecordStore) -> None:
    under = ["0.NA/88.100", "0.na/88.101", "0.NA/88.100.1", "0.NA/88"]
    await put(store, *under, "0.NA", "0.NA0/X", "0.N/A", "88.100/0.NA/X")

    records = await store.records_under("0.NA", 10)

    assert list(records) == sorted(fold(h) for h in under)
    assert {r.handle for r in records.values()} == set(under)
    assert all(r.version == 1 for r in records.values())
    in_order = sorted(fold(h) for h in under)
    assert list(await store.records_under("0.NA", 2)) == in_order[:2]
    assert list(await store.records_under("0.NA", 2, after=in_order[1])) == in_order[2:]
    assert list(await store.records_under("0.NA", 10, after=in_order[3])) == []
    assert await store.records_under("0.NA", 0) == {}
    assert await store.records_under("88.999", 10) == {}


async def test_list_handles_by_folded_prefix(store: RecordStore) -> None:
    await put(store, "88.100.Abc/x", "88.100.aBC/Y", "88.100.abcd/z")
    assert await store.list_handles(fold("88.100.abc"), 0, 10) == (
        2,
        ["88.100.Abc/x", "88.100.aBC/Y"],
    )


async def test_prefix_homing(store: RecordStore) -> None:
    assert await store.homed_prefixes() == []
    assert await store.home_prefix("88.100.Abc")
    assert await store.home_prefix("88.100")
    assert not await store.home_prefix("88.100.Abc")
    assert not await store.home_prefix("88.100.ABC")
    assert await store.homed_prefixes() == ["88.100", "88.100.Abc"]
    assert await store.unhome_prefix("88.100.abc")
    assert not await store.unhome_prefix("88.100.Abc")
    assert await store.homed_prefixes() == ["88.100"]


# --- unique template values (Record.claims) ----------------------------------------------------

SERIAL = ("88.100.1/TEMPLATE.CELL", 2001, "SN-1")


def claiming(handle: str, *claims: tuple[str, int, str]) -> Record:
    return record(handle).with_claims(claims)


async def test_a_unique_value_is_held_by_one_key(store: RecordStore) -> None:
    assert await store.put("88.100.1/A", claiming("88.100.1/a", SERIAL), None)
    with pytest.raises(UniqueValueTaken) as taken:
        await store.put("88.100.1/B", claiming("88.100.1/b", SERIAL), None)
    assert set(taken.value.taken) == {"88.100.1/B"}
    assert "2001" in taken.value.taken["88.100.1/B"]
    assert await store.get("88.100.1/B") is None
    # Its holder rewrites it freely; a write without claims (None) leaves them alone.
    assert await store.put("88.100.1/A", claiming("88.100.1/a", SERIAL), 1)
    assert await store.put("88.100.1/A", record("88.100.1/a"), 2)
    with pytest.raises(UniqueValueTaken):
        await store.put("88.100.1/B", claiming("88.100.1/b", SERIAL), None)
    # Claims () release them.
    assert await store.put("88.100.1/A", claiming("88.100.1/a"), 3)
    assert await store.put("88.100.1/B", claiming("88.100.1/b", SERIAL), None)


async def test_a_deleted_handle_releases_its_values(store: RecordStore) -> None:
    assert await store.put("88.100.1/A", claiming("88.100.1/a", SERIAL), None)
    assert await store.delete("88.100.1/A", 1)
    assert await store.put("88.100.1/B", claiming("88.100.1/b", SERIAL), None)


async def test_put_many_with_a_taken_value_writes_nothing(store: RecordStore) -> None:
    other = ("88.100.1/TEMPLATE.CELL", 2001, "SN-2")
    assert await store.put("88.100.1/A", claiming("88.100.1/a", SERIAL), None)
    with pytest.raises(UniqueValueTaken) as taken:
        await store.put_many(
            [
                ("88.100.1/C", claiming("88.100.1/c", other), None),
                ("88.100.1/D", claiming("88.100.1/d", SERIAL), None),
                ("88.100.1/E", claiming("88.100.1/e", other), None),  # twice in the batch
            ]
        )
    assert set(taken.value.taken) == {"88.100.1/D", "88.100.1/E"}
    assert await store.get_many(["88.100.1/C", "88.100.1/D", "88.100.1/E"]) == {}
    # The same value under another item or template is another value.
    assert await store.put_many(
        [
            ("88.100.1/C", claiming("88.100.1/c", ("88.100.1/TEMPLATE.CELL", 2002, "SN-1")), None),
            ("88.100.1/D", claiming("88.100.1/d", ("88.100.1/TEMPLATE.PACK", 2001, "SN-1")), None),
        ]
    ) == [True, True]
