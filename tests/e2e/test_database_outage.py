"""A single node whose PostgreSQL stops under load: code 3 / HTTP 503 with Retry-After for what
needs the database, cached answers still served, never a 500 or a hang, one log line for the
outage, and recovery without a restart once PostgreSQL is back.

The node's PostgreSQL is a server of its own (:class:`nodes.national.cluster.PostgresServer`),
never the shared one on 5432.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from conftest import StartNode
from nodeproc import NodeProcess

from nodes.national.binaries import MissingBinaries
from nodes.national.postgres import PostgresServer
from registry import migrate

VALUES = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/outage"}]}


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except MissingBinaries as error:
        pytest.fail(str(error))
    try:
        server.start()

        async def create() -> None:
            connection = await asyncpg.connect(server.url("postgres"), timeout=10)
            await connection.execute("CREATE DATABASE idis")
            await connection.close()

        asyncio.run(create())
        migrate.upgrade(server.url("idis"))
        yield server
    finally:
        server.remove()


def _put(client: httpx.Client, node: NodeProcess, handle: str) -> httpx.Response:
    return client.put(f"/api/handles/{handle}", json=VALUES, auth=node.auth)


def test_postgres_stopped_under_load(own_postgres: PostgresServer, node_factory: StartNode) -> None:
    node = node_factory(
        database_url=own_postgres.url("idis"),
        extra_env={"IDIS_DATABASE_TIMEOUT": "2", "IDIS_DATABASE_WRITE_TIMEOUT": "2"},
    )
    cached, uncached = f"{node.prefix}/CACHED", f"{node.prefix}/UNCACHED"
    with node.client(timeout=20) as client:
        assert _put(client, node, cached).status_code == 201
        assert _put(client, node, uncached).status_code == 201
        assert client.get(f"/api/handles/{cached}").status_code == 200  # now in memory
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["database"] == {"reachable": True, "member": "leader", "lag": 0.0}

        own_postgres.stop()
        statuses: dict[str, list[int]] = {"cached": [], "uncached": [], "write": []}
        deadline = time.monotonic() + 6
        n = 0
        while time.monotonic() < deadline:  # bounded load while the database is down
            n += 1
            statuses["cached"].append(client.get(f"/api/handles/{cached}").status_code)
            answer = client.get(f"/api/handles/{uncached}")
            statuses["uncached"].append(answer.status_code)
            if answer.status_code == 503:
                assert answer.headers["retry-after"].isdigit()
                assert answer.json()["responseCode"] == 3
            started = time.monotonic()
            written = _put(client, node, f"{node.prefix}/DOWN-{n}")
            assert time.monotonic() - started < 10, "a write hung while the database was down"
            statuses["write"].append(written.status_code)
            if written.status_code == 503:
                assert written.headers["retry-after"].isdigit()
        assert set(statuses["cached"]) == {200}, statuses
        assert set(statuses["uncached"]) == {503}, statuses
        assert set(statuses["write"]) == {503}, statuses
        assert client.get("/healthz").status_code == 200
        unready = client.get("/readyz")
        assert unready.status_code == 503 and unready.json()["database"]["reachable"] is False
        assert client.get(f"/api/handles/{cached}?auth=true").status_code == 503
        search = {"prefix": node.prefix, "type": "model", "value": "X"}
        found = client.get("/api/search", params=search)
        assert found.status_code == 503 and found.json()["responseCode"] == 3, found.text
        assert found.headers["retry-after"].isdigit()

        own_postgres.start()
        deadline = time.monotonic() + 30
        while _put(client, node, f"{node.prefix}/BACK").status_code != 201:
            assert time.monotonic() < deadline, "writes did not come back by themselves"
            time.sleep(0.2)
        assert client.get(f"/api/handles/{uncached}").status_code == 200
        assert client.get("/api/search", params=search).json()["handles"] == []
        assert client.get("/readyz").status_code == 200
    log = node.log()
    assert log.count("unavailable (") == 1, log
    assert "available again after" in log
    assert "Traceback" not in log
