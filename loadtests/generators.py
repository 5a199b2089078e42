"""The suite's load runs: HTTP throughput with wrk or the Python generator of
:mod:`loadtests.drive`, pinned to the generator's CPUs, with the CPU use of the servers and of
the machine measured over each run.  Results come in one shape, wrk's (see :func:`from_python`),
whichever generator made them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from loadtests import bench_http, drive
from loadtests.loadgen import Distinct, cpu_sample, cpu_usage, run_wrk
from loadtests.mix import FixedMix, Mix, SequenceMix

PREFIX = bench_http.PREFIX
SUFFIX_FORMAT = bench_http.SUFFIX_FORMAT


@contextlib.contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """Run this thread (the in-process Python generator) on ``cpus`` for a while."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def python_run(
    target: str,
    mix: Mix,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    cpus: Sequence[int] | None = None,
    groups: dict[str, Sequence[int]] | None = None,
    check_body: bool = True,
) -> dict[str, Any]:
    """One run of the Python generator, pinned to ``cpus``, with the CPU use of ``groups``
    (process trees) and the machine measured over it.  Ctrl-C aborts the suite."""
    before = cpu_sample()
    with pinned(cpus):
        report = drive.run(
            lambda stop: drive.resolve(
                target,
                mix,
                concurrency=concurrency,
                duration=duration,
                warmup=warmup,
                check_body=check_body,
                stop=stop,
            )
        )
    after = cpu_sample()
    if report["stopped_by"] == "interrupt":
        raise KeyboardInterrupt
    report["cpu"] = own_cpu_apart(
        cpu_usage(before, after, dict(groups or {})), report["generator"]["cpu_share"]
    )
    return report


def own_cpu_apart(cpu: dict[str, float], share: float) -> dict[str, float]:
    """``cpu`` (from :func:`cpu_usage`) with this process's own share, the in-process Python
    generator, moved out of ``other_procs`` into ``generator`` (its children, the servers this
    suite started, cannot be grouped under it, so it is not a group there)."""
    out = dict(cpu)
    out["other_procs"] = round(max(0.0, out.get("other_procs", 0.0) - share), 2)
    out["generator"] = round(share, 2)
    return out


def from_python(label: str, report: dict[str, Any]) -> dict[str, Any]:
    """A resolve report in the shape of a wrk result (what the figures read)."""
    by = report["by_outcome"]
    ok = by.get("found", {}).get("count", 0)
    errors = report["requests"] - ok
    every = by["all"]
    return {
        "label": label,
        "generator": "python",
        "requests": report["requests"],
        "seconds": report["elapsed_s"],
        "rate": round(ok / report["elapsed_s"], 1) if report["elapsed_s"] else 0.0,
        "ok": ok,
        "error_count": errors,
        "errors": {k: v["count"] for k, v in by.items() if k not in ("found", "all")},
        "exhausted": report["exhausted"],
        "p50_ms": every["p50_ms"],
        "p99_ms": every["p99_ms"],
        "max_ms": every["max_ms"],
        "cpu": report["cpu"],
        "generator_cpu_share": report["generator"]["cpu_share"],
        "generator_saturated": report["generator"]["saturated"],
    }


class Load:
    """HTTP throughput runs with wrk or the Python generator, pinned like bench_http."""

    def __init__(
        self,
        kind: str,
        concurrency: int,
        gen_cpus: Sequence[int] | None,
    ) -> None:
        self.kind = kind
        self.concurrency = concurrency
        self.gen_cpus = gen_cpus

    def fixed(
        self,
        label: str,
        base: str,
        path: str,
        expected: bytes,
        *,
        duration: float,
        warmup: float,
        groups: dict[str, Sequence[int]],
    ) -> dict[str, Any]:
        """Requests for one path; every answer must be 200 with exactly ``expected``."""
        if self.kind == "wrk":
            return self._wrk(
                label, base + path, expected, duration=duration, warmup=warmup, groups=groups
            )
        report = python_run(
            base,
            FixedMix(path),
            concurrency=self.concurrency,
            duration=duration,
            warmup=warmup,
            cpus=self.gen_cpus,
            groups=groups,
            check_body=False,  # checked below, exactly
        )
        out = from_python(label, report)
        return out

    def distinct(
        self,
        label: str,
        base: str,
        ids: range,
        warm: range,
        *,
        duration: float,
        warmup: float,
        groups: dict[str, Sequence[int]],
    ) -> dict[str, Any]:
        """``88.100.1/SN%08d`` for each of ``ids`` in order, never one twice."""
        api = "/api/handles/" + PREFIX + "/"
        if self.kind == "wrk":
            return self._wrk(
                label,
                base,
                b'{"responseCode":1,"handle":"' + PREFIX.encode() + b"/",
                duration=duration,
                warmup=warmup if len(warm) else 0.0,
                groups=groups,
                distinct=Distinct(api, SUFFIX_FORMAT, ids.start, len(ids)),
                warm=Distinct(api, SUFFIX_FORMAT, warm.start, len(warm)),
            )
        if warmup > 0 and len(warm):
            python_run(
                base,
                SequenceMix(warm, lambda i: api + SUFFIX_FORMAT % i),
                concurrency=self.concurrency,
                duration=warmup,
                cpus=self.gen_cpus,
            )
        report = python_run(
            base,
            SequenceMix(ids, lambda i: api + SUFFIX_FORMAT % i),
            concurrency=self.concurrency,
            duration=duration,
            cpus=self.gen_cpus,
            groups=groups,
        )
        return from_python(label, report)

    def _wrk(
        self,
        label: str,
        url: str,
        expected: bytes,
        *,
        duration: float,
        warmup: float,
        groups: dict[str, Sequence[int]],
        distinct: Distinct | None = None,
        warm: Distinct | None = None,
    ) -> dict[str, Any]:
        """A wrk warm-up of ``warmup`` seconds (on ``warm`` if given), then the measured run."""
        if warmup > 0:
            run_wrk(
                label + " warm-up",
                url,
                expected,
                concurrency=self.concurrency,
                duration=warmup,
                distinct=warm,
                cpus=self.gen_cpus,
            )
        result = run_wrk(
            label,
            url,
            expected,
            concurrency=self.concurrency,
            duration=duration,
            distinct=distinct,
            cpus=self.gen_cpus,
            cpu_groups=groups,
        ).as_dict()
        result["generator"] = "wrk"
        return result
