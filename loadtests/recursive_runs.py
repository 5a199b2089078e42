"""The runs of :mod:`loadtests.bench_recursive`: its options, the checks before the runs, the
warm figures (wrk, in slices taken in turn) and the cold passes (one client, one request at a
time, the figures in turn), each round's raw results."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from loadtests.client import Connection, get_request, watchdog
from loadtests.loadgen import WrkResult, run_wrk
from loadtests.recursive_cold import (
    COLD_FIGURES,
    CPU_GROUPS,
    Cold,
    SchedMeter,
    backend_pids,
)
from loadtests.recursive_federation import (
    COLD_SUFFIX,
    COUNTERS,
    HOST,
    LOCAL_HOSTS,
    NODES,
    PREFIX,
    REQUEST_TIMEOUT,
    Federation,
    Node,
    Span,
    build_record,
    cold_prefix,
    get,
    handle_text,
    industry_prefix,
    plan_ids,
    say,
    set_affinity,
)
from loadtests.stats import median, percentile


@dataclass
class Options:
    """What :func:`loadtests.bench_recursive.run_benchmark` takes (the command line's options)."""

    duration: float = 10.0
    """Seconds of each warm figure per round."""
    warm_slices: int = 5
    """Warm runs per figure per round, (a) and (b) in turn: the duration split between them
    (fewer when the duration is shorter than this many seconds)."""
    warmup: float = 2.0
    """Seconds of warm-up before each warm run and (at most) before each cold pass."""
    rounds: int = 3
    concurrency: int = 32
    """Connections of the warm runs."""
    rows: int = 200_000
    """Identifiers under 88.100.1 (at least as many as the cold passes use)."""
    cold: int = 3_000
    """Requests of each cold figure per round: never-requested handles, one at a time."""
    cold_seconds: float = 60.0
    """A bound on each cold pass's time (it ends sooner when its handles run out)."""
    block: int = 50
    """Cold requests of one figure in a row before the next figure's turn: short enough that a
    figure and its baseline see the same machine, long enough that each node runs warm."""
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    pin: bool = True
    """Warm runs: the nodes on all CPUs but the last, wrk on the last."""
    pin_cold: bool = False
    """Cold passes pinned that way too (by default nothing is pinned: see the README)."""
    profile: str | None = None
    """A directory: add a cold pass of (c) and (e) with py-spy recording the recursive node."""

    def validate(self) -> None:
        if urlsplit(self.postgres).hostname not in LOCAL_HOSTS:
            raise ValueError("--postgres must be on 127.0.0.1")
        if not (1 <= self.duration <= 600 and 0 <= self.warmup <= 60 and 1 <= self.rounds <= 10):
            raise ValueError("--duration must be 1-600 s, --warmup 0-60 s, --rounds 1-10")
        if not 1 <= self.concurrency <= 256:
            raise ValueError("--concurrency must be 1-256")
        if not 1 <= self.warm_slices <= 60:
            raise ValueError("--warm-slices must be 1-60")
        if not (100 <= self.cold <= 100_000 and 5 <= self.cold_seconds <= 3600):
            raise ValueError("--cold must be 100-100000, --cold-seconds 5-3600")
        if not 1 <= self.block <= self.cold:
            raise ValueError("--block must be 1 to --cold")
        if not 1_000 <= self.rows <= 10_000_000:
            raise ValueError("--rows must be 1000-10000000")


def cpu_plan(pin: bool) -> tuple[list[int] | None, list[int] | None]:
    """(node CPUs, load generator CPUs): the generator on the last CPU, the nodes on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return cpus[:-1], [cpus[-1]]


class Bench:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.o = options
        self.passes = options.rounds + (1 if options.profile else 0)
        self.plan = plan_ids(self.passes, options.cold)
        self.all_cpus = sorted(os.sched_getaffinity(0))
        self.node_cpus, self.gen_cpus = cpu_plan(options.pin)
        self.fed = Federation(
            workdir,
            options.postgres,
            max(options.rows, self.plan.rows_needed),
            self.plan.cold_prefixes + 2,  # the last two for the checks before the runs
            self.plan.industries + 1,  # the last likewise
        )
        self.report: dict[str, Any] = {
            "settings": asdict(options)
            | {
                "rows": self.fed.rows,
                "enterprise_prefixes": self.fed.cold_prefixes,
                "industry_prefixes": self.fed.industries,
                "node_cpus": self.node_cpus,
                "generator_cpus": self.gen_cpus,
                "cpus": os.cpu_count(),
                "warm_generator": "wrk, 1 thread, keep-alive connections",
                "cold_client": "one Python client (uvloop, loadtests.client), one request at a"
                " time, the figures in turn",
                "workers_per_node": 1,
            },
            "rounds": [],
            "checks": {"counters": []},
        }

    def node(self, name: str) -> Node:
        return self.fed.nodes[name]

    def place(self, pinned: bool) -> list[int] | None:
        """Pin the nodes to their CPUs, or let them run anywhere; the load generator's CPUs."""
        cpus = self.node_cpus if pinned and self.node_cpus else self.all_cpus
        for node in self.fed.nodes.values():
            set_affinity(node.pid, cpus)
        return self.gen_cpus if pinned else None

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: self.node(name).counters() for name in NODES}

    # -- checks --

    def check_before(self) -> None:
        """Both nodes give the same bytes for a sample; a fully cold walk takes the whole way;
        under a new enterprise prefix, once 88.100's delegation is known, it starts at the
        secondary; a repeated request is answered from memory; an unknown identifier is not
        found."""
        from resolver.render import public_resolution

        recursive, secondary = self.node("recursive"), self.node("secondary")
        problems: list[str] = []
        unused = (  # prefixes no run uses
            f"{industry_prefix(self.plan.industries)}.1",
            cold_prefix(self.plan.cold_prefixes),  # teaches 88.100's delegation
            cold_prefix(self.plan.cold_prefixes + 1),
        )
        walks = []
        for prefix in unused:
            _, _, headers = get(recursive.port, f"/api/handles/{prefix}/{COLD_SUFFIX}")
            walks.append(unquote(headers.get("x-idis-source", "")).split(" -> "))
        self.report["checks"]["full_walk_path"] = walks[0]
        self.report["checks"]["new_prefix_path"] = walks[2]
        # The secondary holds 0.NA/P: its answer for the identifier stands without the record.
        if len(walks[0]) != 2 or not walks[0][0].endswith(":303"):
            problems.append(f"a fully cold walk went {walks[0]}, not top level then secondary")
        if len(walks[2]) != 2 or not walks[2][0].endswith("delegation cached"):
            problems.append(
                f"a new prefix's walk went {walks[2]}, not from the delegation {walks[1]} taught"
            )
        for i in [self.plan.warm_id, *self.plan.sample]:
            text = handle_text(i)
            expected = public_resolution(build_record(text, self.fed.seeded_at))
            for node in (secondary, recursive):
                status, body, _ = get(node.port, "/api/handles/" + text)
                if status != 200 or body != expected:
                    problems.append(f"{node.name} {text}: HTTP {status} {body[:160]!r}")
        _, _, headers = get(recursive.port, "/api/handles/" + handle_text(self.plan.warm_id))
        if headers.get("x-idis-source") != "memory":
            problems.append(f"recursive: a repeated request was not served from memory: {headers}")
        status, body, _ = get(recursive.port, f"/api/handles/{PREFIX}/NO-SUCH-ID")
        if status != 404 or b'"responseCode":100' not in body:
            problems.append(f"recursive {PREFIX}/NO-SUCH-ID: HTTP {status} {body[:100]!r}")
        self.report["checks"]["before"] = problems or "ok"
        if problems:
            raise RuntimeError("wrong answers before the runs:\n  " + "\n  ".join(problems))

    # -- warm figures --

    def warm(self) -> dict[str, Any]:
        """(a) and (b): a warm-up of each, then ``--warm-slices`` runs of each in turn, together
        ``--duration`` seconds per figure, so that both see the same machine."""
        path = "/api/handles/" + handle_text(self.plan.warm_id)
        figures = {"direct_warm": self.node("secondary"), "recursive_warm": self.node("recursive")}
        bodies = {}
        for node in figures.values():
            status, body, headers = get(node.port, path)
            if status != 200 or headers.get("x-idis-source") != "memory":
                raise RuntimeError(f"{node.name}: {path} not from memory: {status} {headers}")
            bodies[node.name] = body
        groups: dict[str, Sequence[int]] = {n: [self.node(n).pid] for n in NODES}
        common: dict[str, Any] = {
            "concurrency": self.o.concurrency,
            "cpus": self.place(pinned=self.o.pin),
        }
        if self.o.warmup > 0:
            for key, node in figures.items():
                url, body = node.base + path, bodies[node.name]
                run_wrk(f"{key} warm-up", url, body, duration=self.o.warmup, **common)
        # A wrk run lasts whole seconds, at least one: fewer slices for a short duration.
        slices = max(1, min(self.o.warm_slices, int(self.o.duration)))
        seconds = self.o.duration / slices
        runs: dict[str, list[WrkResult]] = {key: [] for key in figures}
        order = list(figures.items())
        for k in range(slices):
            for key, node in order[k % 2 :] + order[: k % 2]:  # alternate which goes first
                url, body = node.base + path, bodies[node.name]
                runs[key].append(
                    run_wrk(key, url, body, duration=seconds, cpu_groups=groups, **common)
                )
        out = {key: _merge(results) for key, results in runs.items()}
        for key, fig in out.items():
            say(
                f"  {key}: {fig['rate']:,.0f} req/s, p50 {fig['p50_ms']:.2f} ms,"
                f" p99 {fig['p99_ms']:.2f} ms, {fig['error_count']} errors"
            )
        return out

    # -- cold figures --

    def cold(self, n: int, figures: Sequence[Cold] = COLD_FIGURES) -> dict[str, Any]:
        """One cold pass of ``figures`` over round ``n``'s ranges: a warm-up over the warm-up
        ranges, then the measured ranges, the figures' requests taken in turn."""
        own = os.sched_getaffinity(0)
        client_cpus = self.place(pinned=self.o.pin_cold)
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        try:
            spans = {f.key: getattr(self.plan, f.span)[n] if f.span else None for f in figures}
            if self.o.warmup > 0:
                self._interleave(figures, spans, warm=True, meter=None)
            dbs = list(self.fed.created)
            groups: dict[str, Sequence[int]] = {m: [self.node(m).pid] for m in NODES}
            groups["postgres"] = asyncio.run(backend_pids(self.fed.admin_dsn, dbs))
            meter = SchedMeter(groups)
            before = self.counters()
            try:
                out = self._interleave(figures, spans, warm=False, meter=meter)
            finally:
                meter.close()
            after = self.counters()
        finally:
            os.sched_setaffinity(0, own)
        self._check_counters(figures, out, before, after)
        for f in figures:
            fig = out[f.key]
            say(
                f"  {f.label}: {fig['ok']:,} requests, p50 {fig['p50_ms']:.3f} ms,"
                f" p99 {fig['p99_ms']:.2f} ms, {fig['errors']} errors;"
                f" CPU us/request {fig['cpu_us']}"
            )
        return out

    def _interleave(
        self,
        figures: Sequence[Cold],
        spans: dict[str, Span | None],
        *,
        warm: bool,
        meter: SchedMeter | None,
    ) -> dict[str, Any]:
        ranges = {
            key: (span.warm if warm else span.measured) if span else None
            for key, span in spans.items()
        }
        count = min(len(r) for r in ranges.values() if r is not None)
        seconds = min(self.o.warmup, self.o.cold_seconds) if warm else self.o.cold_seconds
        requests: dict[str, list[bytes]] = {}
        for f in figures:
            numbers = ranges[f.key] or range(count)
            host = f"{HOST}:{self.node(f.node).port}"
            requests[f.key] = [get_request(host, f.path(i)) for i in numbers[:count]]

        import uvloop

        return uvloop.run(self._requests(figures, requests, count, seconds, meter))

    async def _requests(
        self,
        figures: Sequence[Cold],
        requests: dict[str, list[bytes]],
        count: int,
        seconds: float,
        meter: SchedMeter | None,
    ) -> dict[str, Any]:
        ports = {f.key: self.node(f.node).port for f in figures}
        conns = [await Connection.open(HOST, ports[f.key]) for f in figures]
        guard = asyncio.ensure_future(watchdog(conns, REQUEST_TIMEOUT))
        latencies: dict[str, list[int]] = {f.key: [] for f in figures}
        errors = dict.fromkeys(latencies, 0)
        failures: dict[str, list[str]] = {f.key: [] for f in figures}
        cpu = {f.key: dict.fromkeys(CPU_GROUPS, 0) for f in figures}
        order = list(enumerate(figures))
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        try:
            block = self.o.block
            for first in range(0, count, block):
                if time.monotonic() > deadline:
                    break
                k = (first // block) % len(order)  # a different figure first each time
                for slot, f in order[k:] + order[:k]:
                    for i in range(first, min(count, first + block)):
                        conn = conns[slot]
                        a = meter.read() if meter else None
                        t0 = time.perf_counter_ns()
                        try:
                            status, body = await conn.request(requests[f.key][i])
                        except (ConnectionError, TimeoutError) as error:
                            errors[f.key] += 1
                            failures[f.key].append(repr(error))
                            conns[slot] = await Connection.open(HOST, ports[f.key])
                            continue
                        t1 = time.perf_counter_ns()
                        b = meter.read() if meter else None
                        if status != 200 or not body.startswith(f.body_start):
                            errors[f.key] += 1
                            failures[f.key].append(f"HTTP {status} {body[:120]!r}")
                            continue
                        latencies[f.key].append(t1 - t0)
                        if a is not None and b is not None:
                            used = cpu[f.key]
                            for group in CPU_GROUPS:
                                used[group] += b.get(group, 0) - a.get(group, 0)
        finally:
            guard.cancel()
            for conn in conns:
                conn.close()
        elapsed = time.monotonic() - started
        out: dict[str, Any] = {}
        for f in figures:
            ordered = sorted(latencies[f.key])
            ok = len(ordered)

            def ms(p: float, ordered: list[int] = ordered) -> float:
                return round(percentile(ordered, p) / 1e6, 4)

            out[f.key] = {
                "ok": ok,
                "errors": errors[f.key],
                "failures": failures[f.key][:5],
                "p50_ms": ms(50),
                "p90_ms": ms(90),
                "p99_ms": ms(99),
                "max_ms": round(ordered[-1] / 1e6, 3) if ordered else 0.0,
                "mean_ms": round(sum(ordered) / max(1, ok) / 1e6, 4),
                "cpu_us": {g: round(v / max(1, ok) / 1e3) for g, v in cpu[f.key].items()},
                "seconds": round(elapsed, 2),
                "ids_available": count,
            }
        return out

    def _check_counters(
        self,
        figures: Sequence[Cold],
        out: dict[str, Any],
        before: dict[str, dict[str, int]],
        after: dict[str, dict[str, int]],
    ) -> None:
        """Each node's counters grew by what the figures' requests should have made them."""
        errors = sum(out[f.key]["errors"] for f in figures)
        for name in NODES:
            for counter in COUNTERS:
                want = sum(
                    f.expect.get(name, {}).get(counter, 0) * (out[f.key]["ok"]) for f in figures
                )
                got = after[name][counter] - before[name][counter]
                # A failed request may or may not have reached the node.
                if abs(got - want) > 3 * errors:
                    self.report["checks"]["counters"].append(
                        f"{name} {counter}: {got} during a cold pass, expected {want}"
                    )

    def round(self, n: int) -> dict[str, Any]:
        return self.warm() | self.cold(n)

    def profiled_pass(self, directory: Path, n: int) -> None:
        """(c) and (e) once more with py-spy recording the recursive node."""
        from loadtests.bench_http import profile_summary

        spy = shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        directory.mkdir(parents=True, exist_ok=True)
        say(f"profiled pass of (c) and (e): py-spy on the recursive node, stacks in {directory}")
        out = directory / "recursive.txt"
        seconds = max(1, int(min(self.o.cold_seconds, 60)))
        record = [spy, "record", "--pid", str(self.node("recursive").pid), "--function"]
        record += ["--rate", "500", "--duration", str(seconds), "--format", "raw"]
        proc = subprocess.Popen(
            [*record, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            keys = ("recursive_cold", "new_prefix", "fully_cold")
            self.cold(n, [f for f in COLD_FIGURES if f.key in keys])
            proc.wait(timeout=seconds + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if out.exists():
            self.report["profile"] = profile_summary(out)

    def run(self) -> dict[str, Any]:
        try:
            self.fed.start()
            self.report["checks"]["seed_seconds"] = round(self.fed.seed_seconds, 1)
            self.check_before()
            for n in range(self.o.rounds):
                say(f"round {n + 1}/{self.o.rounds}")
                self.report["rounds"].append(self.round(n))
            if self.o.profile:
                self.profiled_pass(Path(self.o.profile), self.passes - 1)
        finally:
            self.fed.close()
        return self.report


def _merge(results: Sequence[WrkResult]) -> dict[str, Any]:
    """Slices of one warm figure as one: requests over seconds; the median slice's latency
    percentiles; the mean of their CPU use (the slices are equally long)."""
    seconds = sum(r.seconds for r in results)
    ok = sum(r.ok for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r.errors.items():
            errors[name] = errors.get(name, 0) + count
    cpu: dict[str, float] = {}
    for r in results:
        for name, cores in r.cpu.items():
            cpu[name] = cpu.get(name, 0.0) + cores / len(results)
    return {
        "label": results[0].label,
        "slices": len(results),
        "requests": sum(r.requests for r in results),
        "seconds": round(seconds, 3),
        "rate": round(ok / seconds, 1) if seconds else 0.0,
        "ok": ok,
        "errors": errors,
        "error_count": sum(errors.values()),
        "p50_ms": median([r.p50_ms for r in results]),
        "p99_ms": median([r.p99_ms for r in results]),
        "max_ms": max(r.max_ms for r in results),
        "cpu": {k: round(v, 3) for k, v in cpu.items()},
        "slice_rates": [r.rate for r in results],
    }
