"""Report arithmetic shared by the load generator and the benchmark suite.

Latencies are kept exactly (one integer of microseconds per request, in an ``array``), and
percentiles use the nearest-rank method: the p-th percentile of n sorted samples is the sample
of rank ``ceil(p / 100 * n)``, so it is always a latency that was measured.  A run is bounded
in count, so the samples fit in memory (8 bytes each).
"""

from __future__ import annotations

import math
import os
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
SATURATED = 0.85
"""Share of one core above which the generator says it may be the bottleneck."""


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``ordered`` (sorted ascending).

    0.0 for no samples.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    n = len(ordered)
    if n == 0:
        return 0.0
    rank = math.ceil(p / 100.0 * n - 1e-9)
    return float(ordered[min(n, max(1, rank)) - 1])


def pct_key(p: float) -> str:
    """``50 -> "p50"``, ``99.9 -> "p999"``: the name of a percentile in reports."""
    return "p" + (f"{p:g}".replace(".", ""))


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count); 0.0 for none."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return 0.0
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def rate(count: int, seconds: float) -> float:
    """Events per second; 0.0 when no time passed."""
    return count / seconds if seconds > 0 else 0.0


def summarise_latencies(samples_us: Sequence[int], seconds: float) -> dict[str, float]:
    """Count, rate over ``seconds``, mean, max and :data:`PERCENTILES` (milliseconds)."""
    ordered = sorted(samples_us)
    n = len(ordered)
    out: dict[str, float] = {
        "count": n,
        "per_s": round(rate(n, seconds), 1),
        "mean_ms": round(sum(ordered) / n / 1000, 3) if n else 0.0,
        "max_ms": round(ordered[-1] / 1000, 3) if n else 0.0,
    }
    for p in PERCENTILES:
        out[pct_key(p) + "_ms"] = round(percentile(ordered, p) / 1000, 3)
    return out


@dataclass
class Recorder:
    """Latencies by outcome (``"found"``, ``"not found"``, ``"error 503"``, ...)."""

    samples: dict[str, array[int]] = field(default_factory=dict)
    timeline: list[int] = field(default_factory=list)
    """Completions per whole second since :attr:`started`."""
    started: float = field(default_factory=time.monotonic)

    def add(self, outcome: str, latency_us: int, now: float | None = None) -> None:
        """Record one completed request (``now``: its time.monotonic(), if known)."""
        bucket = self.samples.get(outcome)
        if bucket is None:
            bucket = self.samples[outcome] = array("q")
        bucket.append(latency_us)
        second = int((time.monotonic() if now is None else now) - self.started)
        timeline = self.timeline
        while len(timeline) <= second:
            timeline.append(0)
        timeline[second] += 1

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.samples.values())

    def count_of(self, outcome: str) -> int:
        bucket = self.samples.get(outcome)
        return len(bucket) if bucket is not None else 0

    def summary(self, seconds: float) -> dict[str, Any]:
        """Per outcome and for all together: :func:`summarise_latencies` over ``seconds``."""
        every = array("q")
        out: dict[str, Any] = {}
        for outcome in sorted(self.samples):
            out[outcome] = summarise_latencies(self.samples[outcome], seconds)
            every.extend(self.samples[outcome])
        out["all"] = summarise_latencies(every, seconds)
        return out


def machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])
    return (total - idle) / tick, total / tick


@dataclass
class CpuMeter:
    """This process's CPU time over wall time: how busy the load generator itself is.

    A Python generator runs on one core (the GIL), so a share near 1.0 means it, not the
    server, may set the pace; :attr:`saturated` says so above :data:`SATURATED`.  The share of
    the whole machine that was busy is reported beside it: near 1.0, every core was taken and
    the generator and the server were competing for them.
    """

    wall0: float = field(default_factory=time.monotonic)
    cpu0: float = field(default_factory=time.process_time)
    machine0: tuple[float, float] | None = field(default_factory=machine_busy)

    def restart(self) -> None:
        """Measure from now on (after a warm-up)."""
        self.wall0, self.cpu0, self.machine0 = time.monotonic(), time.process_time(), machine_busy()

    def share(self) -> float:
        """CPU seconds per wall second since the meter started (may exceed 1 with threads)."""
        wall = time.monotonic() - self.wall0
        return (time.process_time() - self.cpu0) / wall if wall > 0 else 0.0

    def report(self) -> dict[str, Any]:
        share = self.share()
        out: dict[str, Any] = {
            "cpu_share": round(share, 3),
            "saturated": share > SATURATED,
            "cpus_of_machine": os.cpu_count(),
        }
        now = machine_busy()
        if self.machine0 is not None and now is not None and now[1] > self.machine0[1]:
            out["machine_busy"] = round(
                (now[0] - self.machine0[0]) / (now[1] - self.machine0[1]), 3
            )
        return out


def generator_verdict(cpu: dict[str, Any]) -> str:
    """One line on the generator's own load, for the end of a report."""
    share = cpu.get("cpu_share", 0.0)
    text = f"load generator used {share:.0%} of a core"
    if cpu.get("saturated"):
        return (
            text + f" (> {SATURATED:.0%}): SATURATED, the figures may be the generator's limit,"
            " not the server's; run it from another machine or with several processes"
        )
    text += " (not saturated)"
    busy = cpu.get("machine_busy")
    if busy is not None:
        text += f"; the machine's CPUs were {busy:.0%} busy"
        if busy > 0.95:
            text += " (all taken: generator and server competed for them)"
    return text
