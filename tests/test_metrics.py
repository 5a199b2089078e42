"""The sums of workers' snapshots (nodes/metrics.py) and the labels of outcomes and layers."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nodes.metrics import (
    REQUESTS,
    MemberWatch,
    Metrics,
    NodeCollector,
    code_class,
    importing,
    layer_of,
    registry,
    status_class,
    totals,
)
from nodes.processes import pid_alive

DEAD_PID = 2**22 + 12345  # above Linux's pid_max default range: no such process


def test_a_dead_workers_counters_stay_and_its_gauges_go(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.requests[("rest", "resolve", "2xx", "memory")] += 3
    metrics.gauge(lambda: [("idis_cache_entries", ("memory",), 7)])
    metrics.histogram("rest", "resolve").observe(0.0003)
    metrics.directory = tmp_path
    dead = {
        "pid": DEAD_PID,
        "counters": [[REQUESTS, ["rest", "resolve", "2xx", "memory"], 4]],
        "gauges": [["idis_cache_entries", ["memory"], 100]],
        "histograms": [[["rest", "resolve"], [0, 0, 4] + [0] * 11, 0.0008]],
    }
    (tmp_path / f"worker-{DEAD_PID}.json").write_bytes(orjson.dumps(dead))
    sums = totals(metrics.snapshots())
    assert sums[REQUESTS][("rest", "resolve", "2xx", "memory")] == 7
    assert sums["idis_cache_entries"][("memory",)] == 7  # the live worker's only
    assert sums["idis_workers"][()] == 1

    text = generate_latest(registry(NodeCollector(metrics))).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = [
        s for s in families["idis_request_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert [s.value for s in counts] == [5]
    buckets = {
        s.labels["le"]: s.value
        for s in families["idis_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.0001"] == 0 and buckets["0.0005"] == 5 and buckets["+Inf"] == 5


def test_labels_are_bounded_classes() -> None:
    assert [status_class(s) for s in (200, 302, 404, 503)] == ["2xx", "3xx", "4xx", "5xx"]
    assert code_class(1) == "success" and code_class(100) == "not_found"
    assert code_class(301) == "referral" and code_class(3) == "unavailable"
    assert code_class(402) == "refused" and code_class(12345) == "error"
    assert layer_of("memory") == "memory" and layer_of("stale (memory)") == "stale"
    assert layer_of("http://a 88/X:1 -> http://b 88/X:1") == "walk"


def test_untimed_answers_are_requests_in_the_first_bucket(tmp_path: Path) -> None:
    metrics = Metrics()
    hot = [0]
    metrics.untimed("rest", "resolve", ("rest", "resolve", "2xx", "memory"), lambda: hot[0])
    metrics.requests[("rest", "resolve", "2xx", "memory")] += 2  # answered by the slow path
    metrics.histogram("rest", "resolve").observe(0.002)
    metrics.histogram("rest", "resolve").observe(0.002)
    hot[0] = 5
    sums = totals(metrics.snapshots())
    assert sums[REQUESTS][("rest", "resolve", "2xx", "memory")] == 7
    [(labels, counts, total)] = metrics.snapshot()["histograms"]
    assert labels == ["rest", "resolve"] and counts[0] == 5 and sum(counts) == 7
    assert total == 0.004  # untimed answers add nothing to the sum


def test_lags_are_the_oldest_age_and_dead_workers_lag_nothing(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.gauge(lambda: [("idis_change_feed_lag_seconds", (), 1000.0)])
    metrics.gauge(lambda: [("idis_mirror_lag_seconds", (), 0)])  # current
    metrics.directory = tmp_path
    other = {
        "pid": os.getpid() + 1 if pid_alive(os.getpid() + 1) else os.getppid(),
        "counters": [],
        "gauges": [["idis_change_feed_lag_seconds", [], 990.0]],
        "histograms": [],
    }
    dead = {**other, "pid": DEAD_PID, "gauges": [["idis_change_feed_lag_seconds", [], 1.0]]}
    for snapshot in (other, dead):
        (tmp_path / f"worker-{snapshot['pid']}.json").write_bytes(orjson.dumps(snapshot))
    sums = totals(metrics.snapshots(), now=1003.0)
    assert sums["idis_change_feed_lag_seconds"][()] == 13.0  # the older live worker's
    assert sums["idis_mirror_lag_seconds"][()] == 0
    assert sums["idis_workers"][()] == 2


def test_member_role_changes_count_once_across_workers(tmp_path: Path) -> None:
    path = tmp_path / "member.json"
    one, two = MemberWatch(path), MemberWatch(path)
    one.observe(True)
    two.observe(True)
    two.observe(None)  # unreachable: no change, no role
    assert dict((n, v) for n, _, v in one.samples()) == {
        "idis_database_reachable": 0,
        "idis_leader_changes": 0,
    }
    one.observe(False, 0.25)
    two.observe(False, 0.5)
    assert dict((n, v) for n, _, v in two.samples()) == {
        "idis_database_reachable": 1,
        "idis_leader_changes": 1,
        "idis_database_leader": 0,
        "idis_replication_lag_seconds": 0.5,
    }


def test_an_import_shows_in_the_node_metrics_and_is_no_worker(tmp_path: Path) -> None:
    report = SimpleNamespace(loaded=0, unchanged=0, rejected=0)
    with importing(tmp_path, report):
        report.loaded, report.rejected = 10, 1
        node = Metrics()
        node.directory = tmp_path
        sums = totals(node.snapshots())
        assert sums["idis_import_running"][()] == 1
        report.loaded = 20
    sums = totals(node.snapshots())
    assert sums["idis_import_records"][("loaded",)] == 20
    assert sums["idis_import_records"][("rejected",)] == 1
    assert sums["idis_import_running"][()] == 0
    assert sums["idis_workers"][()] == 1  # the node's own process only
    with importing(tmp_path / "absent", report):  # no node here: nothing written
        pass
    assert not (tmp_path / "absent").exists()
