"""The read pool behind SqlStore.get: bounded, fair, and surviving lost connections."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from registry.stores import SqlStore
from registry.stores.read_pool import ReadPool
from resolver.codecs.stored import encode_values
from resolver.identifiers import fold
from resolver.values import Data, HandleValue, Record

HANDLE = "88.100.1/A"


class FakeConnection:
    """Answers ``fetchrow`` with its own number once ``gate`` opens (at once by default)."""

    def __init__(self, number: int, gate: asyncio.Event) -> None:
        self.number = number
        self.gate = gate
        self.closed = False
        self.lose_next = False

    async def fetchrow(self, query: str, *args: Any) -> Any:
        await self.gate.wait()
        if self.lose_next:
            self.closed = True
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
        if query == "bad":
            raise asyncpg.UndefinedTableError("no such table")
        return (self.number, *args)

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True

    async def close(self, timeout: float | None = None) -> None:
        self.closed = True


class FakeServer:
    def __init__(self) -> None:
        self.opened: list[FakeConnection] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def connect(self, dsn: str) -> FakeConnection:
        await asyncio.sleep(0)
        conn = FakeConnection(len(self.opened), self.gate)
        self.opened.append(conn)
        return conn

    def live(self) -> int:
        return sum(not c.closed for c in self.opened)


async def test_opens_connections_on_demand_up_to_its_size() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 3, connect=server.connect)
    assert server.opened == []
    server.gate.clear()
    reads = [asyncio.create_task(pool.fetchrow("q", n)) for n in range(10)]
    await asyncio.sleep(0.01)
    assert len(server.opened) == 3
    server.gate.set()
    rows = await asyncio.gather(*reads)
    assert [args for _, args in rows] == list(range(10))
    assert len(server.opened) == 3


async def test_idle_connections_are_handed_out_in_turn() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 3, connect=server.connect)
    server.gate.clear()
    first = [asyncio.create_task(pool.fetchrow("q")) for _ in range(3)]
    await asyncio.sleep(0.01)
    server.gate.set()
    await asyncio.gather(*first)
    used = [(await pool.fetchrow("q"))[0] for _ in range(6)]
    assert used == [0, 1, 2, 0, 1, 2]


async def test_waiting_readers_are_served_in_the_order_they_came() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 1, connect=server.connect)
    await pool.open()
    server.gate.clear()
    order: list[int] = []

    async def read(n: int) -> None:
        await pool.fetchrow("q")
        order.append(n)

    tasks = []
    for n in range(8):
        tasks.append(asyncio.create_task(read(n)))
        await asyncio.sleep(0)
    server.gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_a_statement_error_reaches_the_caller_and_keeps_the_connection() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 1, connect=server.connect)
    with pytest.raises(asyncpg.UndefinedTableError):
        await pool.fetchrow("bad")
    assert (await pool.fetchrow("q"))[0] == 0
    assert len(server.opened) == 1


async def test_a_lost_connection_is_replaced_and_the_read_retried_once() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 2, connect=server.connect)
    await pool.open()
    server.opened[0].lose_next = True
    assert (await pool.fetchrow("q", "k"))[1] == "k"
    assert server.live() == 1 and len(server.opened) == 2


async def test_a_read_losing_two_connections_fails() -> None:
    server = FakeServer()
    down = True

    async def connect(dsn: str) -> FakeConnection:
        conn = await server.connect(dsn)
        conn.lose_next = down
        return conn

    pool = ReadPool("dsn", 1, connect=connect)
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await pool.fetchrow("q")
    assert len(server.opened) == 2 and server.live() == 0
    down = False
    assert (await pool.fetchrow("q"))[0] == 2


async def test_a_connection_found_closed_while_idle_is_replaced() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 1, connect=server.connect)
    await pool.open()
    server.opened[0].closed = True
    assert (await pool.fetchrow("q"))[0] == 1


async def test_a_waiter_gets_the_place_of_a_dropped_connection() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 1, connect=server.connect)
    await pool.open()
    server.gate.clear()
    first = asyncio.create_task(pool.fetchrow("q"))
    await asyncio.sleep(0)
    second = asyncio.create_task(pool.fetchrow("q"))
    await asyncio.sleep(0)
    first.cancel()  # cancelled mid-statement: its connection is closed
    with pytest.raises(asyncio.CancelledError):
        await first
    server.gate.set()
    assert (await second)[0] == 1
    assert server.live() == 1


async def test_a_failed_connect_frees_its_place() -> None:
    attempts = 0
    server = FakeServer()

    async def flaky(dsn: str) -> FakeConnection:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("connection refused")
        return await server.connect(dsn)

    pool = ReadPool("dsn", 1, connect=flaky)
    with pytest.raises(OSError):
        await pool.fetchrow("q")
    assert (await pool.fetchrow("q"))[0] == 0


async def test_a_cancelled_waiter_does_not_lose_what_it_was_handed() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 1, connect=server.connect)
    await pool.open()
    server.gate.clear()
    holder = asyncio.create_task(pool.fetchrow("q"))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(pool.fetchrow("q"))
    third = asyncio.create_task(pool.fetchrow("q"))
    await asyncio.sleep(0)
    server.gate.set()
    await asyncio.sleep(0)
    assert holder.done()  # and handed its connection to ``waiter``, whose task has not run yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (await third)[0] == 0
    assert len(server.opened) == 1


async def test_close_waits_for_reads_in_flight_and_fails_later_ones() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 2, connect=server.connect)
    server.gate.clear()
    reads = [asyncio.create_task(pool.fetchrow("q")) for _ in range(3)]
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(pool.close())
    await asyncio.sleep(0)
    assert not closing.done()
    server.gate.set()
    results = await asyncio.gather(*reads, return_exceptions=True)
    await closing
    assert [isinstance(r, asyncpg.InterfaceError) for r in results] == [False, False, True]
    assert server.live() == 0
    with pytest.raises(asyncpg.InterfaceError):
        await pool.fetchrow("q")


# --- against PostgreSQL --------------------------------------------------------------------


def record(url: str) -> Record:
    return Record(HANDLE, (HandleValue(1, "URL", Data("string", url)),))


async def _terminate_backends(url: str) -> int:
    """Terminate every other session on the database of ``url``; how many."""
    admin = await asyncpg.connect(url)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await admin.close()


async def test_a_read_after_its_connection_was_terminated_succeeds(pg_url: str) -> None:
    store = SqlStore(pg_url, read_pool_size=2)
    try:
        assert await store.put(fold(HANDLE), record("https://a"), None)
        assert (await store.get(fold(HANDLE))) is not None
        assert await _terminate_backends(pg_url) >= 1
        got = await store.get(fold(HANDLE))
        assert got is not None and got.values == record("https://a").values
        assert await _terminate_backends(pg_url) >= 1
        await asyncio.sleep(0.2)  # the pool may notice while idle, too
        assert await store.get(fold(HANDLE)) is not None
    finally:
        await store.close()


async def test_concurrent_reads_hold_at_most_the_pool_size(pg_url: str) -> None:
    store = SqlStore(pg_url, read_pool_size=3)
    try:
        assert await store.put(fold(HANDLE), record("https://a"), None)
        got = await asyncio.gather(*(store.get(fold(HANDLE)) for _ in range(50)))
        assert all(r is not None for r in got)
        admin = await asyncpg.connect(pg_url)
        try:
            sessions = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert sessions <= 3 + 1  # the read pool, and SQLAlchemy's pooled write connection
    finally:
        await store.close()


async def test_get_passes_on_the_stored_form_as_read(pg_url: str) -> None:
    store = SqlStore(pg_url)
    try:
        assert await store.put(fold(HANDLE), record("https://a"), None)
        got = await store.get(fold(HANDLE))
        assert got is not None and got.stored == encode_values(record("https://a").values)
    finally:
        await store.close()


async def test_a_connection_past_its_max_age_is_replaced_after_its_read() -> None:
    server = FakeServer()
    pool = ReadPool("dsn", 2, connect=server.connect, max_age=0.05)
    assert (await pool.fetchrow("q"))[0] == 0
    assert (await pool.fetchrow("q"))[0] == 0  # young: kept
    await asyncio.sleep(0.1)
    assert (await pool.fetchrow("q"))[0] == 0  # served, then closed: too old
    assert (await pool.fetchrow("q"))[0] == 1
    assert server.live() == 1
    await pool.close()
