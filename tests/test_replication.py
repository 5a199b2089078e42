"""The replication journal's contract (registry.replication.Journal), run against every backend
(memory, SQLite, PostgreSQL): journaled writes, reading the log, applying a peer's entries,
cursors, idempotency, resuming after a restart, and convergence of conflicting writes."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import pytest

from registry.invalidation import Invalidator
from registry.prefixes import init_prefix
from registry.replication import (
    Applied,
    Entry,
    Journal,
    MemoryJournalStore,
    authority_check,
    check_authoritative,
    now_us,
)
from registry.service import Registrar
from registry.stores import SqlStore
from resolver.codecs.stored import decode_values, encode_values
from resolver.errors import PrefixNotHomed
from resolver.homes import Homes
from resolver.identifiers import Handle, fold
from resolver.memory import LocalGenerations, MemoryStore
from resolver.ports import RecordStore
from resolver.values import AdminRef, Data, HandleValue, Record

ME, PEER, OTHER = "beijing", "shanghai", "wuhan"
ADMIN = HandleValue(100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88", 200, 0b011111111111)))


class JournalStore(RecordStore, Journal, Protocol):
    """A record store that journals: what a top-level node's store is."""


Factory = Callable[..., JournalStore]


def record(handle: str, url: str = "https://example.com/p") -> Record:
    return Record(handle, (ADMIN, HandleValue(1, "URL", Data("string", url), timestamp=7)))


def entry(seq: int, handle: str, url: str | None, stamp: int, version: int = 1) -> Entry:
    """A peer's log entry writing ``handle`` (deleting it when ``url`` is None)."""
    data = None if url is None else encode_values(record(handle, url).values)
    return Entry(seq, fold(handle), handle, data, version, stamp)


@pytest.fixture
async def stores(store_url: str | None) -> AsyncIterator[Factory]:
    """``stores(journal_as=...)`` opens a store on this test's database (the same database for
    every call, as a restarted node would), closing them all afterwards."""
    opened: list[JournalStore] = []
    memory: dict[str | None, MemoryJournalStore] = {}

    def make(journal_as: str | None = ME) -> JournalStore:
        if store_url is None:
            # The memory twin has no database to reopen: a "restart" is the same object.
            return memory.setdefault(journal_as, MemoryJournalStore(journal_as))
        store = SqlStore(store_url, journal_as=journal_as)
        opened.append(store)
        return store

    yield make
    for store in opened:
        assert isinstance(store, SqlStore)
        await store.close()


async def test_writes_are_journaled_in_commit_order(stores: Factory) -> None:
    store = stores()
    a, b, c = fold("0.NA/88.100"), fold("0.NA/88.101"), fold("0.NA/88.102")
    assert await store.put(a, record("0.NA/88.100"), None)
    assert await store.put(a, record("0.NA/88.100", "https://v2"), 1)
    assert await store.put_many(
        [(b, record("0.NA/88.101"), None), (c, record("0.NA/88.102"), None)]
    ) == [True, True]
    assert await store.delete(b, 1)
    log = await store.txlog_after(0, 100)
    assert [(e.key, e.version, e.deleted) for e in log] == [
        (a, 1, False),
        (a, 2, False),
        (b, 1, False),
        (c, 1, False),
        (b, 2, True),
    ]
    assert all(x.seq < y.seq for x, y in itertools.pairwise(log))
    assert all(x.stamp < y.stamp for x, y in itertools.pairwise(e for e in log if e.key == a))
    assert log[1].data is not None
    assert decode_values(log[1].data) == record("0.NA/88.100", "https://v2").values
    assert log[4].handle == "0.NA/88.101"
    assert await store.txlog_head() == log[-1].seq
    assert await store.origin_of(a) == ME
    assert await store.origin_of(b) is None  # deleted


async def test_failed_writes_are_not_journaled(stores: Factory) -> None:
    store = stores()
    key = fold("0.NA/88.100")
    assert await store.put(key, record("0.NA/88.100"), None)
    assert not await store.put(key, record("0.NA/88.100"), None)
    assert not await store.put(key, record("0.NA/88.100"), 7)
    assert not await store.delete(key, 7)
    assert not await store.delete(fold("0.NA/88.999"), 1)
    assert [e.version for e in await store.txlog_after(0, 100)] == [1]


async def test_a_store_without_journal_keeps_no_log(stores: Factory) -> None:
    store = stores(journal_as=None)
    assert await store.put("K/1", record("k/1"), None)
    assert await store.delete("K/1", 1)
    assert await store.txlog_after(0, 10) == []
    assert await store.txlog_head() == 0


async def test_log_reads_in_pages(stores: Factory) -> None:
    store = stores()
    keys = [fold(f"0.NA/88.{n}") for n in range(1, 8)]
    for key in keys:
        assert await store.put(key, record(key), None)
    first = await store.txlog_after(0, 3)
    rest = await store.txlog_after(first[-1].seq, 100)
    assert [e.key for e in first + rest] == keys
    assert await store.txlog_after(rest[-1].seq, 100) == []


async def test_concurrent_writes_get_distinct_ordered_seqs(stores: Factory) -> None:
    store = stores()
    keys = [fold(f"0.NA/88.{n}") for n in range(40)]
    results = await asyncio.gather(*(store.put(k, record(k), None) for k in keys))
    assert all(results)
    log = await store.txlog_after(0, 1000)
    assert sorted(e.key for e in log) == sorted(keys)
    assert len({e.seq for e in log}) == len(keys)


async def test_a_reader_following_the_log_never_skips_an_entry(stores: Factory) -> None:
    """Seqs become visible in seq order even with writers in parallel (on PostgreSQL a sequence
    hands out numbers at insert, not at commit; journaled writes are serialized for this)."""
    writers = [stores(), stores()]
    done = asyncio.Event()

    async def write(store: JournalStore, name: str) -> None:
        for n in range(60):
            key = fold(f"0.NA/88.{name}{n}")
            assert await store.put(key, record(key), None)

    async def follow() -> list[int]:
        seen, cursor = [], 0
        while True:
            finished = done.is_set()
            entries = await writers[0].txlog_after(cursor, 1000)
            seen += [e.seq for e in entries]
            cursor = entries[-1].seq if entries else cursor
            if finished and not entries:
                return seen
            await asyncio.sleep(0)

    reader = asyncio.create_task(follow())
    await asyncio.gather(
        *(write(store, f"{i}x") for i, store in enumerate(writers)), write(writers[0], "y")
    )
    done.set()
    seen = await reader
    assert seen == [e.seq for e in await writers[0].txlog_after(0, 1000)]
    assert len(seen) == 180


async def test_apply_replica_installs_the_peers_records(stores: Factory) -> None:
    store = stores()
    stamp = now_us()
    entries = [
        entry(3, "0.NA/88.200", "https://a", stamp),
        entry(5, "0.NA/88.201", "https://b", stamp + 1),
        entry(9, "0.NA/88.200", "https://a2", stamp + 2, version=2),
    ]
    applied = await store.apply_replica(PEER, entries)
    assert applied == Applied(9, (fold("0.NA/88.200"), fold("0.NA/88.201")), 3, ())
    got = await store.get(fold("0.NA/88.200"))
    assert got == Record("0.NA/88.200", record("x", "https://a2").values, 2)
    assert await store.cursor(PEER) == 9
    assert await store.cursor(OTHER) == 0
    assert await store.origin_of(fold("0.NA/88.201")) == PEER
    # Applied entries are the peer's writes, not ours: they are not journaled here.
    assert await store.txlog_after(0, 100) == []


async def test_applying_the_same_entries_again_changes_nothing(stores: Factory) -> None:
    store = stores()
    stamp = now_us()
    entries = [
        entry(1, "0.NA/88.200", "https://a", stamp),
        entry(2, "0.NA/88.200", None, stamp + 1),
    ]
    first = await store.apply_replica(PEER, entries[:1])
    assert first.applied == 1
    again = await store.apply_replica(PEER, entries[:1])
    assert again == Applied(1, (), 0, ())
    both = await store.apply_replica(PEER, entries)
    assert both.applied == 1 and both.last == 2
    assert await store.get(fold("0.NA/88.200")) is None
    assert await store.apply_replica(PEER, entries) == Applied(2, (), 0, ())
    # Even past the cursor (reset after a peer's restore), older entries do not take effect.
    await store.reset_cursor(PEER, 0)
    assert await store.cursor(PEER) == 0
    replay = await store.apply_replica(PEER, entries)
    assert replay.applied == 0 and replay.last == 2
    assert await store.get(fold("0.NA/88.200")) is None


async def test_concurrent_applies_of_one_batch_apply_it_once(stores: Factory) -> None:
    """Two workers pulling one peer at once (a lost leader lock): serialized, cursor-checked."""
    store, twin = stores(), stores()
    stamp = now_us()
    entries = [entry(n, f"0.NA/88.{n}", "https://a", stamp + n) for n in range(1, 30)]
    results = await asyncio.gather(
        store.apply_replica(PEER, entries), twin.apply_replica(PEER, entries)
    )
    assert sorted(r.applied for r in results) == [0, 29]
    assert await store.cursor(PEER) == 29


async def test_resumes_after_a_restart(stores: Factory) -> None:
    stamp = now_us()
    entries = [entry(n * 2, f"0.NA/88.{n}", f"https://{n}", stamp + n) for n in range(1, 11)]
    before = stores()
    await before.apply_replica(PEER, entries[:4])
    if isinstance(before, SqlStore):
        await before.close()
    after = stores()  # a new process on the same database
    cursor = await after.cursor(PEER)
    assert cursor == 8
    rest = [e for e in entries if e.seq > cursor]
    applied = await after.apply_replica(PEER, rest)
    assert applied.applied == 6 and applied.last == 20
    for n in range(1, 11):
        got = await after.get(fold(f"0.NA/88.{n}"))
        assert got is not None and got.values[1].data.value == f"https://{n}"


async def test_a_peers_record_cannot_be_written_here(stores: Factory) -> None:
    store = stores()
    key = fold("0.NA/88.300")
    await store.apply_replica(PEER, [entry(1, "0.NA/88.300", "https://theirs", now_us())])
    assert not await store.put(key, record("0.NA/88.300", "https://mine"), 1)
    assert await store.put_many([(key, record("0.NA/88.300"), 1)]) == [False]
    assert not await store.delete(key, 1)
    assert await store.txlog_after(0, 10) == []
    with pytest.raises(PrefixNotHomed, match=f"{PEER} at http://sh.example"):
        await check_authoritative(store, Handle.parse("0.NA/88.300"), {PEER: "http://sh.example"})
    await check_authoritative(store, Handle.parse("0.NA/88.301"))  # nobody's yet
    # Once the peer deletes it, the key is free to allocate here.
    await store.apply_replica(PEER, [entry(2, "0.NA/88.300", None, now_us())])
    await check_authoritative(store, Handle.parse("0.NA/88.300"))
    assert await store.put(key, record("0.NA/88.300", "https://mine"), None)
    assert await store.origin_of(key) == ME


async def test_recreating_after_a_peers_delete_outranks_the_delete(stores: Factory) -> None:
    """A peer's clock may run ahead: a local write still stamps past what it replaces."""
    store = stores()
    future = now_us() + 3_600_000_000
    await store.apply_replica(PEER, [entry(1, "0.NA/88.300", None, future)])
    key = fold("0.NA/88.300")
    assert await store.put(key, record("0.NA/88.300"), None)
    (written,) = await store.txlog_after(0, 10)
    assert written.stamp > future


async def test_last_writer_wins_against_a_local_record(stores: Factory) -> None:
    store = stores()
    key = fold("0.NA/88.400")
    assert await store.put(key, record("0.NA/88.400", "https://mine"), None)
    (mine,) = await store.txlog_after(0, 10)
    older = await store.apply_replica(
        PEER, [entry(1, "0.NA/88.400", "https://old", mine.stamp - 1)]
    )
    assert older == Applied(1, (), 0, (key,))
    assert await store.origin_of(key) == ME
    newer = await store.apply_replica(
        PEER, [entry(2, "0.NA/88.400", "https://new", mine.stamp + 1)]
    )
    assert newer == Applied(2, (key,), 1, (key,))
    assert await store.origin_of(key) == PEER
    got = await store.get(key)
    assert got is not None and got.values[1].data.value == "https://new"


async def test_members_converge_whatever_order_logs_arrive_in(stores: Factory) -> None:
    """A third member receives two peers' conflicting histories of one key interleaved in any
    order (each peer's own log in order): it always ends with the greatest write."""
    t = now_us()
    key = fold("0.NA/88.500")
    shanghai = [
        entry(1, "0.NA/88.500", "https://sh", t + 10),
        entry(2, "0.NA/88.500", None, t + 30),
    ]
    wuhan = [
        entry(1, "0.NA/88.500", "https://wh", t + 20),
        entry(2, "0.NA/88.500", "https://wh2", t + 40),
    ]
    rng = random.Random(5)
    outcomes = set()
    for trial in range(6):
        store = stores(journal_as=f"node{trial}")
        queues = {PEER: list(shanghai), OTHER: list(wuhan)}
        while any(queues.values()):
            peer = rng.choice([p for p, q in queues.items() if q])
            await store.apply_replica(peer, [queues[peer].pop(0)])
        got = await store.get(key)
        outcomes.add((got.values[1].data.value if got else None, await store.origin_of(key)))
    assert outcomes == {("https://wh2", OTHER)}


async def test_backfill_journals_records_written_before(
    stores: Factory, store_url: str | None
) -> None:
    if store_url is None:
        plain = stores(journal_as=ME)
        assert isinstance(plain, MemoryJournalStore)
        # As a bulk import around the store would: no journal entry, no origin.
        assert await MemoryStore.put(plain, "0.NA/88.1", record("0.NA/88.1"), None)
    else:
        plain = stores(journal_as=None)
        assert await plain.put("0.NA/88.1", record("0.NA/88.1"), None)
    journaled = stores(journal_as=ME)
    assert await journaled.backfill_journal() == 1
    assert await journaled.backfill_journal() == 0
    (written,) = await journaled.txlog_after(0, 10)
    assert (written.key, written.handle, written.version) == ("0.NA/88.1", "0.NA/88.1", 1)
    assert await journaled.origin_of("0.NA/88.1") == ME


async def test_applying_ones_own_name_is_refused(stores: Factory) -> None:
    with pytest.raises(ValueError):
        await stores().apply_replica(ME, [entry(1, "0.NA/88.1", "https://x", 1)])


def test_entries_travel_as_json() -> None:
    one = entry(4, "0.NA/88.產品", "https://例え.jp", 123)
    assert Entry.from_json(one.to_json()) == one
    gone = entry(5, "0.NA/88.1", None, 124)
    assert gone.to_json()["data"] is None and Entry.from_json(gone.to_json()) == gone
    for bad in ({}, {**one.to_json(), "seq": "4"}, {**one.to_json(), "data": "!!"}, [1]):
        with pytest.raises(ValueError):
            Entry.from_json(bad)


async def test_registrar_refuses_writes_to_a_peers_record() -> None:
    store = MemoryJournalStore(ME)
    generations = LocalGenerations()
    invalidator = Invalidator(generations)
    admin = (await init_prefix(store, invalidator, "88", "secret")).identity
    registrar = Registrar(
        store,
        Homes(store, generations),
        invalidator,
        store.get,
        authority=authority_check(store, {PEER: "http://sh.example"}),
    )
    values = (HandleValue(1, "URL", Data("string", "https://x")),)
    await registrar.put(Handle.parse("0.NA/88.600"), values, admin)  # ours: fine
    await store.apply_replica(PEER, [entry(1, "0.NA/88.601", "https://theirs", now_us())])
    with pytest.raises(PrefixNotHomed, match=PEER):
        await registrar.put(Handle.parse("0.NA/88.601"), values, admin)
    with pytest.raises(PrefixNotHomed, match=PEER):
        await registrar.delete(Handle.parse("0.NA/88.601"), admin)
