"""Metrics and logs of real nodes (issue 15, items 1 and 2).

One node has two workers, JSON logs, the access log on and a PostgreSQL URL with a password: its
``/metrics`` must show the sum of both workers' counts, exactly, and every log line must be a
JSON object.  The other runs the defaults (one worker, text logs, access log off) on SQLite,
where a corrupted row makes requests fail: each failure logs one traceback.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from nodeproc import NodeProcess
from prometheus_client.parser import text_string_to_metric_families

from loadtests import handle_client
from nodes.processes import free_ports

PASSWORD = "hunter2-not-in-logs"
HANDLE = "88.100.1/OBS"
VALUES = [{"index": 1, "type": "URL", "data": "https://example.org/obs"}]
WAIT = 30.0
NAME = re.compile(r"^idis_[a-z0-9_]+$")
LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")


@pytest.fixture(scope="module")
def busy(node_factory: Callable[..., NodeProcess], pg_factory: Callable[[], str]) -> NodeProcess:
    url = pg_factory().replace("postgres@", f"postgres:{PASSWORD}@", 1)
    assert PASSWORD in url
    return node_factory(
        database_url=url,
        workers=2,
        extra_env={"IDIS_LOG_FORMAT": "json", "IDIS_ACCESS_LOG": "true"},
    )


@pytest.fixture(scope="module")
def plain(node_factory: Callable[..., NodeProcess]) -> NodeProcess:
    return node_factory(extra_env={"IDIS_HANDLE": f"127.0.0.1:{free_ports(1)[0]}"})


def scrape(node: NodeProcess) -> dict[str, Any]:
    """The node's metric families by name (parsed as Prometheus parses them)."""
    response = httpx.get(f"{node.base_url}/metrics", timeout=WAIT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def resolutions(families: dict[str, Any]) -> float:
    return sum(
        sample.value
        for sample in families["idis_requests"].samples
        if sample.name == "idis_requests_total"
        and sample.labels["door"] == "rest"
        and sample.labels["operation"] == "resolve"
    )


def worker_resolutions(node: NodeProcess) -> list[float]:
    """Per worker, the resolutions its latest snapshot counts (its file under the data dir)."""
    counts = []
    for path in (node.data_dir / "metrics").glob("worker-*.json"):
        snapshot = orjson.loads(path.read_bytes())
        counts.append(
            sum(v for n, k, v in snapshot["counters"] if n == "idis_requests" and k[1] == "resolve")
        )
    return counts


def drive(node: NodeProcess, connections: int, per_connection: int) -> int:
    """GET the handle ``connections * per_connection`` times, on that many connections at
    once; the number of 200 answers."""
    answered = [0] * connections

    def one(index: int) -> None:
        with node.client() as client:
            for _ in range(per_connection):
                if client.get(f"/api/handles/{HANDLE}").status_code == 200:
                    answered[index] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return sum(answered)


def test_metrics_sum_both_workers_exactly(busy: NodeProcess) -> None:
    with busy.client() as client:
        assert client.put(f"/api/handles/{HANDLE}", json=VALUES, auth=busy.auth).status_code < 300
    sent = 0
    deadline = time.monotonic() + 60
    # Until both workers have served some (the kernel picks the worker of each connection).
    while time.monotonic() < deadline:
        sent += drive(busy, connections=8, per_connection=10)
        time.sleep(1.5)  # both workers' snapshots written (nodes.metrics.FLUSH_INTERVAL)
        per_worker = worker_resolutions(busy)
        if len(per_worker) == 2 and min(per_worker) > 0:
            break
    else:
        pytest.fail(f"one worker served everything: {worker_resolutions(busy)}")
    assert sent >= 80
    deadline = time.monotonic() + WAIT
    while (total := resolutions(scrape(busy))) != sent and time.monotonic() < deadline:
        time.sleep(0.5)
    assert total == sent
    assert sum(worker_resolutions(busy)) == sent
    families = scrape(busy)
    assert families["idis_workers"].samples[0].value == 2
    duration = families["idis_request_duration_seconds"]
    assert duration.type == "histogram"
    counts = [
        s.value
        for s in duration.samples
        if s.name.endswith("_count") and s.labels == {"door": "rest", "operation": "resolve"}
    ]
    assert counts == [sent]
    stats = httpx.get(f"{busy.base_url}/api/stats", auth=busy.operator_auth, timeout=WAIT).json()
    assert stats["workers"] == 2 and stats["requests"] >= sent


def test_metric_names_and_labels_follow_the_conventions(busy: NodeProcess) -> None:
    families = scrape(busy)
    assert {"idis_requests", "idis_cache_hits", "idis_request_duration_seconds"} <= set(families)
    for name, family in families.items():
        assert NAME.match(name), name
        assert family.type in ("counter", "gauge", "histogram")
        for sample in family.samples:
            for label, value in sample.labels.items():
                assert LABEL.match(label), (name, label)
                assert len(value) < 32, (name, label, value)  # bounded: no handles, no paths
    doors = {s.labels["door"] for s in families["idis_requests"].samples}
    assert doors <= {"rest", "native_tcp", "native_udp", "native_http", "gs1", "dns"}


def test_json_log_lines_and_access_log(busy: NodeProcess) -> None:
    with busy.client() as client:
        assert client.get(f"/api/handles/{HANDLE}?pretty=true").status_code == 200
    time.sleep(0.5)
    lines = [line for line in busy.log().splitlines() if line.strip()]
    assert len(lines) > 10
    records = []
    for line in lines:
        record = orjson.loads(line)  # every line one JSON object
        assert {"timestamp", "level", "logger", "message"} <= set(record), line
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", record["timestamp"])
        records.append(record)
    access = [r for r in records if r["logger"] == "idis.access"]
    pretty = [
        r for r in access if r["path"] == f"/api/handles/{HANDLE}" and "pretty" in r["message"]
    ]
    assert pretty, access[-5:]
    assert pretty[-1]["status"] == 200 and pretty[-1]["door"] == "rest"
    assert pretty[-1]["method"] == "GET" and pretty[-1]["source"] == "127.0.0.1"
    assert pretty[-1]["duration_seconds"] >= 0
    workers = {r["process"] for r in records if r["logger"] == "nodes.http.server"}
    assert len(workers) >= 3  # the serving process and both workers, one format


def test_start_up_line_names_the_node_without_credentials(busy: NodeProcess) -> None:
    log = busy.log()
    assert PASSWORD not in log
    starts = [
        orjson.loads(line)["message"] for line in log.splitlines() if '"message":"starting ' in line
    ]
    assert len(starts) == 1
    start = starts[0]
    assert start.startswith(f"starting secondary node {busy.env['IDIS_NAME']}:")
    assert "database postgresql://127.0.0.1:5432/idis_e2e_" in start
    assert f"http 127.0.0.1:{busy.base_url.rsplit(':', 1)[1]}" in start
    assert "homed prefixes 88.100.1" in start and "workers 2" in start


def test_text_logs_without_access_log(plain: NodeProcess) -> None:
    with plain.client() as client:
        assert client.get("/api/handles/88.100.1/NOPE").status_code == 404
    log = plain.log()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) ", line), (
            line
        )
    assert "idis.access" not in log
    assert "database sqlite:///" in log


def test_a_failing_request_logs_one_traceback(plain: NodeProcess) -> None:
    with plain.client() as client:
        assert (
            client.put("/api/handles/88.100.1/BAD", json=VALUES, auth=plain.auth).status_code < 300
        )
        # A row no decoder accepts: every fresh read of it is a bug's 500.
        with sqlite3.connect(Path(plain.data_dir) / "idis.db") as db:
            db.execute(
                "UPDATE handles SET data = ? WHERE handle = ?", (b"\xff\x00", "88.100.1/BAD")
            )
        before = plain.log().count("Traceback")
        assert client.get("/api/handles/88.100.1/BAD?auth=true").status_code == 500
        assert client.get("/88.100.1/BAD?auth=true").status_code == 500
        assert (
            client.put("/api/handles/88.100.1/BAD", json=VALUES, auth=plain.auth).status_code == 500
        )
    time.sleep(0.5)
    assert plain.log().count("Traceback") - before == 3


def test_native_doors_are_counted_by_door_and_outcome(plain: NodeProcess) -> None:
    with plain.client() as client:
        assert client.put(f"/api/handles/{HANDLE}", json=VALUES, auth=plain.auth).status_code < 300
    host, port = plain.env["IDIS_HANDLE"].split(":")
    request = handle_client.resolution(HANDLE)
    replies = [
        handle_client.http(plain.base_url, HANDLE, request),
        handle_client.http(plain.base_url, HANDLE, request),
        handle_client.tcp(host, int(port), request),
        handle_client.udp(host, int(port), request),
        handle_client.udp(host, int(port), handle_client.resolution("88.100.1/ABSENT")),
    ]
    assert [r.code for r in replies] == [1, 1, 1, 1, 100]
    samples = scrape(plain)["idis_requests"].samples
    counted: dict[tuple[str, str], float] = {}
    for sample in samples:
        if sample.labels["door"].startswith("native") and sample.name.endswith("_total"):
            key = (sample.labels["door"], sample.labels["outcome"])
            counted[key] = counted.get(key, 0) + sample.value
    assert counted == {
        ("native_http", "success"): 2,
        ("native_tcp", "success"): 1,
        ("native_udp", "success"): 1,
        ("native_udp", "not_found"): 1,
    }
