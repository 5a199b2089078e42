"""Replication between federation members over real HTTP on loopback sockets.

Each member is a store on its own database (SQLite file or PostgreSQL) whose journal is served
by the replication router under uvicorn, and a :class:`nodes.replication.Replicator` pulling
its peers' logs.  The members run in this test's process (``idis serve`` gains the wiring in
``nodes/bootstrap.py``); what crosses between them is real HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from nodes.http.replication_api import replication_router
from nodes.processes import free_ports
from nodes.replication import Replicator, build_replicator, replicating
from nodes.settings import Settings
from nodes.throttle import Throttle, parse_limits
from registry import migrate
from registry.stores import SqlStore
from resolver.identifiers import fold
from resolver.values import AdminRef, Data, HandleValue, Record

SECRET = "federation-secret"
ADMIN = HandleValue(100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88", 200, 0b011111111111)))


async def _anyone(request: Any) -> None:
    """The status route's guard: these tests read it without credentials."""


def record(handle: str, url: str) -> Record:
    return Record(handle, (ADMIN, HandleValue(1, "URL", Data("string", url))))


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.01
) -> float:
    """Seconds until ``check()`` holds; fails the test after ``timeout``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - start


@dataclass
class Member:
    """One federation member: its store, its served log, and its puller."""

    name: str
    url: str
    port: int = field(default_factory=lambda: free_ports(1)[0])
    store: SqlStore | None = None
    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    replicator: Replicator | None = None
    invalidated: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> SqlStore:
        self.store = SqlStore(self.url, journal_as=self.name)
        return self.store

    async def serve(self) -> None:
        assert self.store is not None
        app = FastAPI()
        app.include_router(
            replication_router(
                self.store,
                name=self.name,
                secret=SECRET,
                throttle=Throttle({"source": parse_limits("1000/minute")}),
                guard=_anyone,
                poll_interval=0.02,
            )
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.serving = asyncio.create_task(self.server.serve())
        await eventually(self._started, 5)

    async def _started(self) -> bool:
        return bool(self.server and self.server.started)

    async def stop_serving(self) -> None:
        if self.server is not None and self.serving is not None:
            self.server.should_exit = True
            await self.serving
            self.server = self.serving = None

    def pull(self, peers: Sequence[Member], secret: str = SECRET) -> Replicator:
        assert self.store is not None

        async def note(keys: Sequence[str]) -> None:
            self.invalidated.extend(keys)

        self.replicator = Replicator(
            self.store,
            [(peer.name, peer.base) for peer in peers],
            secret,
            on_applied=note,
            wait=1.0,
            timeout=1.0,
        )
        self.replicator.start()
        return self.replicator

    async def close(self) -> None:
        if self.replicator is not None:
            await self.replicator.stop()
            self.replicator = None
        await self.stop_serving()
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def value(self, handle: str) -> str | None:
        assert self.store is not None
        got = await self.store.get(fold(handle))
        return None if got is None else str(got.values[1].data.value)


@pytest.fixture
def sqlite_urls(tmp_path: Path) -> list[str]:
    """Three migrated SQLite files."""
    urls = [f"sqlite:///{tmp_path / f'm{n}' / 'idis.db'}" for n in range(3)]
    for url in urls:
        migrate.upgrade(url)
    return urls


@pytest.fixture(params=["sqlite-to-postgres", "postgres-to-sqlite"])
def two_urls(request: pytest.FixtureRequest, sqlite_url: str, pg_url: str) -> tuple[str, str]:
    """(the writing member's database, the following member's), over both databases."""
    return (sqlite_url, pg_url) if request.param == "sqlite-to-postgres" else (pg_url, sqlite_url)


@pytest.fixture
async def members() -> AsyncIterator[list[Member]]:
    """Members the test creates, closed afterwards."""
    made: list[Member] = []
    yield made
    for member in made:
        await member.close()


async def test_a_write_reaches_a_peer_within_a_second_and_survives_restarts(
    two_urls: tuple[str, str], members: list[Member]
) -> None:
    beijing, shanghai = Member("beijing", two_urls[0]), Member("shanghai", two_urls[1])
    members += [beijing, shanghai]
    source = beijing.open()
    await beijing.serve()
    shanghai.open()
    shanghai.pull([beijing])

    assert await source.put("0.NA/88.100", record("0.NA/88.100", "https://v1"), None)
    elapsed = await eventually(lambda: _has(shanghai, "0.NA/88.100", "https://v1"), 1.0)
    assert elapsed < 1.0
    assert "0.NA/88.100" in shanghai.invalidated

    # Beijing goes down (its process and its database connections); Shanghai keeps trying.
    await beijing.close()
    replicator = shanghai.replicator
    assert replicator is not None
    await eventually(lambda: _failing(replicator), 5)
    # Beijing comes back, having written while unreachable.
    source = beijing.open()
    assert await source.put("0.NA/88.100", record("0.NA/88.100", "https://v2"), 1)
    assert await source.put("0.NA/88.101", record("0.NA/88.101", "https://new"), None)
    await beijing.serve()
    await eventually(lambda: _has(shanghai, "0.NA/88.101", "https://new"), 4.0)
    assert await shanghai.value("0.NA/88.100") == "https://v2"
    assert replicator.stats()["peers"][0]["applied"] == 3

    # Shanghai restarts: it resumes from its cursor, applying only what is new.
    await shanghai.close()
    follower = shanghai.open()
    assert await follower.cursor("beijing") == await source.txlog_head()
    restarted = shanghai.pull([beijing])
    assert await source.delete("0.NA/88.101", 1)
    await eventually(lambda: _gone(shanghai, "0.NA/88.101"), 1.0)
    stats = restarted.stats()["peers"][0]
    assert (stats["applied"], stats["cursor"], stats["head"]) == (1, 4, 4)
    assert await follower.origin_of("0.NA/88.100") == "beijing"
    assert await follower.txlog_after(0, 10) == []  # copies are not journaled again


async def test_three_members_converge_after_conflicting_writes(
    sqlite_urls: list[str], members: list[Member]
) -> None:
    trio = [
        Member(name, url)
        for name, url in zip(["beijing", "shanghai", "wuhan"], sqlite_urls, strict=True)
    ]
    members += trio
    for member in trio:
        member.open()
        await member.serve()
    for member in trio:
        member.pull([m for m in trio if m is not member])
    for member in trio:
        assert member.store is not None
        handle = f"0.NA/88.{member.name}"
        assert await member.store.put(fold(handle), record(handle, member.name), None)
    for member in trio:
        for other in trio:
            await eventually(partial(_has, member, f"0.NA/88.{other.name}", other.name), 1.0)

    # A partition: Beijing and Wuhan both allocate 0.NA/88.999 without seeing each other.
    for member in trio:
        assert member.replicator is not None
        await member.replicator.stop()
    beijing, _, wuhan = trio
    assert beijing.store is not None and wuhan.store is not None
    assert await beijing.store.put("0.NA/88.999", record("0.NA/88.999", "from beijing"), None)
    assert await wuhan.store.put("0.NA/88.999", record("0.NA/88.999", "from wuhan"), None)
    for member in trio:
        member.pull([m for m in trio if m is not member])
    # The later write wins everywhere; Beijing's copy is now Wuhan's record.
    for member in trio:
        await eventually(partial(_has, member, "0.NA/88.999", "from wuhan"), 2.0)
    for member in trio:
        assert member.store is not None
        assert await member.store.origin_of("0.NA/88.999") == "wuhan"
    assert not await beijing.store.put("0.NA/88.999", record("0.NA/88.999", "again"), 1)
    conflicts = sum(
        p["conflicts"] for m in trio if m.replicator for p in m.replicator.stats()["peers"]
    )
    assert conflicts >= 1


async def test_the_log_is_refused_without_the_federation_secret(
    sqlite_url: str, pg_url: str, members: list[Member]
) -> None:
    beijing, shanghai = Member("beijing", sqlite_url), Member("shanghai", pg_url)
    members += [beijing, shanghai]
    source = beijing.open()
    await beijing.serve()
    assert await source.put("0.NA/88.100", record("0.NA/88.100", "secret"), None)
    log_url = beijing.base + "/api/replication/log"
    async with httpx.AsyncClient() as client:
        missing = await client.get(log_url)
        assert (missing.status_code, missing.json()["responseCode"]) == (401, 402)
        assert missing.headers["www-authenticate"].startswith("Basic")
        for user, secret in [("federation", "wrong"), ("admin", SECRET), ("federation", "")]:
            wrong = await client.get(log_url, auth=(user, secret))
            assert (wrong.status_code, wrong.json()["responseCode"]) == (403, 403)
        bad = await client.get(log_url, params={"limit": 5000}, auth=("federation", SECRET))
        assert (bad.status_code, bad.json()["responseCode"]) == (400, 4)
        good = await client.get(log_url, auth=("federation", SECRET))
        body = good.json()
        assert (body["responseCode"], body["node"], body["head"], body["last"]) == (
            1,
            "beijing",
            1,
            1,
        )
        assert [e["key"] for e in body["entries"]] == ["0.NA/88.100"]

    shanghai.open()
    replicator = shanghai.pull([beijing], secret="not the secret")
    await eventually(lambda: _failing(replicator), 2)
    await asyncio.sleep(0.3)
    assert "403" in (replicator.stats()["peers"][0]["last_error"] or "")
    assert await shanghai.value("0.NA/88.100") is None


async def test_an_empty_read_waits_for_the_next_write(
    sqlite_url: str, members: list[Member]
) -> None:
    beijing = Member("beijing", sqlite_url)
    members.append(beijing)
    source = beijing.open()
    await beijing.serve()
    log_url = beijing.base + "/api/replication/log"
    auth = ("federation", SECRET)
    async with httpx.AsyncClient(timeout=5) as client:
        start = time.monotonic()
        empty = await client.get(log_url, params={"after": 0, "wait": 0.3}, auth=auth)
        assert empty.json()["entries"] == [] and time.monotonic() - start >= 0.3

        async def write_soon() -> None:
            await asyncio.sleep(0.3)
            assert await source.put("0.NA/88.1", record("0.NA/88.1", "x"), None)

        start = time.monotonic()
        writer = asyncio.create_task(write_soon())
        answer = await client.get(log_url, params={"after": 0, "wait": 5}, auth=auth)
        await writer
        assert [e["key"] for e in answer.json()["entries"]] == ["0.NA/88.1"]
        assert time.monotonic() - start < 1.0


async def test_a_node_replicates_with_the_settings_it_is_given(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = SqlStore(sqlite_url, journal_as="shanghai")
    invalidator = SimpleNamespace(written=lambda keys: asyncio.sleep(0))
    peers = [
        {"name": "beijing", "url": "http://127.0.0.1:9"},
        {"name": "shanghai", "url": "http://127.0.0.1:9"},  # itself: skipped
    ]

    def node(**settings: Any) -> SimpleNamespace:
        base: dict[str, Any] = {"name": "shanghai", "role": "top-level", "data_dir": tmp_path}
        return SimpleNamespace(
            settings=Settings(**{**base, **settings}), store=store, invalidator=invalidator
        )

    try:
        federation = {"peers": peers, "secret": SECRET}
        assert build_replicator(node(role="secondary", federation=federation)) is None
        assert build_replicator(node(federation={"peers": [], "secret": SECRET})) is None
        with pytest.raises(ValueError, match=r"federation\.secret"):  # refused by the settings
            node(federation={"peers": peers})
        app = SimpleNamespace(state=SimpleNamespace())
        async with replicating(node(federation=federation), app) as replicator:
            assert replicator is app.state.replicator
            assert [p["name"] for p in replicator.stats()["peers"]] == ["beijing"]
            await eventually(lambda: _active(replicator), 2)
        assert not replicator.active
    finally:
        await store.close()


async def _has(member: Member, handle: str, value: str) -> bool:
    return await member.value(handle) == value


async def _gone(member: Member, handle: str) -> bool:
    return await member.value(handle) is None


async def _failing(replicator: Replicator) -> bool:
    peer = replicator.stats()["peers"][0]
    return bool(peer["errors"]) and not peer["connected"]


async def _active(replicator: Replicator) -> bool:
    return replicator.active
