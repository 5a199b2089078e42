"""One change feed for every cache: two hosts of one site (two ``idis serve`` processes with
data directories of their own, so generation boards of their own) share one database and one
Redis.  A write acknowledged on one host must be what the other serves within 1 s, though the
other had the old answer cached in memory and in Redis for a day.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from nodeproc import NodeProcess

from nodes.processes import run_cli

WRITES = 30
"""Writes measured per run (bounded loop)."""
VISIBLE_WITHIN = 1.0
"""The issue's bound on write-to-visible across hosts, p99."""
GIVE_UP = 10.0
"""How long one write may take to show before the test fails (a loaded CI machine)."""


@pytest.fixture(params=["postgres", "sqlite"])
def two_hosts(
    request: pytest.FixtureRequest,
    node_factory: Any,
    pg_factory: Callable[[], str],
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    if request.param == "postgres":
        database = pg_factory()
    else:
        database = f"sqlite:///{tmp_path_factory.mktemp('shared') / 'idis.db'}"
    name = f"e2e-x-{uuid.uuid4().hex[:10]}"  # one site: one name, one Redis key space
    env = {"IDIS_NAME": name, "IDIS_CACHE__NEGATIVE_TTL": "3600"}
    first = node_factory(database_url=database, redis_url=redis_url, extra_env=env)
    second = node_factory(
        database_url=database,
        redis_url=redis_url,
        init=False,
        secret=first.secret,
        extra_env=env,
    )
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"idis:{name}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _value(url: str) -> list[dict[str, object]]:
    return [{"index": 1, "type": "URL", "data": url, "ttl": 86400}]


def _url_of(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return None
    values = response.json()["values"]
    return next((v["data"]["value"] for v in values if v["type"] == "URL"), None)


def test_write_on_one_host_is_served_by_the_other_within_a_second(
    two_hosts: tuple[NodeProcess, NodeProcess],
) -> None:
    writer, reader = two_hosts
    delays: list[float] = []
    with writer.client() as w, reader.client() as r:
        handles = [f"{writer.prefix}/X{i}-{uuid.uuid4().hex[:6]}" for i in range(WRITES)]
        for i, handle in enumerate(handles):
            path = f"/api/handles/{quote(handle)}"
            if i % 3 == 2:
                # A not-found cached for an hour must go too when the handle is created.
                assert r.get(path).status_code == 404
                old = None
            else:
                old = f"https://example.com/old/{i}"
                assert w.put(path, json=_value(old), auth=writer.auth).status_code == 201
                # The reader caches the old answer (once its own follower has let go of what
                # it cached before the creation).
                deadline = time.monotonic() + GIVE_UP
                while True:
                    cached = r.get(path)
                    if cached.headers.get("x-idis-source") in ("memory", "redis"):
                        break
                    assert time.monotonic() < deadline, f"{handle} never cached by the reader"
                    time.sleep(0.01)
                assert _url_of(cached) == old
            new = f"https://example.com/new/{i}"
            response = w.put(path, json=_value(new), auth=writer.auth)
            assert response.status_code in (200, 201), response.text
            acknowledged = time.monotonic()
            while _url_of(r.get(path)) != new:
                waited = time.monotonic() - acknowledged
                assert waited < GIVE_UP, f"{handle} still stale on the other host after {waited}"
                time.sleep(0.005)
            delays.append(time.monotonic() - acknowledged)
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(f"write-to-visible across hosts: p50 {delays[len(delays) // 2]:.3f} s, p99 {p99:.3f} s")
    assert p99 <= VISIBLE_WITHIN, f"p99 {p99:.3f} s > {VISIBLE_WITHIN} s: {delays}"


def test_deletes_and_homing_reach_the_other_host(
    two_hosts: tuple[NodeProcess, NodeProcess],
) -> None:
    writer, reader = two_hosts
    handle = f"{writer.prefix}/D-{uuid.uuid4().hex[:6]}"
    path = f"/api/handles/{quote(handle)}"
    with writer.client() as w, reader.client() as r:
        assert w.put(path, json=_value("https://example.com/d"), auth=writer.auth).is_success
        _wait(lambda: r.get(path).status_code == 200)
        assert w.delete(path, auth=writer.auth).status_code == 200
        _wait(lambda: r.get(path).status_code == 404)
        # A prefix homed through one host: the other serves (and refuses) it at once.
        other = f"{writer.prefix}.{uuid.uuid4().int % 10**6}"
        there = f"/api/handles/{quote(other)}/A"
        assert r.get(there).json()["responseCode"] == 301
        secret_file = writer.home / "secret"
        run_cli(writer.env, "prefix", "init", other, "--secret-file", str(secret_file))
        _wait(lambda: r.get(there).json()["responseCode"] == 100)


def _wait(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GIVE_UP
    while not done():
        assert time.monotonic() < deadline, "the other host never saw the change"
        time.sleep(0.02)
