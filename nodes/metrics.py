"""A node's Prometheus metrics, summed over its worker processes.

Counting sits on the hot paths (a cached REST or native answer), so it is a plain ``+= 1`` on a
dict of this process: prometheus-client's multiprocess values write an mmap under a lock on
every increment, several times the cost.  Each worker writes a snapshot of its counters to its
own file under the node's metrics directory (``<data dir>/metrics``, made fresh by ``idis
serve`` before the workers start) every :data:`FLUSH_INTERVAL` seconds, and at once when it
answers a scrape; :class:`NodeCollector` sums the files into prometheus samples at scrape time.
A worker that died keeps its last counts in the sums (counters stay monotone) but not its
gauges.  A scrape so sees the other workers' counts at most :data:`FLUSH_INTERVAL` old.

Counters held elsewhere (the chain's layers, the walker, the throttle, the authenticator) are
read at snapshot time through *probes*, so those hot paths carry no metrics code at all.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from nodes.processes import pid_alive

FLUSH_INTERVAL = 1.0

DOOR = "idis.door"
"""ASGI scope key a front end sets to name itself (the GS1 front: ``gs1``); default ``rest``."""

REQUESTS = "idis_requests"
DURATION = "idis_request_duration_seconds"

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    REQUESTS: (
        "Requests answered, by door, operation, outcome and the layer that answered",
        ("door", "operation", "outcome", "layer"),
    ),
    "idis_cache_hits": ("Lookups a cache layer answered", ("layer",)),
    "idis_cache_misses": ("Lookups a cache layer passed on", ("layer",)),
    "idis_walks": ("Resolutions that went past the caches (coalesced misses)", ()),
    "idis_upstream_requests": ("Requests to other nodes while walking the hierarchy", ()),
    "idis_upstream_failures": ("Upstream requests that failed", ()),
    "idis_walk_early_requests": (
        "Early requests on prefix referrals (IDIS_FEDERATION__EARLY_REQUESTS), by result",
        ("result",),
    ),
    "idis_authentication_failures": ("Credentials refused", ()),
    "idis_throttle_counted": ("Events counted against rate limits", ("kind",)),
    "idis_throttle_refused": ("Requests refused by rate limits", ("kind",)),
    "idis_batch_items": ("Items of batch registrations, by result", ("result",)),
    "idis_quota_refusals": ("Requests refused by a quota, by IDIS code (603-605)", ("code",)),
}
"""Counter name (without ``_total``): help and label names."""

GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "idis_cache_entries": ("Entries a cache layer holds (memory: summed over workers)", ("layer",)),
    "idis_workers": ("Worker processes that reported", ()),
}

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
"""Latency buckets in seconds: a cached answer takes tens of microseconds, a walk seconds."""

DURATION_LABELS = ("door", "operation")

Labels = tuple[str, ...]
Probe = Callable[[], Iterable[tuple[str, Labels, float]]]


class Histogram:
    """Bucket counts of one label set; :meth:`observe` is a bisect and two additions."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


def status_class(status: int) -> str:
    """An HTTP status as an outcome label: ``2xx`` ... ``5xx``."""
    return f"{status // 100}xx"


def code_class(code: int) -> str:
    """A Handle response code as an outcome label (few values: bounded)."""
    if code == 1:
        return "success"
    if code in (100, 200, 202):
        return "not_found"
    if code in (301, 302, 303):
        return "referral"
    if code == 3:
        return "unavailable"
    if code in (400, 401, 402, 403, 404, 406, 408):
        return "refused"
    return "error"


def layer_of(source: str) -> str:
    """The layer named by an answer's source (resolver/chain.py): a walk's path is ``walk``."""
    if source.startswith("stale"):
        return "stale"
    if source in ("memory", "redis", "store"):
        return source
    return "walk"


class Metrics:
    """The counters of one process, and the file its snapshots go to (none: this process
    only, as in a CLI command or an in-process test)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.requests: defaultdict[Labels, int] = defaultdict(int)
        """``(door, operation, outcome, layer)``: counted by the doors themselves."""
        self.durations: dict[Labels, Histogram] = {}
        self.counts: defaultdict[tuple[str, Labels], float] = defaultdict(float)
        self._probes: list[Probe] = []
        self._gauges: list[Probe] = []
        self.directory: Path | None = None
        self._stop = threading.Event()

    def histogram(self, door: str, operation: str) -> Histogram:
        """The latency histogram of ``door`` and ``operation``: fetch it once, observe often."""
        key = (door, operation)
        found = self.durations.get(key)
        if found is None:
            found = self.durations[key] = Histogram()
        return found

    def add(self, name: str, labels: Labels = (), amount: float = 1) -> None:
        self.counts[(name, labels)] += amount

    def probe(self, counters: Probe) -> None:
        """Read ``counters`` (name, labels, value) at every snapshot."""
        self._probes.append(counters)

    def gauge(self, values: Probe) -> None:
        self._gauges.append(values)

    def snapshot(self) -> dict[str, Any]:
        """This process's counts, as written to its file (lists: JSON has no tuple keys)."""
        counters = [[REQUESTS, list(k), v] for k, v in dict(self.requests).items()]
        counters += [[n, list(k), v] for (n, k), v in dict(self.counts).items()]
        for probe in self._probes:
            counters += [[n, list(k), v] for n, k, v in probe()]
        gauges = [[n, list(k), v] for probe in self._gauges for n, k, v in probe()]
        histograms = [[list(k), list(h.counts), h.sum] for k, h in dict(self.durations).items()]
        return {"counters": counters, "gauges": gauges, "histograms": histograms}

    def share(self, directory: Path) -> None:
        """Write this process's snapshots under ``directory`` from now on, every
        :data:`FLUSH_INTERVAL` seconds (a daemon thread) and at exit."""
        self.directory = directory
        thread = threading.Thread(target=self._flush_loop, name="metrics", daemon=True)
        thread.start()
        atexit.register(self.flush)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            with contextlib.suppress(Exception):  # a full disk must not stop the worker
                self.flush()

    def flush(self) -> None:
        if self.directory is None:
            return
        final = self.directory / f"worker-{os.getpid()}.json"
        partial = final.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps({"pid": os.getpid(), **self.snapshot()}))
        os.replace(partial, final)  # a scrape reads a whole snapshot or the previous one

    def close(self) -> None:
        self._stop.set()

    def snapshots(self) -> list[dict[str, Any]]:
        """Every worker's latest snapshot (this process's taken now), each with ``alive``."""
        if self.directory is None:
            return [{"pid": os.getpid(), "alive": True, **self.snapshot()}]
        self.flush()
        found = []
        for path in sorted(self.directory.glob("worker-*.json")):
            with contextlib.suppress(OSError, ValueError):
                data = orjson.loads(path.read_bytes())
                data["alive"] = pid_alive(int(data["pid"]))
                found.append(data)
        return found


def totals(snapshots: list[dict[str, Any]]) -> dict[str, dict[Labels, float]]:
    """Counters and live workers' gauges summed over ``snapshots``, by name and labels."""
    sums: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
    for snapshot in snapshots:
        for name, labels, value in snapshot["counters"]:
            sums[name][tuple(labels)] += value
        if snapshot["alive"]:
            for name, labels, value in snapshot["gauges"]:
                sums[name][tuple(labels)] += value
            sums["idis_workers"][()] += 1
    return sums


class NodeCollector:
    """Turns the workers' snapshots into prometheus samples at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshots = self._metrics.snapshots()
        sums = totals(snapshots)
        for name, (text, label_names) in COUNTERS.items():
            counter = CounterMetricFamily(name, text, labels=label_names)
            for labels, value in sorted(sums.get(name, {}).items()):
                counter.add_metric(labels, value)
            yield counter
        for name, (text, label_names) in GAUGES.items():
            gauge = GaugeMetricFamily(name, text, labels=label_names)
            for labels, value in sorted(sums.get(name, {}).items()):
                gauge.add_metric(labels, value)
            yield gauge
        yield _histogram(snapshots)


def _histogram(snapshots: list[dict[str, Any]]) -> HistogramMetricFamily:
    merged: dict[Labels, tuple[list[int], float]] = {}
    for snapshot in snapshots:
        for labels, counts, total in snapshot["histograms"]:
            key = tuple(labels)
            have, have_sum = merged.get(key, ([0] * len(counts), 0.0))
            merged[key] = ([a + b for a, b in zip(have, counts, strict=True)], have_sum + total)
    family = HistogramMetricFamily(
        DURATION, "Time to answer a request, in seconds", labels=DURATION_LABELS
    )
    for labels, (counts, total) in sorted(merged.items()):
        cumulative, running = [], 0
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(labels, cumulative, total)
    return family


def registry(collector: NodeCollector) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(collector)
    return found
