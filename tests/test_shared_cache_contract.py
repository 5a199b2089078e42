"""One contract suite for :class:`resolver.ports.SharedCache`: the in-memory twin and Redis;
then how :class:`RedisCache` behaves when Redis is not there, and when it comes back."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from nodes.processes import free_ports
from nodes.redis_cache import RedisCache
from resolver.memory import MemorySharedCache
from resolver.ports import SharedCache

REDIS_URL = os.environ.get("IDIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BLOB = bytes(range(256)) + b"\r\n\x00$-1\r\n"  # every byte value and RESP look-alikes

T = TypeVar("T")


async def _redis_reachable() -> bool:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[SharedCache]:
    if request.param == "memory":
        yield MemorySharedCache()
        return
    assert await _redis_reachable(), f"no Redis at {REDIS_URL} (make test starts it)"
    prefix = f"idis-test:{uuid.uuid4().hex}:"
    redis_cache = RedisCache(REDIS_URL, prefix=prefix)
    try:
        yield redis_cache
    finally:
        await redis_cache.close()
        client = Redis.from_url(REDIS_URL)
        try:
            leftovers = [key async for key in client.scan_iter(match=prefix + "*")]
            if leftovers:
                await client.delete(*leftovers)
        finally:
            await client.aclose()


async def _eventually(probe: Callable[[], Awaitable[T]], want: T, within: float) -> T:
    """Poll ``probe`` until it answers ``want`` or ``within`` seconds pass; its last answer."""
    deadline = time.monotonic() + within
    while True:
        got = await probe()
        if got == want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.02)


async def test_missing_key_is_none(cache: SharedCache) -> None:
    assert await cache.get("88.100.1/NOPE") is None


async def test_set_then_get_round_trips_any_bytes(cache: SharedCache) -> None:
    await cache.set("88.100.1/ABC123", BLOB, 60)
    await cache.set("88.100.1/ÄBC", b"", 60)
    assert await cache.get("88.100.1/ABC123") == BLOB
    assert await cache.get("88.100.1/ÄBC") == b""


async def test_set_overwrites(cache: SharedCache) -> None:
    await cache.set("88.100.1/ABC123", b"old", 60)
    await cache.set("88.100.1/ABC123", b"new", 60)
    assert await cache.get("88.100.1/ABC123") == b"new"


async def test_delete_removes_many_and_only_those(cache: SharedCache) -> None:
    for key in ("a/1", "a/2", "a/3"):
        await cache.set(key, key.encode(), 60)
    await cache.delete(key for key in ("a/1", "a/2", "a/missing"))
    await cache.delete([])
    assert await cache.get("a/1") is None
    assert await cache.get("a/2") is None
    assert await cache.get("a/3") == b"a/3"


async def test_entries_expire_after_their_ttl(cache: SharedCache) -> None:
    await cache.set("88.100.1/SHORT", b"x", 0.2)
    await cache.set("88.100.1/TINY", b"x", 0.0001)  # rounds up to a millisecond, not to "never"
    await cache.set("88.100.1/LONG", b"y", 60)
    assert await cache.get("88.100.1/SHORT") == b"x"
    assert await _eventually(lambda: cache.get("88.100.1/SHORT"), None, within=3) is None
    assert await cache.get("88.100.1/TINY") is None
    assert await cache.get("88.100.1/LONG") == b"y"


# What only RedisCache promises.


async def test_redis_keys_live_under_the_prefix() -> None:
    assert await _redis_reachable(), f"no Redis at {REDIS_URL} (make test starts it)"
    prefix = f"idis-test:{uuid.uuid4().hex}:"
    mine, theirs = RedisCache(REDIS_URL, prefix=prefix), RedisCache(REDIS_URL, prefix=prefix + "x:")
    client = Redis.from_url(REDIS_URL)
    try:
        await mine.set("88.100.1/ABC123", b"mine", 60)
        assert await client.get(prefix + "88.100.1/ABC123") == b"mine"
        assert await theirs.get("88.100.1/ABC123") is None
        await theirs.delete(["88.100.1/ABC123"])
        assert await mine.get("88.100.1/ABC123") == b"mine"
    finally:
        await client.delete(prefix + "88.100.1/ABC123")
        await client.aclose()
        await mine.close()
        await theirs.close()


async def _within(seconds: float, call: Awaitable[T]) -> T:
    """``call``'s result, failing the test if it takes longer than ``seconds``."""
    started = time.monotonic()
    result = await call
    assert time.monotonic() - started < seconds
    return result


async def test_redis_down_answers_none_quickly_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_ports(1)[0]}/0", prefix="idis-test:")
    caplog.set_level(logging.INFO, logger="nodes.redis_cache")
    try:
        for _ in range(20):
            assert await _within(0.5, cache.get("88.100.1/ABC123")) is None
            await _within(0.5, cache.set("88.100.1/ABC123", b"x", 60))
            await _within(0.5, cache.delete(["88.100.1/ABC123"]))
    finally:
        await _within(0.5, cache.close())
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


class RedisServer:
    """A throwaway ``redis-server`` on a loopback port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_ports(1)[0]
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._proc = subprocess.Popen(
            ["redis-server", *args, "--dir", str(self._workdir)], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    assert shutil.which("redis-server"), "redis-server is not installed"
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def test_redis_cache_recovers_when_redis_comes_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.start()
    cache = RedisCache(f"redis://127.0.0.1:{redis_server.port}/0", prefix="t:", backoff=0.2)
    caplog.set_level(logging.INFO, logger="nodes.redis_cache")

    async def works() -> bool:
        await cache.set("88.100.1/ABC123", b"v", 60)
        return await cache.get("88.100.1/ABC123") == b"v"

    try:
        assert await works()
        redis_server.stop()
        for _ in range(5):
            assert await _within(0.5, cache.get("88.100.1/ABC123")) is None
        redis_server.start()
        assert await _eventually(works, True, within=5)
    finally:
        await cache.close()
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
