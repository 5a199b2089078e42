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
Lags are published as *ages*: a worker's snapshot holds the moment its follower was last
known current (0: current now), and the scrape turns the oldest into seconds, so a snapshot a
second old still gives the lag at the scrape.  What only a database round trip tells (the
role and replication lag of the member the node reads from) is observed when ``/metrics``,
``/api/stats`` or ``/readyz`` is answered, never on a resolution (:class:`MemberWatch`).

Processes other than the workers may share the directory: ``idis import`` writes its progress
there (kind ``import``), so that the node it loads into shows it.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import fcntl
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

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
    "idis_import_records": (
        "Records of idis import runs into this node's database, by result "
        "(loaded, unchanged: of loaded those already stored so, rejected)",
        ("result",),
    ),
    "idis_leader_changes": (
        "Times the database member this node reads from was seen to turn from standby to "
        "leader or back (a takeover or switchover involving this site), at scrapes and "
        "readiness probes",
        (),
    ),
}
"""Counter name (without ``_total``): help and label names."""

SUM, MAX, AGE, OWN = "sum", "max", "age", "own"
"""How a gauge is summed over the live processes: added up; the largest; as an age (each
process reports the moment it was last current, 0 for now: the scrape publishes the largest
``now - moment``); or the scraping process's own value only (node-wide observations)."""

GAUGES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "idis_cache_entries": (
        "Entries a cache layer holds (memory: summed over workers)",
        ("layer",),
        SUM,
    ),
    "idis_workers": ("Worker processes that reported", (), SUM),
    "idis_change_feed_lag_seconds": (
        "Seconds since the slowest worker last read this database's change log to its end "
        "(every change older than this has left the caches)",
        (),
        AGE,
    ),
    "idis_mirror_lag_seconds": (
        "Seconds since the mirror (IDIS_MIRROR__SOURCE) last held everything its source's "
        "change feed had (0 while it is current)",
        (),
        AGE,
    ),
    "idis_database_reachable": (
        "1 if the database member this node reads from answered at the last observation",
        (),
        OWN,
    ),
    "idis_database_leader": (
        "1 if the database member this node reads from is the leader (primary), 0 a standby",
        (),
        OWN,
    ),
    "idis_replication_lag_seconds": (
        "Seconds of replication the standby this node reads from has received but not applied "
        "(0 on a leader)",
        (),
        OWN,
    ),
    "idis_import_running": ("idis import processes loading into this node now", (), SUM),
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
        self._untimed: list[tuple[Labels, Labels, Callable[[], int]]] = []
        self.directory: Path | None = None
        self.kind = "worker"
        """``worker``, or what else this process is (``import``): only workers count in
        ``idis_workers``."""
        self.member = MemberWatch(None)
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

    def untimed(self, door: str, operation: str, labels: Labels, count: Callable[[], int]) -> None:
        """Requests a door answers without timing them, as many as ``count()`` says: a
        rendered answer written to the socket at once, well under the first bucket.  They are
        ``idis_requests`` under ``labels``, and observations of ``door``/``operation`` in the
        first bucket (at most 0.1 ms) that add nothing to the histogram's sum."""
        self.histogram(door, operation)
        self._untimed.append((labels, (door, operation), count))

    def snapshot(self) -> dict[str, Any]:
        """This process's counts, as written to its file (lists: JSON has no tuple keys)."""
        counters = [[REQUESTS, list(k), v] for k, v in dict(self.requests).items()]
        counters += [[n, list(k), v] for (n, k), v in dict(self.counts).items()]
        for probe in self._probes:
            counters += [[n, list(k), v] for n, k, v in probe()]
        gauges = [[n, list(k), v] for probe in self._gauges for n, k, v in probe()]
        quick: defaultdict[Labels, int] = defaultdict(int)
        for labels, histogram, count in self._untimed:
            answered = count()
            counters.append([REQUESTS, list(labels), answered])
            quick[histogram] += answered
        histograms = []
        for k, h in dict(self.durations).items():
            counts = list(h.counts)
            counts[0] += quick[k]
            histograms.append([list(k), counts, h.sum])
        return {
            "kind": self.kind,
            "counters": counters,
            "gauges": gauges,
            "histograms": histograms,
        }

    def share(self, directory: Path) -> None:
        """Write this process's snapshots under ``directory`` from now on, every
        :data:`FLUSH_INTERVAL` seconds (a daemon thread) and at exit; the node-wide
        observations of :attr:`member` go to a file there too."""
        self.directory = directory
        self.member = MemberWatch(directory / MEMBER_FILE)
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
        final = self._file()
        partial = final.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps({"pid": os.getpid(), **self.snapshot()}))
        os.replace(partial, final)  # a scrape reads a whole snapshot or the previous one

    def _file(self) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.kind}-{os.getpid()}.json"

    def close(self) -> None:
        self._stop.set()

    def snapshots(self) -> list[dict[str, Any]]:
        """Every process's latest snapshot (this process's taken now), each with ``alive``;
        this process's also holds the node-wide observations (``own``)."""
        own = {"pid": os.getpid(), "alive": True, **self.snapshot(), "own": self.member.samples()}
        if self.directory is None:
            return [own]
        self.flush()
        found = [own]
        mine = self._file()
        for path in sorted(self.directory.glob("*-*.json")):  # worker-PID, import-PID
            if path == mine:
                continue
            with contextlib.suppress(OSError, ValueError):
                data = orjson.loads(path.read_bytes())
                data["alive"] = pid_alive(int(data["pid"]))
                found.append(data)
        return found


def totals(
    snapshots: list[dict[str, Any]], now: float | None = None
) -> dict[str, dict[Labels, float]]:
    """Counters summed over ``snapshots``, and the live processes' gauges summed as
    :data:`GAUGES` says (ages as seconds before ``now``), by name and labels."""
    now = time.time() if now is None else now
    sums: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
    for snapshot in snapshots:
        for name, labels, value in snapshot["counters"]:
            sums[name][tuple(labels)] += value
        if not snapshot["alive"]:
            continue
        for name, labels, value in snapshot["gauges"]:
            how = GAUGES.get(name, ("", (), SUM))[2]
            key = tuple(labels)
            if how == SUM:
                sums[name][key] += value
                continue
            if how == AGE:
                value = max(0.0, now - value) if value else 0.0
            have = sums[name]
            have[key] = max(have.get(key, value), value)
        for name, labels, value in snapshot.get("own", ()):
            sums[name][tuple(labels)] = value
        if snapshot.get("kind", "worker") == "worker":
            sums["idis_workers"][()] += 1
    return sums


MEMBER_FILE = "member.json"


class MemberWatch:
    """The database member a node reads from as last observed (its role, its replication
    lag) and how often its role changed, kept in ``path`` (shared by the node's processes,
    under a lock, so that a change seen by two workers counts once) or, without one, in this
    process.  Observed by whatever asks the database anyway (``/readyz``) or rarely (a
    scrape): a role that flips and flips back between two observations is not counted."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._state: dict[str, Any] = {}

    def observe(self, leader: bool | None, lag: float = 0.0) -> None:
        """Record what the member said: ``leader`` (None: it did not answer) and ``lag``."""
        with self._locked() as state:
            if leader is not None:
                if state.get("leader") not in (None, leader):
                    state["changes"] = state.get("changes", 0) + 1
                state["leader"], state["lag"] = leader, lag
            state["reachable"] = leader is not None

    def samples(self) -> list[tuple[str, Labels, float]]:
        """The observations as samples (none before the first)."""
        with self._locked(write=False) as state:
            pass
        if "reachable" not in state:
            return []
        found: list[tuple[str, Labels, float]] = [
            ("idis_database_reachable", (), float(state["reachable"])),
            ("idis_leader_changes", (), float(state.get("changes", 0))),
        ]
        if state["reachable"]:
            found.append(("idis_database_leader", (), float(state["leader"])))
            found.append(("idis_replication_lag_seconds", (), float(state["lag"])))
        return found

    @contextlib.contextmanager
    def _locked(self, write: bool = True) -> Iterator[dict[str, Any]]:
        if self._path is None:
            yield self._state
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            raw = os.pread(fd, 1 << 16, 0)
            try:
                state = orjson.loads(raw) if raw else {}
            except ValueError:
                state = {}
            yield state
            if write:
                data = orjson.dumps(state)
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
        finally:
            os.close(fd)  # and with it the lock


def count_batch(metrics: Metrics, codes: Iterable[int]) -> None:
    """Count the items of a batch registration (any door) by their IDIS codes."""
    for code in codes:
        metrics.add("idis_batch_items", ("ok" if code == 1 else "failed",))


class ImportProgress(Protocol):
    loaded: int
    unchanged: int
    rejected: int


@contextlib.contextmanager
def importing(directory: Path, report: ImportProgress) -> Iterator[None]:
    """Show ``report`` (of ``idis import``, filled as it goes) in the metrics of the node that
    shares ``directory``, if one does: this process writes snapshots there as a worker does
    (kind ``import``), so its counts stay in the node's sums after it exits."""
    if not directory.is_dir():  # no node here, or its metrics are off
        yield
        return
    metrics = Metrics()
    metrics.kind = "import"
    metrics.probe(
        lambda: [
            ("idis_import_records", ("loaded",), report.loaded),
            ("idis_import_records", ("unchanged",), report.unchanged),
            ("idis_import_records", ("rejected",), report.rejected),
        ]
    )
    running = [1]
    metrics.gauge(lambda: [("idis_import_running", (), running[0])])
    metrics.share(directory)
    metrics.flush()  # running from the start
    try:
        yield
    finally:
        running[0] = 0
        metrics.close()
        with contextlib.suppress(OSError):
            metrics.flush()


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
        for name, (text, label_names, _) in GAUGES.items():
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
