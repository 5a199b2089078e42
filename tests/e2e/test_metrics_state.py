"""The state metrics of real nodes (issue 15, item 1): change-feed and mirror lag, the database
member's role and lag, import and batch progress, and ``/api/stats`` agreeing with
``/metrics``.

The node has two workers on PostgreSQL.  Its database refusing connections for a while makes
the change-feed lag grow (the followers cannot read the log), and the lag falls back to about
nothing once they can; a mirror following the node's feed reports its own lag.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from nodeproc import REPO, RUNNING, NodeProcess
from prometheus_client.parser import text_string_to_metric_families

from nodes.processes import CliFailed, run_cli

WAIT = 30.0
FEED_SECRET = f"feed-{uuid.uuid4().hex}"
CURRENT = 1.5
"""Seconds of lag that still count as current: a poll interval (0.1 s) and a loaded machine."""


@pytest.fixture(scope="module")
def database(pg_factory: Callable[[], str]) -> str:
    return pg_factory()


@pytest.fixture(scope="module")
def node(node_factory: Callable[..., NodeProcess], database: str) -> NodeProcess:
    return node_factory(
        database_url=database, workers=2, extra_env={"IDIS_FEDERATION__SECRET": FEED_SECRET}
    )


def samples(node: NodeProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the node's ``/metrics``, by name and sorted labels."""
    response = httpx.get(f"{node.base_url}/metrics", timeout=WAIT)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(node: NodeProcess, name: str, **labels: str) -> float | None:
    return samples(node).get((name, tuple(sorted(labels.items()))))


def wait_for(what: str, done: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def stats(node: NodeProcess) -> dict[str, Any]:
    answer = httpx.get(f"{node.base_url}/api/stats", auth=node.operator_auth, timeout=WAIT)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _connections(url: str, allowed: bool) -> None:
    """Let the database at ``url`` take connections or not (refusing also ends its sessions)."""
    server, _, name = url.rpartition("/")
    admin = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await admin.close()


def test_a_two_worker_node_reports_its_lags_and_member(node: NodeProcess, database: str) -> None:
    wait_for("both workers report", lambda: value(node, "idis_workers") == 2)
    found = samples(node)
    assert found[("idis_database_reachable", ())] == 1
    assert found[("idis_database_leader", ())] == 1  # one PostgreSQL, no standby
    assert found[("idis_replication_lag_seconds", ())] == 0
    assert found[("idis_leader_changes_total", ())] == 0
    assert 0 <= found[("idis_change_feed_lag_seconds", ())] < CURRENT

    # The followers cannot read the change log: the lag grows with the outage...
    asyncio.run(_connections(database, allowed=False))
    try:
        wait_for(
            "the change-feed lag grows",
            lambda: (value(node, "idis_change_feed_lag_seconds") or 0) >= 3,
        )
    finally:
        asyncio.run(_connections(database, allowed=True))
    # ... and falls back once they can; a write through one worker reaches the other.
    wait_for(
        "the change-feed lag is back to about nothing",
        lambda: (value(node, "idis_change_feed_lag_seconds") or CURRENT) < CURRENT,
    )
    handle = f"{node.prefix}/LAG-{uuid.uuid4().hex[:6]}"
    values = [{"index": 1, "type": "URL", "data": "https://example.org/lag"}]
    with node.client() as client:
        answer = client.put(f"/api/handles/{handle}", json=values, auth=node.auth)
    assert answer.status_code == 201, answer.text
    assert (value(node, "idis_change_feed_lag_seconds") or 0) < CURRENT


def test_a_mirror_reports_its_lag(
    node: NodeProcess, node_factory: Callable[..., NodeProcess], pg_factory: Callable[[], str]
) -> None:
    mirror = node_factory(
        database_url=pg_factory(),
        init=False,
        secret=node.secret,
        workers=2,
        extra_env={
            "IDIS_MIRROR__SOURCE": node.base_url,
            "IDIS_MIRROR__SECRET": FEED_SECRET,
            "IDIS_FEDERATION__SECRET": FEED_SECRET,
        },
    )
    handle = f"{node.prefix}/MIRRORED-{uuid.uuid4().hex[:6]}"
    values = [{"index": 1, "type": "URL", "data": "https://example.org/mirrored"}]
    with node.client() as client:
        assert client.put(f"/api/handles/{handle}", json=values, auth=node.auth).status_code == 201
    with mirror.client() as client:
        wait_for(
            "the mirror serves the record",
            lambda: client.get(f"/api/handles/{handle}").status_code == 200,
        )
    # One worker pulls and reports; a current mirror, waiting in a long poll, lags nothing.
    wait_for("the mirror is current", lambda: value(mirror, "idis_mirror_lag_seconds") == 0)
    assert value(node, "idis_mirror_lag_seconds") is None  # the source mirrors nothing

    # Its source gone, the mirror's lag grows from the moment it was last current.
    node.stop()
    try:
        wait_for(
            "the mirror's lag grows",
            lambda: (value(mirror, "idis_mirror_lag_seconds") or 0) >= 2,
        )
        assert stats(mirror)["mirror_lag_seconds"] >= 2
    finally:
        node.stopped = False
        RUNNING.append(node)
        node.start(WAIT)


def test_import_and_batch_progress_are_counted(node: NodeProcess, tmp_path: Path) -> None:
    lines = [
        orjson.dumps(
            {
                "handle": f"{node.prefix}/IMP-{i}",
                "values": [{"index": 1, "type": "URL", "data": "x"}],
            }
        )
        for i in range(5)
    ]
    lines.append(b'{"handle": "no-slash", "values": []}')
    lines.append(b'{"handle": "99.999/ELSEWHERE", "values": []}')
    source = tmp_path / "records.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    # Exit code 1: some records were rejected (the others are loaded).
    with pytest.raises(CliFailed, match="rejected 2"):
        run_cli(node.env, "import", str(source), cwd=REPO)
    found = samples(node)
    assert found[("idis_import_records_total", (("result", "loaded"),))] == 5
    assert found[("idis_import_records_total", (("result", "unchanged"),))] == 0
    assert found[("idis_import_records_total", (("result", "rejected"),))] == 2
    assert found.get(("idis_import_running", ()), 0) == 0  # the import has exited
    assert found[("idis_workers", ())] == 2  # an import is no worker

    url = [{"index": 1, "type": "URL", "data": "https://example.org/batch"}]
    batch = {
        "handles": [
            {"handle": f"{node.prefix}/B-{uuid.uuid4().hex[:6]}", "values": url},
            {"handle": f"{node.prefix}/B-{uuid.uuid4().hex[:6]}", "values": url},
            {"handle": "not a handle", "values": url},
        ]
    }
    before = samples(node)
    with node.client() as client:
        answer = client.post("/api/batch", json=batch, auth=node.auth)
    assert answer.status_code == 200, answer.text
    codes = [r["responseCode"] for r in answer.json()["results"]]
    assert codes.count(1) == 2 and len(codes) == 3

    def counted(result: str) -> float:
        key = ("idis_batch_items_total", (("result", result),))
        return samples(node).get(key, 0) - before.get(key, 0)

    wait_for("the batch is counted", lambda: counted("ok") == 2 and counted("failed") == 1)


def test_api_stats_agrees_with_metrics(node: NodeProcess) -> None:
    with node.client() as client:
        client.get(f"/api/handles/{node.prefix}/IMP-1")
        client.get(f"/api/handles/{node.prefix}/ABSENT")
    time.sleep(1.5)  # the workers' snapshots settle (nodes.metrics.FLUSH_INTERVAL)
    found = samples(node)
    body = stats(node)

    def total(name: str) -> float:
        return sum(v for (n, _), v in found.items() if n == name)

    assert body["workers"] == found[("idis_workers", ())] == 2
    assert body["walks"] == total("idis_walks_total")
    assert body["authentication_failures"] == total("idis_authentication_failures_total")
    assert body["cache_entries"] == found[("idis_cache_entries", (("layer", "memory"),))]
    assert body["import_records"] == {
        labels[0][1]: v for (n, labels), v in found.items() if n == "idis_import_records_total"
    }
    assert body["batch_items"] == {
        labels[0][1]: v for (n, labels), v in found.items() if n == "idis_batch_items_total"
    }
    for name in ("database_leader", "database_reachable", "leader_changes_total"):
        assert body[name.removesuffix("_total")] == found[(f"idis_{name}", ())], name
    assert body["replication_lag_seconds"] == found[("idis_replication_lag_seconds", ())]
    assert 0 <= body["change_feed_lag_seconds"] < CURRENT
    # Requests: /api/stats counts the scrape before it, and nothing else came between.
    assert body["requests"] >= total("idis_requests_total")
