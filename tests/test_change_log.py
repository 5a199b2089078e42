"""The registry's change log on SQLite and PostgreSQL: what writes log, commit order under
concurrent writers, pruning, the follower that invalidates caches, and the HTTP feed's store
side (reading, falling behind, and a mirror applying it until identical)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from nodes.changefeed import ChangeFollower
from registry import migrate
from registry.changelog import APPLICATIONS_KEY, FeedEntry
from registry.invalidation import Invalidator
from registry.stores import SqlStore
from registry.stores.feed import FeedBehind, SqlFeed
from registry.tables import change_log
from resolver.homes import HOMES_KEY
from resolver.memory import LocalGenerations, MemorySharedCache
from resolver.values import Data, HandleValue, Record


def record(handle: str, url: str = "https://example.com/") -> Record:
    return Record(handle, (HandleValue(1, "URL", Data("string", url), timestamp=7),))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(
        request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param])
    )


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqlStore]:
    sql = SqlStore(url)
    try:
        yield sql
    finally:
        await sql.close()


async def logged(store: SqlStore, after: int = 0) -> list[str]:
    return [change.key for change in await store.changes_after(after)]


async def test_every_committed_write_logs_its_keys_and_failed_ones_nothing(
    store: SqlStore,
) -> None:
    assert await store.change_head() == 0
    assert await store.put("88.1/A", record("88.1/a"), None)
    assert not await store.put("88.1/A", record("88.1/a"), None)  # exists: nothing logged
    assert await store.put_many([("88.1/B", record("88.1/B"), None), ("88.1/A", record("x"), 1)])
    assert await store.put_many([("88.1/C", record("c"), None), ("88.1/C", record("c"), 1)])
    assert not await store.delete("88.1/B", 7)  # wrong version
    assert await store.delete("88.1/B", 1)
    assert await store.home_prefix("88.1")
    assert not await store.home_prefix("88.1")
    assert await store.unhome_prefix("88.1")
    keys = await logged(store)
    assert keys == [
        "88.1/A",
        "88.1/A",
        "88.1/B",
        "88.1/C",
        "88.1/C",
        "88.1/B",
        HOMES_KEY,
        HOMES_KEY,
    ]
    seqs = [change.seq for change in await store.changes_after(0)]
    assert seqs == sorted(seqs) and await store.change_head() == seqs[-1]
    assert await logged(store, seqs[-3]) == ["88.1/B", HOMES_KEY, HOMES_KEY][1:]


async def test_enterprise_applications_are_logged(url: str, store: SqlStore) -> None:
    from registry.enterprise import Application
    from registry.stores.applications import SqlApplications

    applications = SqlApplications(url)
    try:
        now = datetime.now(UTC)
        application = Application(
            "a1", "88.1.5", "Acme", "ops@acme", "hosted", None, None, "pending", now
        )
        assert await applications.add(application)
        assert await applications.decide("a1", "approved", now, "300:88.1/ADMIN", None)
        assert not await applications.decide("a1", "rejected", now, "300:88.1/ADMIN", None)
    finally:
        await applications.close()
    assert await logged(store) == [APPLICATIONS_KEY, APPLICATIONS_KEY]


async def test_seq_order_is_commit_order_under_concurrent_writers(store: SqlStore) -> None:
    """A reader following the log by ``seq > cursor`` while many writers commit never skips
    a change (on PostgreSQL a seq is drawn before its commit: without the append lock a
    reader could see N+1 committed before N and move past N for good)."""
    writers, each = 8, 25
    seen: list[int] = []
    done = asyncio.Event()

    async def write(w: int) -> None:
        for i in range(each):
            key = f"88.1/W{w}-{i}"
            assert await store.put_many([(key, record(key), None), (key + "B", record(key), None)])

    async def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            for change in await store.changes_after(cursor):
                seen.append(change.seq)
                cursor = change.seq
            if finished:
                return
            await asyncio.sleep(0)

    reader = asyncio.create_task(follow())
    await asyncio.gather(*(write(w) for w in range(writers)))
    done.set()
    await reader
    async with store.engine.connect() as conn:
        everything = list((await conn.execute(sa.select(change_log.c.seq))).scalars())
    assert len(everything) == writers * each * 2
    assert seen == sorted(everything)


async def _age(store: SqlStore, seqs: list[int], seconds: float) -> None:
    """Pretend the changes ``seqs`` were logged ``seconds`` ago."""
    at = datetime.now(UTC) - timedelta(seconds=seconds)
    async with store.engine.begin() as conn:
        await conn.execute(change_log.update().where(change_log.c.seq.in_(seqs)).values(at=at))


async def test_pruning_takes_old_changes_from_the_start_only(store: SqlStore) -> None:
    for i in range(6):
        assert await store.put(f"88.1/P{i}", record("p"), None)
    seqs = [change.seq for change in await store.changes_after(0)]
    head = await store.change_head()
    # The first three and the fifth are old; the fourth is not, so pruning stops before it.
    await _age(store, seqs[:3] + seqs[4:5], 7200)
    assert await store.prune_changes(3600, 2) == 2  # bounded
    assert await store.change_horizon() == seqs[1]
    assert await store.prune_changes(3600, 100) == 1
    assert await store.change_horizon() == seqs[2]
    assert await store.prune_changes(3600, 100) == 0
    assert [c.seq for c in await store.changes_after(0)] == seqs[3:]
    assert await store.change_head() == head
    # Everything pruned: the head stays where it was, and seqs are never reused.
    assert await store.prune_changes(0, 100) == 3
    assert await store.change_head() == head == await store.change_horizon()
    assert await store.put("88.1/NEW", record("n"), None)
    assert (await store.changes_after(0))[0].seq > head


async def test_the_follower_invalidates_changed_keys_and_everything_when_it_missed_some(
    store: SqlStore,
) -> None:
    generations, shared = LocalGenerations(), MemorySharedCache()
    await shared.set("88.1/F", b"old", 60)
    follower = ChangeFollower(store, Invalidator(generations, shared), prune_every=3600)
    assert await store.put("88.1/BEFORE", record("b"), None)
    before = generations.current("88.1/UNRELATED")
    await follower.poll_once()  # starts at the head, dropping whatever was cached before
    assert follower.resets == 1 and generations.current("88.1/UNRELATED") != before

    assert await store.put("88.1/F", record("f"), None)
    unrelated, changed = generations.current("88.1/UNRELATED"), generations.current("88.1/F")
    await follower.poll_once()
    assert generations.current("88.1/F") != changed
    assert generations.current("88.1/UNRELATED") == unrelated
    assert await shared.get("88.1/F") is None
    assert follower.cursor == await store.change_head()

    # Changes pruned before the follower read them: it cannot know what they were.
    for i in range(3):
        assert await store.put(f"88.1/G{i}", record("g"), None)
    await store.prune_changes(0, 100)
    assert await store.put("88.1/H", record("h"), None)
    unrelated = generations.current("88.1/UNRELATED")
    await follower.poll_once()
    assert follower.resets == 2 and generations.current("88.1/UNRELATED") != unrelated
    assert follower.cursor == await store.change_head()


async def test_feed_serves_current_state_and_refuses_a_cursor_it_no_longer_covers(
    store: SqlStore,
) -> None:
    feed = SqlFeed(store)
    assert await store.put("88.1/A", record("88.1/a", "https://one"), None)
    assert await store.put("88.1/A", record("88.1/a", "https://two"), 1)
    assert await store.put("88.1/B", record("88.1/b"), None)
    assert await store.delete("88.1/B", 1)
    assert await store.home_prefix("88.1")
    page = await feed.read(0, 100)
    assert [e.key for e in page.entries] == ["88.1/A", "88.1/A", "88.1/B", "88.1/B", HOMES_KEY]
    first = page.entries[0]
    assert first.version == 2 and first.data is not None and b"https://two" in first.data
    assert page.entries[2].data is None  # B is gone now
    assert page.entries[4].homes == ("88.1",)
    assert FeedEntry.from_json(first.to_json()) == first
    assert FeedEntry.from_json(page.entries[4].to_json()) == page.entries[4]
    assert (await feed.read(page.head, 100)).entries == []

    with pytest.raises(FeedBehind):
        await feed.read(page.head + 1, 100)  # past the head: not the log the consumer read
    await store.prune_changes(0, 2)
    with pytest.raises(FeedBehind):
        await feed.read(1, 100)
    assert len((await feed.read(await store.change_horizon(), 100)).entries) == 3


@pytest.fixture
def mirror_url(tmp_path: Path) -> str:
    """A database of the mirror's own (SQLite: the mirror's operator chooses)."""
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    migrate.upgrade(url)
    return url


async def test_a_mirror_applying_the_feed_and_snapshots_ends_identical(
    store: SqlStore, mirror_url: str
) -> None:
    source, mirror_store = SqlFeed(store), SqlStore(mirror_url)
    mirror = SqlFeed(mirror_store)
    try:
        assert await mirror_store.put("88.1/STRAY", record("stray"), None)  # not at the source
        assert await store.home_prefix("88.1")
        for i in range(5):
            assert await store.put(f"88.1/S{i}", record(f"88.1/s{i}", f"https://{i}"), None)
        # A snapshot in pages of two, then the log after the first page's head.
        after, head = "", None
        while True:
            page = await source.snapshot(after, 2)
            head = page.head if head is None else head
            await mirror.apply_page(page, after)
            if page.next is None:
                break
            after = page.next
        await mirror.set_cursor("src", head)
        assert await store.put("88.1/S1", record("88.1/s1", "https://changed"), 1)
        assert await store.delete("88.1/S2", 1)
        assert await store.home_prefix("88.2")
        cursor = await mirror.cursor("src")
        assert cursor == head
        page2 = await source.read(cursor, 100)
        changed = await mirror.apply("src", page2.entries, page2.entries[-1].seq)
        assert set(changed) == {"88.1/S1", "88.1/S2", HOMES_KEY}
        assert await mirror.apply("src", page2.entries, page2.entries[-1].seq) == []  # retried
        assert await mirror.cursor("src") == page2.head

        async def state(feed: SqlFeed) -> object:
            snap = await feed.snapshot("", 100)
            return snap.homes, [(e.key, e.handle, e.data, e.version) for e in snap.records]

        assert await state(mirror) == await state(source)
        # The mirror's own hosts learn of what it applied from its own change log.
        assert "88.1/S1" in await logged(mirror_store)
    finally:
        await mirror_store.close()


async def test_the_follower_leaves_its_own_hosts_writes_alone(url: str) -> None:
    """The writing host invalidated before acknowledging; a second bump from its follower
    would only throw away what its workers cached since."""
    here, there = SqlStore(url, origin=7), SqlStore(url, origin=8)
    try:
        generations = LocalGenerations()
        follower = ChangeFollower(here, Invalidator(generations), prune_every=3600, origin=7)
        await follower.poll_once()
        assert await here.put("88.1/MINE", record("m"), None)
        assert await there.put("88.1/THEIRS", record("t"), None)
        mine, theirs = generations.current("88.1/MINE"), generations.current("88.1/THEIRS")
        await follower.poll_once()
        assert generations.current("88.1/MINE") == mine
        assert generations.current("88.1/THEIRS") != theirs
        assert [c.origin for c in await here.changes_after(0)] == [7, 8]
    finally:
        await here.close()
        await there.close()
