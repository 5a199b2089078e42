"""The sums of workers' snapshots (nodes/metrics.py) and the labels of outcomes and layers."""

from __future__ import annotations

from pathlib import Path

import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nodes.metrics import (
    REQUESTS,
    Metrics,
    NodeCollector,
    code_class,
    layer_of,
    registry,
    status_class,
    totals,
)

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
