"""``idis bench``: the performance suite, every figure beside its baseline, in one run.

Starts what it needs on 127.0.0.1 (a scratch PostgreSQL database on the local server, created
and dropped here; a node, ``python -m nodes.cli serve``; the reference servers of
:mod:`loadtests.loadgen`; the federation of :mod:`loadtests.bench_recursive`) and measures:

============  =====================================  ================================  ========
key           figure                                 baseline (same run)               target
============  =====================================  ================================  ========
ceiling_*     the load generators' own ceilings      (constant uvloop server)          info
cached        HTTP resolution, cached identifier     bare FastAPI route of the node    >= 1.0
native_udp    native resolution over UDP, cached     raw uvloop UDP echo, same bytes   >= 0.5
native_tcp    native resolution over TCP, cached     cached REST resolution            >= 0.8
native_unc..  native resolution, uncached            uncached REST resolution          info
hostile       the same, 1,000 idle connections and   the same without them             >= 0.8
              a slow-header client attached
asgi          raw ASGI app, constant bytes, under    (information: the HTTP ceiling)   info
              uvicorn run as the node runs it
cached_asgi   HTTP resolution, cached identifier     raw ASGI app (same server)        >= 0.9
asgi_same     the raw ASGI app sending the cached    raw ASGI app, constant bytes      info
              answer's bytes and headers
cached_same   HTTP resolution, cached identifier     asgi_same: the app's own work     info
gs1           GS1 Digital Link 307 redirect, cached  cached HTTP resolution            >= 0.8
uncached      HTTP resolution, uncached identifiers  bare route                        >= 0.5
uncached_pg   the same                               raw asyncpg primary-key lookups   info
logins        cached resolution under failed logins  the same without them             >= 0.8
quotas        cached resolution, daily resolution    the same node without quotas      >= 0.95
              quotas on (never reached)
mix           Zipf mix with 5% unknown identifiers   bare route                        info
recursive:*  recursive resolution, warm and cold    direct lookup at the secondary    0.9 / 3
register      batch registration (POST /api/batch)   plain COPY of the same rows       info
templates     batch registration, templated records  the same records untemplated      >= 0.8
import        ``idis import``                        plain COPY of the same rows       >= 0.8
storage       PostgreSQL bytes per identifier        raw payload bytes (handle+values) info
scale10x_*    uncached lookup p50/p99 at 10x rows    the same at the base row count    <= 1.5
dns_cached    DNS NAPTR, cached names (dnsperf)      unbound, local-data, same names   >= 1.0
dns_uncached  DNS NAPTR, names never asked before    uncached REST on the same node    info
crosshost     write-to-visible p99, another host     the same read on the writing host p99<=1s
takeover      writes back after the leader site is   Patroni's ttl (20 s: no takeover  <= 1.5
              SIGKILLed (national tier, Patroni)     can be sooner)                    (30 s)
switchover    write pause of a planned switchover    longest write gap, quiet window   <= 5 s
lost          acknowledged writes lost (kill)        acknowledged writes               0
sync_cost     batch registration, synchronous DR     the same, synchronous mode off    info
              copy (national tier, loopback)
sync_cost_    the same, 20 ms round trip between     the same, synchronous mode off    info
20ms          the leader and its standbys
sync_one,     registering one handle alone (median   the same, synchronous mode off    info
sync_one_20ms ms of 10), loopback / 20 ms
============  =====================================  ================================  ========

Targets come from the issues (2: cached, uncached, import; 3: recursive; 10: takeover,
switchover, lost, crosshost; 11: native; 12: templates, quotas; 13: cached_asgi, gs1, dns; 14:
hostile, logins; 15: observe) except ``scale10x`` (lookups should stay flat as the table grows:
the suite's own expectation).  HTTP throughput uses ``wrk`` when it is installed, else the
Python generator of :mod:`loadtests.drive` (the report says which, per figure); latency probes,
registration and the Zipf mix always use the Python generator.  Both generators' ceilings
against a constant server are measured and reported in every run.

``--quick`` shrinks every run to fit in about a minute on a 2-core machine; the full suite
takes about ten minutes.  Reuses :mod:`loadtests.bench_http` (seeding, node processes, byte-for-
byte checks), :mod:`loadtests.loadgen` (wrk, CPU accounting, raw asyncpg),
:mod:`loadtests.bench_import` and :mod:`loadtests.bench_recursive` by calling their functions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import http.client
import io
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtests import bench_dns, bench_http, drive
from loadtests.loadgen import (
    CONSTANT_BODY,
    Distinct,
    GeneratorMissing,
    ReferenceServer,
    cpu_sample,
    cpu_usage,
    find_wrk,
    run_pg,
    run_wrk,
)
from loadtests.mix import FixedMix, Mix, ResolveMix, SequenceMix
from loadtests.shapes import Population
from loadtests.stats import median
from nodes.processes import ServeProcess

HOST = "127.0.0.1"
PREFIX = bench_http.PREFIX
SUFFIX_FORMAT = bench_http.SUFFIX_FORMAT
LOCAL_HOSTS = ("127.0.0.1", "localhost")
STEPS = (
    "http",
    "native",
    "dns",
    "hostile",
    "logins",
    "quotas",
    "observe",
    "register",
    "templates",
    "mix",
    "storage",
    "scale10x",
    "crosshost",
    "import",
    "recursive",
    "failover",
)

# (operator, bound, where the target comes from)
Target = tuple[str, float, str]
CACHED_TARGET: Target = (">=", 1.0, "issue 2")
CEILING_TARGET: Target = (">=", 0.9, "issue 13")
GS1_TARGET: Target = (">=", 0.8, "issue 13")
GS1_GTIN = "09506000134352"
GS1_LINK = "https://brand.example/product"
UNCACHED_TARGET: Target = (">=", 0.5, "issue 2")
IMPORT_TARGET: Target = (">=", 0.8, "issue 2")
WARM_TARGET: Target = (">=", 0.9, "issue 3")
COLD_TARGET: Target = ("<=", 3.0, "issue 3")
FLAT_TARGET: Target = ("<=", 1.5, "suite: flat lookups")
LOGINS_TARGET: Target = (">=", 0.8, "issue 14")
HOSTILE_TARGET: Target = (">=", 0.8, "issue 14")
TAKEOVER_TARGET: Target = ("<=", 1.5, "issue 10: 30 s")
LOST_TARGET: Target = ("<=", 0.0, "issue 10")
SWITCHOVER_LIMIT = 5.0
"""Seconds a planned switchover may pause writes (issue 10)."""
TEMPLATES_TARGET: Target = (">=", 0.8, "issue 12")
QUOTAS_TARGET: Target = (">=", 0.95, "issue 12")
OBSERVE_TARGET: Target = (">=", 0.95, "issue 15")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one suite run (``quick()`` and ``full()`` are the two presets)."""

    mode: str = "full"
    duration: float = 6.0
    warmup: float = 2.0
    rounds: int = 3
    concurrency: int = 32
    rows: int = 600_000
    """Identifiers seeded for the HTTP figures (88.100.1/SN%08d), and the base of scale10x."""
    http_share: float = 0.85
    """Of ``rows``, what the HTTP figures may request (every uncached request a new one); the
    rest is kept for the latency probe of scale10x."""
    register_count: int = 100_000
    register_batch: int = 1000
    register_concurrency: int = 4
    template_count: int = 20_000
    """Identifiers of each templates run (10 typed attributes each)."""
    probe_seconds: float = 5.0
    probe_concurrency: int = 4
    import_rows: int = 200_000
    import_repeat: int = 5
    crosshost_writes: int = 50
    recursive: dict[str, Any] = field(default_factory=dict)
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    generator: str = "auto"
    pin: bool = True
    only: tuple[str, ...] = STEPS


def full() -> Settings:
    return Settings()


def quick() -> Settings:
    return Settings(
        mode="quick",
        duration=1.0,
        warmup=0.0,
        rounds=1,
        rows=40_000,
        http_share=0.7,
        register_count=8_000,
        template_count=4_000,
        probe_seconds=1.0,
        import_rows=50_000,
        import_repeat=1,
        crosshost_writes=15,
        recursive={
            "duration": 1.0,
            "warmup": 0.0,
            "rounds": 1,
            "rows": 2000,
            "cold": 100,
            "cold_seconds": 8.0,
        },
    )


# --- generators -----------------------------------------------------------------------------


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


def _from_python(label: str, report: dict[str, Any]) -> dict[str, Any]:
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
            if warmup > 0:
                run_wrk(
                    label + " warm-up",
                    base + path,
                    expected,
                    concurrency=self.concurrency,
                    duration=warmup,
                    cpus=self.gen_cpus,
                )
            result = run_wrk(
                label,
                base + path,
                expected,
                concurrency=self.concurrency,
                duration=duration,
                cpus=self.gen_cpus,
                cpu_groups=groups,
            ).as_dict()
            result["generator"] = "wrk"
            return result
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
        out = _from_python(label, report)
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
            start = b'{"responseCode":1,"handle":"' + PREFIX.encode() + b"/"
            if warmup > 0 and len(warm):
                run_wrk(
                    label + " warm-up",
                    base,
                    start,
                    concurrency=self.concurrency,
                    duration=warmup,
                    distinct=Distinct(api, SUFFIX_FORMAT, warm.start, len(warm)),
                    cpus=self.gen_cpus,
                )
            result = run_wrk(
                label,
                base,
                start,
                concurrency=self.concurrency,
                duration=duration,
                distinct=Distinct(api, SUFFIX_FORMAT, ids.start, len(ids)),
                cpus=self.gen_cpus,
                cpu_groups=groups,
            ).as_dict()
            result["generator"] = "wrk"
            return result
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
        return _from_python(label, report)


# --- the scratch database -------------------------------------------------------------------


async def _sql(dsn: str, *statements: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetch(s) for s in statements]
    finally:
        await conn.close()


def sql(dsn: str, *statements: str) -> list[Any]:
    """Run statements on a fresh connection; their rows."""
    return asyncio.run(_sql(dsn, *statements))


async def _home_prefixes(dsn: str, data_dir: Path, prefixes: Sequence[str], secret: str) -> None:
    from nodes.bootstrap import build_node
    from nodes.settings import load_settings
    from registry.prefixes import init_prefix

    settings = load_settings(database_url=dsn, data_dir=data_dir, migrate_on_start=False)
    node = build_node(settings)
    try:
        for prefix in prefixes:
            await init_prefix(node.store, node.invalidator, prefix, secret)
    finally:
        await node.close()


def home_prefixes(dsn: str, data_dir: Path, prefixes: Sequence[str], secret: str) -> None:
    """``idis prefix init`` for each prefix (in process: one start-up for all), one secret."""
    asyncio.run(_home_prefixes(dsn, data_dir, prefixes, secret))


def storage_of(dsn: str, table: str = "handles") -> dict[str, Any]:
    """Bytes of ``table`` in PostgreSQL (heap, TOAST, indexes) per row, beside the payload:
    the handle text and its stored values (``octet_length(handle) + octet_length(data)``)."""
    rows = sql(
        dsn,
        f"SELECT pg_total_relation_size('{table}') AS total,"
        f" pg_relation_size('{table}') AS heap, pg_indexes_size('{table}') AS indexes,"
        f" coalesce(pg_total_relation_size(reltoastrelid), 0) AS toast"
        f" FROM pg_class WHERE oid = '{table}'::regclass",
        f"SELECT count(*) AS n, sum(octet_length(handle) + octet_length(data)) AS payload,"
        f" sum(octet_length(key)) AS keys FROM {table}",
    )
    size, counts = rows[0][0], rows[1][0]
    n = int(counts["n"])
    return {
        "rows": n,
        "total_bytes": int(size["total"]),
        "heap_bytes": int(size["heap"]),
        "index_bytes": int(size["indexes"]),
        "toast_bytes": int(size["toast"]),
        "bytes_per_id": round(size["total"] / n, 1) if n else 0.0,
        "payload_per_id": round(int(counts["payload"]) / n, 1) if n else 0.0,
    }


def buffer_reads(dsn: str, table: str = "handles") -> dict[str, int]:
    """PostgreSQL's block counters of ``table``: pages found in shared buffers (hit) and read
    from the OS (read), heap and index.  They lag up to a second: sleep before reading."""
    row = sql(
        dsn,
        "SELECT pg_stat_clear_snapshot()",
        "SELECT coalesce(heap_blks_read, 0) AS heap_read, coalesce(heap_blks_hit, 0) AS heap_hit,"
        " coalesce(idx_blks_read, 0) AS idx_read, coalesce(idx_blks_hit, 0) AS idx_hit"
        f" FROM pg_statio_user_tables WHERE relname = '{table}'",
    )[1][0]
    return {k: int(v) for k, v in row.items()}


def per_lookup(before: dict[str, int], after: dict[str, int], lookups: int) -> dict[str, float]:
    """Block counters per lookup between two :func:`buffer_reads`."""
    n = max(1, lookups)
    return {k: round((after[k] - before[k]) / n, 2) for k in after}


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def seed_sql(now: int) -> str | None:
    """An ``INSERT ... SELECT FROM generate_series($1, $2)`` writing the rows of
    :func:`loadtests.bench_http.build_record` server-side (10x faster than building them in
    Python), built from the Python encoding itself; None if the encoding cannot be templated.
    The caller checks a sample of the rows against Python byte for byte."""
    from resolver.codecs.stored import encode_values

    variants = []
    for r in range(3):
        i = 30_000_000 + r  # i % 3 == r
        record = bench_http.build_record(i, now)
        text = encode_values(record.values).decode()
        marks = {
            "\x01": SUFFIX_FORMAT % i,
            "\x02": f"DN{25 + i % 7 * 5}",
            "\x03": f"B{2024_0000 + i // 500}",
        }
        for mark, value in marks.items():
            text = text.replace(value, mark)
        if "\x01" not in text or any(c in text for c in "\x04\x05"):
            return None
        pieces = []
        literal = ""
        for ch in text:
            if ch in marks:
                if literal:
                    pieces.append(_lit(literal))
                literal = ""
                pieces.append(
                    {
                        "\x01": "'SN' || lpad(i::text, 8, '0')",
                        "\x02": "'DN' || (25 + i % 7 * 5)::text",
                        "\x03": "'B' || (20240000 + i / 500)::text",
                    }[ch]
                )
            else:
                literal += ch
        if literal:
            pieces.append(_lit(literal))
        variants.append(" || ".join(pieces))
    handle = f"{_lit(PREFIX + '/')} || 'SN' || lpad(i::text, 8, '0')"
    data = (
        f"convert_to(CASE i % 3 WHEN 0 THEN {variants[0]} WHEN 1 THEN {variants[1]}"
        f" ELSE {variants[2]} END, 'UTF8')"
    )
    return (
        "INSERT INTO handles (key, handle, data, version)"
        f" SELECT upper({handle}), {handle}, {data}, 1 FROM generate_series($1::bigint,"
        " $2::bigint) AS i"
    )


async def _seed_range(dsn: str, first: int, count: int, now: int) -> str:
    """Add identifiers ``first .. first + count - 1`` (bench_http's shape); how it was done."""
    import asyncpg

    from resolver.codecs.stored import encode_values

    statement = seed_sql(now)
    conn = await asyncpg.connect(dsn)
    try:
        if statement is not None and first + count <= 10**8:
            chunk = 500_000
            for lo in range(first, first + count, chunk):
                hi = min(first + count, lo + chunk) - 1
                await conn.execute(statement, lo, hi)
            sample = random.Random(first).sample(range(first, first + count), min(50, count))
            rows = await conn.fetch(
                "SELECT handle, data FROM handles WHERE key = ANY($1::text[])",
                [bench_http.handle_text(i).upper() for i in sample],
            )
            got = {r["handle"]: bytes(r["data"]) for r in rows}
            if len(got) == len(sample) and all(
                got.get(bench_http.handle_text(i))
                == encode_values(bench_http.build_record(i, now).values)
                for i in sample
            ):
                return "SQL generate_series (checked against Python byte for byte)"
            await conn.execute(
                "DELETE FROM handles WHERE key >= $1 AND key <= $2",
                bench_http.handle_text(first).upper(),
                bench_http.handle_text(first + count - 1).upper(),
            )
        from resolver.identifiers import fold

        for lo in range(first, first + count, 50_000):
            records = [
                bench_http.build_record(i, now) for i in range(lo, min(first + count, lo + 50_000))
            ]
            await conn.copy_records_to_table(
                "handles",
                records=[(fold(r.handle), r.handle, encode_values(r.values), 1) for r in records],
                columns=["key", "handle", "data", "version"],
            )
        return "COPY of rows built in Python"
    finally:
        await conn.close()


# --- the suite ------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table."""

    key: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: str = ""
    target_source: str = ""
    passed: bool | None = None
    generator: str = ""
    errors: int = 0
    rounds: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    other_load: float | None = None
    """Cores taken by other work on the machine during the run (other processes and busy time
    charged to none): high values mean the figure was measured under contention."""


def cpu_per_request(runs: Sequence[dict[str, Any]]) -> float | None:
    """Median microseconds of server CPU per answer over ``runs`` (wrk or Python results)."""
    per = [
        r["cpu"]["server"] / r["rate"] * 1e6
        for r in runs
        if r.get("rate") and r.get("cpu", {}).get("server") is not None
    ]
    return round(median(per), 1) if per else None


def judge(ratio: float | None, target: Target | None, errors: int = 0) -> bool | None:
    """Whether ``ratio`` meets ``target`` without errors; None when there is no target."""
    if target is None:
        return None
    op, bound, _ = target
    if ratio is None:
        return False
    ok = ratio >= bound if op == ">=" else ratio <= bound
    return ok and errors == 0


class Suite:
    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.s = settings
        self.workdir = workdir
        pg = urlsplit(settings.postgres)
        where = f"postgresql://{pg.username or 'postgres'}@{pg.hostname}:{pg.port or 5432}"
        self.admin_dsn = where + "/postgres"
        self.dbname = f"idis_suite_{os.getpid()}_{secrets.token_hex(3)}"
        self.dsn = f"{where}/{self.dbname}"
        self.server_cpus, self.gen_cpus = bench_http.cpu_plan(1, settings.pin)
        self.population = Population()
        self.secret = secrets.token_urlsafe(18)
        self.servers: list[ServeProcess] = []
        self.node: ServeProcess | None = None
        self.now = int(time.time())
        self.created = False
        self.wrk = self._has_wrk()
        kind = "wrk" if self.wrk and settings.generator != "python" else "python"
        self.load = Load(kind, settings.concurrency, self.gen_cpus)
        self.figures: list[Figure] = []
        self.raw: dict[str, Any] = {}
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        http_rows = int(settings.rows * settings.http_share)
        self.plan = bench_http.plan_ids(http_rows, settings.rounds)
        self.probe_ids = range(http_rows, settings.rows)

    def _has_wrk(self) -> bool:
        try:
            find_wrk()
        except GeneratorMissing:
            if self.s.generator == "wrk":
                raise
            return False
        return True

    # -- the table --

    def add(
        self,
        key: str,
        figure: str,
        value: float | None,
        unit: str,
        *,
        baseline: float | None = None,
        baseline_label: str = "",
        ratio: float | None = None,
        target: Target | None = None,
        generator: str = "",
        errors: int = 0,
        rounds: Sequence[float] = (),
        detail: dict[str, Any] | None = None,
        cpu: dict[str, float] | None = None,
    ) -> Figure:
        if ratio is None and value is not None and baseline:
            ratio = value / baseline
        fig = Figure(
            key=key,
            figure=figure,
            value=None if value is None else round(value, 3),
            unit=unit,
            baseline=None if baseline is None else round(baseline, 3),
            baseline_label=baseline_label,
            ratio=None if ratio is None else round(ratio, 3),
            target=f"{target[0]} {target[1]:g}" if target else "",
            target_source=target[2] if target else "",
            passed=judge(ratio, target, errors),
            generator=generator,
            errors=errors,
            rounds=[round(r, 3) for r in rounds],
            detail=detail or {},
            other_load=(
                round(cpu.get("other_procs", 0.0) + cpu.get("unattributed", 0.0), 2)
                if cpu
                else None
            ),
        )
        self.figures.append(fig)
        return fig

    def step(self, name: str, run: Callable[[], None]) -> None:
        """Run one part of the suite; a failure becomes an ERROR row, not the end of the run."""
        if name not in self.s.only:
            return
        started = time.monotonic()
        say(f"[{name}]")
        try:
            run()
        except KeyboardInterrupt:
            raise
        except Exception as error:
            say(traceback.format_exc())
            fig = self.add(name, f"{name}: could not be measured", None, "")
            fig.error = f"{type(error).__name__}: {error}"
            fig.passed = False
        finally:
            self.timings[name] = round(time.monotonic() - started, 1)

    # -- set-up --

    def prepare(self) -> None:
        from registry.migrate import upgrade

        say(f"database {self.dbname}: create, migrate, home prefixes, seed {self.s.rows:,} ids")
        asyncio.run(bench_http._create_database(self.admin_dsn, self.dbname))
        self.created = True
        upgrade(self.dsn)
        prefixes = list(dict.fromkeys([PREFIX, *self.population.prefixes]))
        home_prefixes(self.dsn, self.workdir / "data", prefixes, self.secret)
        started = time.monotonic()
        # bench_http's rows (its build_record), written server-side: see _seed_range.
        self.raw["seeded_by"] = asyncio.run(_seed_range(self.dsn, 0, self.s.rows, self.now))
        sql(self.dsn, "VACUUM ANALYZE handles")
        self.raw["seed_seconds"] = round(time.monotonic() - started, 2)
        # The base of scale10x's storage figure: only rows of bench_http's shape so far.
        self.raw["storage_seeded"] = storage_of(self.dsn)

    def start_node(self) -> ServeProcess:
        node = self.launch_node(self.dsn, self.workdir / "data", "node")
        self.node = node
        port = node.port
        problems = bench_http.check_samples(port, list(self.plan.sample)[:50], self.now)
        if problems:
            raise RuntimeError("wrong answers before the runs:\n  " + "\n  ".join(problems))
        return node

    def start_constant(self) -> ReferenceServer:
        server = ReferenceServer("constant", self.workdir / "constant", self.server_cpus)
        return bench_http.start_listed(server, self.servers)

    # -- steps --

    def ceilings(self) -> None:
        """Both generators against a raw uvloop server writing constant bytes."""
        s = self.s
        const = self.start_constant()
        group: dict[str, Sequence[int]] = {"server": [const.pid]}
        api = "/api/handles/" + PREFIX + "/"
        wrk_rate = None
        if self.wrk:
            result = run_wrk(
                "generator ceiling (wrk)",
                const.url,
                CONSTANT_BODY,
                concurrency=s.concurrency,
                duration=max(1.0, s.duration),
                distinct=Distinct(api, SUFFIX_FORMAT, 0, 10**8),
                cpus=self.gen_cpus,
                cpu_groups=group,
            ).as_dict()
            self.raw["ceiling_wrk"] = result
            wrk_rate = result["rate"]
            self.add(
                "ceiling_wrk",
                "generator ceiling: wrk vs constant server",
                wrk_rate,
                "req/s",
                generator="wrk",
                errors=result["error_count"],
                detail={
                    "generator_cores": result["cpu"].get("generator"),
                    "per_generator_core": round(wrk_rate / result["cpu"]["generator"])
                    if result["cpu"].get("generator")
                    else None,
                },
                cpu=result["cpu"],
            )
        before = cpu_sample()
        with pinned(self.gen_cpus):
            report = drive.run(
                lambda stop: drive.ceiling(
                    const.port,
                    concurrency=s.concurrency,
                    duration=max(1.0, s.duration),
                    warmup=0.3,
                    stop=stop,
                )
            )
        if report["stopped_by"] == "interrupt":
            raise KeyboardInterrupt
        report["cpu"] = own_cpu_apart(
            cpu_usage(before, cpu_sample(), group), report["generator"]["cpu_share"]
        )
        self.raw["ceiling_python"] = report
        self.add(
            "ceiling_python",
            "generator ceiling: Python generator vs constant server",
            report["per_s"],
            "req/s",
            baseline=wrk_rate,
            baseline_label="wrk ceiling" if wrk_rate else "",
            generator="python",
            detail={
                "generator_cpu_share": report["generator"]["cpu_share"],
                "per_generator_core": round(report["per_s"] / report["generator"]["cpu_share"])
                if report["generator"]["cpu_share"]
                else None,
            },
            cpu=report["cpu"],
        )
        const.stop()
        self.servers.remove(const)

    def http(self) -> None:
        """Bare route, cached, uncached and raw asyncpg, in rounds (bench_http's figures)."""
        s, plan = self.s, self.plan
        self.ceilings()
        node = self.node or self.start_node()
        group: dict[str, Sequence[int]] = {"server": [node.pid]}
        path = "/api/handles/" + bench_http.handle_text(plan.cached_id)
        rounds: list[dict[str, Any]] = []
        # The HTTP ceiling: uvicorn run as the node runs it, with a raw ASGI app.
        asgi = bench_http.start_listed(
            ReferenceServer("asgi", self.workdir / "asgi", self.server_cpus), self.servers
        )
        # And the same app sending the node's cached answer, byte for byte: what the response
        # itself costs, apart from the work of producing it.
        answer = bench_http.fetch(node.port, path)[1]
        same = bench_http.start_listed(
            ReferenceServer("asgi", self.workdir / "asgi-same", self.server_cpus, answer=answer),
            self.servers,
        )
        gs1_path = self.seed_gs1(node)

        def fixed(label: str, base: str, path: str, expected: bytes, on: Any) -> dict[str, Any]:
            groups = {"server": [on.pid]}
            return self.load.fixed(
                label, base, path, expected, duration=s.duration, warmup=s.warmup, groups=groups
            )

        for n in range(s.rounds):
            say(f"  round {n + 1}/{s.rounds} ({self.load.kind})")
            out: dict[str, Any] = {}
            out["bare"] = fixed("bare /healthz", node.url, "/healthz", CONSTANT_BODY, node)
            status, body, _ = bench_http.fetch(node.port, path)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
            out["cached"] = fixed("cached", node.url, path, body, node)
            out["asgi"] = fixed("raw ASGI constant", asgi.url, "/healthz", CONSTANT_BODY, asgi)
            out["asgi_same"] = fixed("raw ASGI, the cached answer", same.url, "/", answer, same)
            if self.wrk:
                out["gs1"] = self.gs1_run(node.url + gs1_path, group)
            if self.load.kind == "python":
                # The Python generator checked status only: check the body once more here.
                again = bench_http.fetch(node.port, path)
                if again[1] != body:
                    out["cached"]["error_count"] += 1
            measure, warm = plan.measure[n], plan.warm[n]
            out["uncached"] = self.load.distinct(
                "uncached",
                node.url,
                measure,
                warm,
                duration=s.duration,
                warmup=s.warmup,
                groups=group,
            )
            out["uncached"]["ids_available"] = len(measure)
            step = max(1, out["uncached"]["ok"] // 20)
            problems = bench_http.check_samples(
                node.port, list(measure[: out["uncached"]["ok"] : step]), self.now
            )
            out["uncached"]["error_count"] += len(problems)
            out["asyncpg"] = run_pg(
                self.dsn,
                prefix=PREFIX,
                suffix_format=SUFFIX_FORMAT,
                slices=[(0, plan.rows)],
                start=measure.start,
                warm=(warm.start, len(warm)),
                concurrency=s.concurrency,
                duration=s.duration,
                warmup=max(0.2, s.warmup),
                cpus=self.server_cpus,
            )
            out["asyncpg"]["error_count"] = out["asyncpg"]["errors"] + out["asyncpg"]["missing"]
            for key in ("bare", "cached", "asgi", "asgi_same", "gs1", "uncached", "asyncpg"):
                if key in out:
                    say(f"    {key}: {out[key]['rate']:,.0f}/s, errors {out[key]['error_count']}")
            rounds.append(out)
        self.raw["http_rounds"] = rounds

        def series(key: str) -> list[float]:
            return [float(r[key]["rate"]) for r in rounds]

        def ratios(key: str, base: str) -> list[float]:
            return [a / b for a, b in zip(series(key), series(base), strict=True) if b]

        def per_core_ratio(key: str, base: str) -> float | None:
            def per_core(fig: dict[str, Any]) -> float | None:
                used = fig.get("cpu", {}).get("server")
                return fig["rate"] / used if used else None

            pairs = [(per_core(r[key]), per_core(r[base])) for r in rounds]
            found = [a / b for a, b in pairs if a and b]
            return round(median(found), 3) if found else None

        def errors(*keys: str) -> int:
            return sum(int(r[k]["error_count"]) for r in rounds for k in keys)

        def detail(key: str) -> dict[str, Any]:
            mid = rounds[len(rounds) // 2][key]
            return {
                "p50_ms": mid.get("p50_ms"),
                "p99_ms": mid.get("p99_ms"),
                "cpu": mid.get("cpu"),
                "exhausted": any(r[key].get("exhausted") for r in rounds),
            }

        gen = self.load.kind

        def info(key: str, name: str) -> None:
            self.add(
                key,
                name,
                median(series(key)),
                "req/s",
                generator=gen,
                errors=errors(key),
                detail=detail(key),
                cpu=detail(key)["cpu"],
            )

        info("bare", "bare FastAPI route GET /healthz (the HTTP baseline)")
        for key, name, target in (
            ("cached", "HTTP resolution, cached identifier", CACHED_TARGET),
            ("uncached", "HTTP resolution, uncached identifiers", UNCACHED_TARGET),
        ):
            rs = ratios(key, "bare")
            fig = self.add(
                key,
                name,
                median(series(key)),
                "req/s",
                baseline=median(series("bare")),
                baseline_label="bare route",
                ratio=median(rs),
                target=target,
                generator=gen,
                errors=errors(key, "bare"),
                rounds=rs,
                detail=detail(key),
                cpu=detail(key)["cpu"],
            )
            if fig.detail["exhausted"]:
                fig.passed = False
                fig.error = "identifiers used up before the run's end: raise rows"
        info("asgi", "raw ASGI app, constant bytes, uvicorn as the node runs it (the HTTP ceiling)")
        comparisons: list[tuple[str, str, str, Target | None]] = [
            ("cached_asgi", "cached", "asgi", CEILING_TARGET),
            ("asgi_same", "asgi_same", "asgi", None),
            ("cached_same", "cached", "asgi_same", None),
        ]
        if self.wrk:
            comparisons.append(("gs1", "gs1", "cached", GS1_TARGET))
        else:
            self.notes.append(
                "gs1: the redirect figure needs wrk (the Python generator counts 200s)"
            )
        for key, figure, base, target in comparisons:
            rs = ratios(figure, base)
            self.add(
                key,
                {
                    "cached_asgi": "HTTP resolution, cached, vs the raw ASGI app",
                    "asgi_same": "raw ASGI app sending the cached answer's bytes and headers",
                    "cached_same": "HTTP resolution, cached, vs the raw ASGI app sending it",
                    "gs1": "GS1 Digital Link 307 redirect (cached) vs cached HTTP resolution",
                }[key],
                median(series(figure)),
                "req/s",
                baseline=median(series(base)),
                baseline_label={
                    "asgi": "raw ASGI app",
                    "asgi_same": "raw ASGI, same answer",
                    "cached": "cached resolution",
                }[base],
                ratio=median(rs),
                target=target,
                generator=gen,
                errors=errors(figure, base),
                rounds=rs,
                # Steadier than req/s on a shared machine: requests per CPU-second of each
                # server process, compared the same way.
                detail=detail(figure) | {"per_server_core": per_core_ratio(figure, base)},
                cpu=detail(figure)["cpu"],
            )
        for server in (asgi, same):
            server.stop()
            self.servers.remove(server)
        rs = ratios("uncached", "asyncpg")
        self.add(
            "uncached_pg",
            "HTTP resolution, uncached, vs raw asyncpg lookups",
            median(series("uncached")),
            "req/s",
            baseline=median(series("asyncpg")),
            baseline_label="raw asyncpg PK lookups",
            ratio=median(rs),
            generator=gen,
            errors=errors("uncached", "asyncpg"),
            rounds=rs,
            detail={"asyncpg": detail("asyncpg")},
            cpu=detail("uncached")["cpu"],
        )

    def native(self) -> None:
        """The native Handle protocol beside its echo ceiling and REST (loadtests.bench_native)."""
        from loadtests import bench_native

        bench_native.run(self)

    def hostile(self) -> None:
        """Cached resolution with idle connections and a slow-header client attached."""
        from loadtests import bench_attacked as attacked

        title = (
            f"HTTP resolution, cached, {attacked.HOSTILE_IDLE:,} idle connections and "
            f"{attacked.HOSTILE_SLOW} slow-header client attached"
        )
        attacked.run(self, "hostile", title, HOSTILE_TARGET, attacked.idle_and_slow(self))

    def logins(self) -> None:
        """Cached resolution while failed logins stream at the node."""
        from loadtests import bench_attacked as attacked

        title = "HTTP resolution, cached, during 200 failed logins/s"
        attacked.run(self, "logins", title, LOGINS_TARGET, attacked.failed_logins(self))

    def quotas(self) -> None:
        """Cached resolution on a node counting daily resolution quotas, beside the same
        without quotas (the suite's node, on the same database)."""
        from loadtests import bench_attacked as attacked

        title = "HTTP resolution, cached, daily resolution quotas on"
        attacked.run(
            self,
            "quotas",
            title,
            QUOTAS_TARGET,
            lambda node: contextlib.nullcontext({}),
            subject=attacked.quota_node(self),
            baseline_label="the same without quotas",
        )

    def observe(self) -> None:
        """Cached resolution with metrics and JSON logs on, beside a node with them off."""
        from loadtests import bench_observe

        bench_observe.run(self, OBSERVE_TARGET)

    def seed_gs1(self, node: ServeProcess) -> str:
        """Give ``GS1_GTIN`` a default link through the REST API; its Digital Link path, checked
        to redirect there."""
        path = f"/01/{GS1_GTIN}"
        values = [{"index": 1, "type": "GS1.defaultLink", "data": GS1_LINK}]
        identity = f"300%3A{PREFIX}/ADMIN:{self.secret}"
        conn = http.client.HTTPConnection(HOST, node.port, timeout=10)
        try:
            conn.request(
                "PUT",
                f"/api/handles/{PREFIX}{path}",
                json.dumps(values),
                {
                    "Content-Type": "application/json",
                    "Authorization": "Basic " + base64.b64encode(identity.encode()).decode(),
                },
            )
            written = conn.getresponse()
            written.read()
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
        finally:
            conn.close()
        if written.status not in (200, 201) or answer.status != 307:
            raise RuntimeError(f"GS1 record: PUT {written.status}, GET {answer.status}")
        if answer.getheader("location") != GS1_LINK:
            raise RuntimeError(f"GS1 redirect to {answer.getheader('location')}")
        return path

    def gs1_run(self, url: str, groups: dict[str, Sequence[int]]) -> dict[str, Any]:
        """wrk on one Digital Link: every answer a 307 with an empty body."""
        s = self.s
        common: dict[str, Any] = {
            "concurrency": s.concurrency,
            "cpus": self.gen_cpus,
            "status": 307,
        }
        if s.warmup > 0:
            run_wrk("gs1 warm-up", url, b"", duration=s.warmup, **common)
        result = run_wrk("gs1", url, b"", duration=s.duration, cpu_groups=groups, **common)
        out = result.as_dict()
        out["generator"] = "wrk"
        return out

    def register(self) -> None:
        """Batch registration of the realistic population, beside plain COPY of its rows."""
        from registry.importer import RecordParser

        s = self.s
        node = self.node or self.start_node()
        population = self.population
        credentials = {
            p: drive.Credentials(drive.admin_identity(p), self.secret) for p in population.prefixes
        }
        before = cpu_sample()
        with pinned(self.gen_cpus):
            report = drive.run(
                lambda stop: drive.register(
                    node.url,
                    population,
                    credentials,
                    count=s.register_count,
                    batch_size=s.register_batch,
                    concurrency=s.register_concurrency,
                    max_seconds=600,
                    stop=stop,
                )
            )
        if report["stopped_by"] == "interrupt":
            raise KeyboardInterrupt
        report["cpu"] = own_cpu_apart(
            cpu_usage(before, cpu_sample(), {"server": [node.pid]}),
            report["generator"]["cpu_share"],
        )
        self.raw["register"] = {k: v for k, v in report.items() if not k.startswith("timeline")}
        parser = RecordParser(population.prefixes, self.now)
        rows = [
            parser.row(population.handle(i), population.values(i)) for i in range(s.register_count)
        ]
        # The COPY's table stays until the storage step: it holds exactly these identifiers.
        copy_rate = asyncio.run(_copy_rate(self.dsn, rows))
        errors = sum(report["errors"].values())
        self.add(
            "register",
            f"batch registration, {s.register_batch} per call, {s.register_concurrency} in flight",
            report["identifiers_per_s"],
            "ids/s",
            baseline=copy_rate,
            baseline_label="plain COPY of the same rows",
            generator="python",
            errors=errors,
            detail={
                "batch_p50_ms": report["batches"]["p50_ms"],
                "batch_p99_ms": report["batches"]["p99_ms"],
                "by_status": report["by_status"],
                "generator_cpu_share": report["generator"]["cpu_share"],
                "cpu": report["cpu"],
            },
            cpu=report["cpu"],
        )

    def templates(self) -> None:
        """Templated batch registration beside untemplated (loadtests.bench_templates)."""
        from loadtests import bench_templates

        s = self.s
        node = self.node or self.start_node()
        with pinned(self.gen_cpus):
            result = bench_templates.measure(
                node.url,
                PREFIX,
                self.secret,
                count=s.template_count,
                batch=s.register_batch,
                concurrency=s.register_concurrency,
                rounds=max(2, s.rounds),
                tag=f"TPL{self.now}",
            )
        self.raw["templates"] = result
        self.add(
            "templates",
            f"batch registration of templated records (10 typed attributes), {s.template_count:,}",
            result["templated_per_s"],
            "ids/s",
            baseline=result["untemplated_per_s"],
            baseline_label="the same records untemplated",
            ratio=result["ratio"],
            target=TEMPLATES_TARGET,
            generator="python",
            errors=result["errors"],
            rounds=result["rounds"]["templated"],
        )

    def mix(self) -> None:
        """The realistic resolution mix over the registered population."""
        s = self.s
        node = self.node or self.start_node()
        count = s.register_count
        mix = ResolveMix(self.population, 0, count, zipf_s=1.1, unknown_share=0.05, seed=11)
        report = python_run(
            node.url,
            mix,
            concurrency=s.concurrency,
            duration=s.duration,
            warmup=max(0.5, s.warmup),
            cpus=self.gen_cpus,
            groups={"server": [node.pid]},
        )
        self.raw["mix"] = {k: v for k, v in report.items() if not k.startswith("timeline")}
        bare = next((f.value for f in self.figures if f.key == "bare"), None)
        by = report["by_outcome"]
        errors = sum(v["count"] for k, v in by.items() if k.startswith("error"))
        self.add(
            "mix",
            "HTTP resolution, Zipf 1.1 mix, 5% unknown",
            report["ok_per_s"],
            "req/s",
            baseline=bare,
            baseline_label="bare route" if bare else "",
            generator="python",
            errors=errors + sum(report["anomalies"].values()),
            detail={
                "found": {k: by.get("found", {}).get(k) for k in ("p50_ms", "p99_ms", "p999_ms")},
                "not_found": {
                    k: by.get("not found", {}).get(k) for k in ("p50_ms", "p99_ms", "p999_ms")
                },
                "generator_cpu_share": report["generator"]["cpu_share"],
                "generator_saturated": report["generator"]["saturated"],
                "cpu": report["cpu"],
            },
            cpu=report["cpu"],
        )

    def storage(self) -> None:
        """Bytes per identifier of the realistic population (the rows registered, as the COPY
        baseline of the register step stored them in a table of the same schema and indexes);
        the node's whole ``handles`` table in the detail."""
        sql(self.dsn, "VACUUM ANALYZE handles")
        node_table = storage_of(self.dsn)
        exists = sql(self.dsn, "SELECT to_regclass('handles_copy') IS NOT NULL AS e")[0][0]["e"]
        if exists:
            sql(self.dsn, "VACUUM ANALYZE handles_copy")
            measured = storage_of(self.dsn, "handles_copy")
            sql(self.dsn, "DROP TABLE handles_copy")
            what = f"{measured['rows']:,} realistic identifiers"
        else:
            measured = node_table
            what = f"the node's {measured['rows']:,} rows"
        self.raw["storage"] = {"population": measured, "node_table": node_table}
        self.add(
            "storage",
            f"PostgreSQL bytes per identifier ({what})",
            measured["bytes_per_id"],
            "B",
            baseline=measured["payload_per_id"],
            baseline_label="raw payload (handle + values)",
            detail={**measured, "node_table": node_table},
        )

    def probe(self, node: ServeProcess, dsn: str, ids: Sequence[int], label: str) -> dict[str, Any]:
        """Uncached lookups of ``ids`` (in the order given) at low concurrency: latency, and
        PostgreSQL's block counters per lookup (approximate: backends report them lazily)."""
        api = "/api/handles/" + PREFIX + "/"
        blocks = buffer_reads(dsn)
        report = python_run(
            node.url,
            SequenceMix(ids, lambda i: api + SUFFIX_FORMAT % i),
            concurrency=self.s.probe_concurrency,
            duration=self.s.probe_seconds,
            cpus=self.gen_cpus,
            groups={"server": [node.pid]},
        )
        out = _from_python(label, report)
        out["found"] = report["by_outcome"].get("found", {})
        time.sleep(1.2)  # the counters lag
        out["blocks_per_lookup"] = per_lookup(blocks, buffer_reads(dsn), report["requests"])
        return out

    def crosshost(self) -> None:
        """Write-to-visible on a second host of the node (a data directory, so a generation
        board, of its own; the same database), beside the same read on the writing host."""
        from loadtests import bench_crosshost

        node = self.node or self.start_node()
        other = self.launch_node(self.dsn, self.workdir / "data-other-host", "other-host")
        header = drive.Credentials(drive.admin_identity(PREFIX), self.secret).header
        report = bench_crosshost.measure(
            node.url, other.url, header, PREFIX, count=self.s.crosshost_writes
        )
        self.raw["crosshost"] = report
        p99 = report["other_p99_s"]
        fig = self.add(
            "crosshost",
            "write-to-visible p99 on another host of the site (issue 10: <= 1 s)",
            p99,
            "s",
            baseline=report["own_p99_s"],
            baseline_label="the same read on the writing host (p99)",
            errors=report["errors"],
            detail=report,
        )
        # The target bounds the figure itself, not its ratio (which the chart's ticks mark).
        fig.passed = not report["errors"] and p99 is not None and p99 <= 1.0

    def launch_node(self, dsn: str, data_dir: Path, name: str) -> ServeProcess:
        node = bench_http.bench_node(
            name, dsn, data_dir, self.workdir / name, cpus=self.server_cpus
        )
        return bench_http.start_listed(node, self.servers)

    def scale10x(self) -> None:
        """Uncached lookup latency on the base database beside a second database holding 10x
        the rows of the same shape, each behind a fresh node of its own, probed in alternation
        round by round (so that other work on the machine weighs on both alike)."""
        from registry.migrate import upgrade

        s = self.s
        if self.node is None:
            self.start_node()
        big_db = self.dbname + "_10x"
        big_dsn = self.dsn.rsplit("/", 1)[0] + "/" + big_db
        big_node: ServeProcess | None = None
        base_node: ServeProcess | None = None
        asyncio.run(bench_http._create_database(self.admin_dsn, big_db))
        try:
            started = time.monotonic()
            upgrade(big_dsn)
            home_prefixes(big_dsn, self.workdir / "data10x", [PREFIX], self.secret)
            how = asyncio.run(_seed_range(big_dsn, 0, 10 * s.rows, self.now))
            sql(big_dsn, "VACUUM ANALYZE handles")
            seed_seconds = time.monotonic() - started
            big_storage = storage_of(big_dsn)
            base_storage = storage_of(self.dsn)
            big_node = self.launch_node(big_dsn, self.workdir / "data10x", "node-10x")
            # A fresh node on the base database too: the main node has served every figure so
            # far (its memory holds their answers), and the two must differ only in rows.  The
            # main node stops here (scale10x is the last step that needs it).
            if self.node is not None:
                self.node.stop()
                self.servers.remove(self.node)
                self.node = None
            node = base_node = self.launch_node(self.dsn, self.workdir / "data-base", "node-base")
            rounds = max(1, s.rounds)
            rnd = random.Random(5)
            per = len(self.probe_ids) // rounds
            base_pool = rnd.sample(self.probe_ids, per * rounds)
            big_pool = rnd.sample(range(10 * s.rows), per * rounds)
            results: list[dict[str, Any]] = []
            time.sleep(1.2)
            for n in range(rounds):
                ids = slice(n * per, (n + 1) * per)
                runs = [
                    ("base", node, self.dsn, base_pool[ids]),
                    ("big", big_node, big_dsn, big_pool[ids]),
                ]
                if n % 2:
                    runs.reverse()
                out = {k: self.probe(srv, dsn, pool, k) for k, srv, dsn, pool in runs}
                say(
                    f"  round {n + 1}: p50 {out['base']['found'].get('p50_ms')} ms at"
                    f" {base_storage['rows']:,} rows, {out['big']['found'].get('p50_ms')} ms at"
                    f" {big_storage['rows']:,}"
                )
                results.append(out)
        finally:
            for extra in (big_node, base_node):
                if extra is not None:
                    extra.stop()
                    self.servers.remove(extra)
            with contextlib.suppress(Exception):
                asyncio.run(bench_http._drop_database(self.admin_dsn, big_db))
        self.raw["scale10x"] = {
            "rounds": results,
            "seeded": how,
            "seed_seconds": round(seed_seconds, 1),
            "storage_base": base_storage,
            "storage_10x": big_storage,
        }
        errors = sum(r[k]["error_count"] for r in results for k in ("base", "big"))
        for pct in ("p50", "p99"):
            bases = [float(r["base"]["found"].get(f"{pct}_ms") or 0) for r in results]
            bigs = [float(r["big"]["found"].get(f"{pct}_ms") or 0) for r in results]
            ratios = [b / a for a, b in zip(bases, bigs, strict=True) if a]
            self.add(
                f"scale10x_{pct}",
                f"uncached lookup {pct}, {big_storage['rows']:,} rows",
                median(bigs),
                "ms",
                baseline=median(bases),
                baseline_label=f"{pct} at {base_storage['rows']:,} rows",
                ratio=median(ratios) if ratios else None,
                target=FLAT_TARGET if pct == "p50" else None,
                generator="python",
                errors=errors,
                rounds=ratios,
                detail={
                    "concurrency": s.probe_concurrency,
                    "blocks_per_lookup_10x": results[-1]["big"]["blocks_per_lookup"],
                    "blocks_per_lookup_base": results[-1]["base"]["blocks_per_lookup"],
                    "cpu_10x": results[-1]["big"]["cpu"],
                },
                cpu=results[-1]["big"]["cpu"],
            )
        first = self.raw.get("storage_seeded")
        if first:
            # Linear storage: a row costs the same at 10x the rows.
            self.add(
                "scale10x_storage",
                f"bytes per identifier, {big_storage['rows']:,} rows of the seeded shape",
                big_storage["bytes_per_id"],
                "B",
                baseline=first["bytes_per_id"],
                baseline_label=f"at {first['rows']:,} rows",
                detail={"seeded_by": how, "10x": big_storage, "base": first},
            )

    def import_(self) -> None:
        """``idis import`` beside plain COPY (loadtests.bench_import, its own database)."""
        from loadtests import bench_import

        s = self.s
        args = argparse.Namespace(
            rows=s.import_rows,
            repeat=s.import_repeat,
            warmup=1,
            database_url=self.admin_dsn,
            cli=False,
            profile=None,
        )
        with contextlib.redirect_stdout(io.StringIO()) as out:
            result = bench_import.run(args)
        self.raw["import"] = result
        self.raw["import_log"] = out.getvalue()
        ratio = result["ratio"]
        self.add(
            "import",
            f"idis import ({s.import_rows:,} rows, {s.import_repeat} round(s))",
            result["import_per_s"],
            "ids/s",
            baseline=result["copy_per_s"],
            baseline_label="plain COPY of the same rows",
            ratio=ratio,
            target=IMPORT_TARGET,
            errors=0 if result["complete"] else 1,
            detail={"import_cpu_share": result.get("import_cpu_share")},
        )

    def recursive(self) -> None:
        """Recursive resolution warm and cold (loadtests.bench_recursive, its own federation)."""
        from loadtests import bench_recursive

        if not self.wrk:
            self.notes.append("recursive figures skipped: loadtests.bench_recursive needs wrk")
            fig = self.add("recursive", "recursive resolution (needs wrk)", None, "")
            fig.error = "wrk is not installed (apt-get install -y wrk)"
            return
        options = dict(self.s.recursive)
        options.setdefault("postgres", self.s.postgres)
        options.setdefault("pin", self.s.pin)
        # Pass only what this version of bench_recursive takes (its options are its own).
        accepted = {f.name for f in dataclasses.fields(bench_recursive.Options)}
        ignored = sorted(set(options) - accepted)
        if ignored:
            self.notes.append(f"recursive: options not taken by bench_recursive: {ignored}")
        options = {k: v for k, v in options.items() if k in accepted}
        with contextlib.redirect_stdout(io.StringIO()):
            report = bench_recursive.run_benchmark(**options)
        self.raw["recursive"] = {k: v for k, v in report.items() if k != "rounds"}
        results = report.get("results", [])
        names = {r.get("key"): r.get("figure", "") for r in results}
        for result in results:
            base_key = result.get("baseline_key")
            if not base_key:
                continue  # a baseline: shown beside the figures that use it
            target: Target | None = None
            if result.get("target"):
                op, bound = str(result["target"]).split()
                target = (op, float(bound), "issue 3")
            unit = "req/s" if str(result.get("key", "")).endswith(".rate") else "ms"
            self.add(
                f"recursive:{result['key']}/{base_key}",
                str(result["figure"]),
                result.get("value"),
                unit,
                baseline=result.get("baseline"),
                baseline_label=names.get(base_key, str(base_key)).split(":")[0],
                ratio=result.get("ratio"),
                target=target,
                generator="wrk",
                errors=int(result.get("errors", 0)),
                rounds=result.get("ratio_rounds", []),
            )
        if report.get("checks", {}).get("before") not in (None, "ok"):
            self.notes.append(f"recursive: checks before the runs: {report['checks']['before']}")

    def failover(self) -> None:
        """The national tier's takeover and switchover (loadtests.bench_failover)."""
        from loadtests import bench_failover

        result = bench_failover.run(window=3.0 if self.s.mode == "quick" else 6.0)
        self.raw["failover"] = result
        take, switch = result["takeover"], result["switchover"]
        self.add(
            "takeover",
            "writes back after the leader site is SIGKILLed",
            take["seconds"],
            "s",
            baseline=bench_failover.TTL,
            baseline_label="Patroni's ttl (the floor)",
            target=TAKEOVER_TARGET,
            errors=len(take["bad"]),
            detail={k: take[k] for k in ("leader", "new_leader", "acknowledged")},
        )
        self.add(
            "lost",
            "acknowledged writes lost when the leader site died",
            take["lost"],
            "writes",
            baseline=take["acknowledged"],
            baseline_label="acknowledged writes",
            ratio=take["lost"] / max(1, take["acknowledged"]),
            target=LOST_TARGET,
        )
        fig = self.add(
            "switchover",
            "write pause of a planned switchover",
            switch["pause"],
            "s",
            baseline=result["quiet_pause"],
            baseline_label="longest write gap, quiet window",
            errors=switch["failed_writes"] + len(switch["bad"]),
            detail={k: switch[k] for k in ("from", "to", "failed_writes", "writes")},
        )
        fig.target, fig.target_source = f"<= {SWITCHOVER_LIMIT:g} s", "issue 10"
        for key, where in (("sync_cost", "loopback"), ("sync_cost_20ms", "20 ms round trip")):
            self._sync_cost(key, where, result[key], key == "sync_cost_20ms")
        fig.passed = switch["pause"] <= SWITCHOVER_LIMIT and fig.errors == 0

    def _sync_cost(self, key: str, where: str, cost: dict[str, Any], delayed: bool) -> None:
        """One ``sync_cost`` row of bench_failover; with ``delayed``, a failure unless the
        link's round trip was measured at >= 18 ms with both standbys streaming through it."""
        from loadtests import bench_failover

        rtt = cost["rtt"]
        in_place = rtt["streams_through_link"] >= 1 and (
            not delayed
            or rtt["through_ms"] - rtt["direct_ms"] >= 0.9 * 2000 * bench_failover.ONE_WAY
        )
        fig = self.add(
            key,
            f"batch registration ({cost['batch']}/batch, {cost['inflight']} in flight), "
            f"synchronous DR copy, {where}",
            cost["synchronous"],
            "ids/s",
            baseline=cost["asynchronous"],
            baseline_label="the same, synchronous mode off",
            ratio=statistics.median(cost["ratio_rounds"]),
            rounds=cost["ratio_rounds"],
            errors=0 if in_place else 1,
            detail={k: cost[k] for k in ("leader", "rtt", "one_handle_ms")},
        )
        one = cost["one_handle_ms"]
        single = self.add(
            key.replace("sync_cost", "sync_one"),
            f"registering one handle alone, synchronous DR copy, {where}",
            one["sync"],
            "ms",
            baseline=one["async"],
            baseline_label="the same, synchronous mode off",
            errors=0 if in_place else 1,
        )
        if not in_place:
            for row in (fig, single):
                row.error = f"the emulated link is not in place: {rtt}"
                row.passed = False

    # -- the whole run --

    def run(self) -> dict[str, Any]:
        s = self.s
        started = time.monotonic()
        needs_node = {"http", "native", "dns", "hostile", "logins", "quotas", "observe"}
        needs_node |= {"register", "templates", "mix", "storage", "scale10x", "crosshost"}
        needs_node &= set(s.only)
        try:
            if needs_node:
                self.prepare()
            self.step("http", self.http)
            self.step("native", self.native)
            self.step("hostile", self.hostile)
            self.step("logins", self.logins)
            self.step("dns", lambda: bench_dns.run(self))
            self.step("quotas", self.quotas)
            self.step("observe", self.observe)
            self.step("register", self.register)
            self.step("templates", self.templates)
            if "mix" in s.only and "register" not in s.only:
                self.notes.append("mix: run with register (it resolves what register created)")
            elif "register" in s.only:
                self.step("mix", self.mix)
            self.step("storage", self.storage)
            self.step("scale10x", self.scale10x)
            self.step("crosshost", self.crosshost)
        finally:
            for server in reversed(self.servers):
                server.stop()
            self.servers.clear()
            if self.created:
                with contextlib.suppress(Exception):
                    asyncio.run(bench_http._drop_database(self.admin_dsn, self.dbname))
        self.step("import", self.import_)
        self.step("recursive", self.recursive)
        self.step("failover", self.failover)
        return self.report(time.monotonic() - started)

    def report(self, seconds: float) -> dict[str, Any]:
        judged = [f.passed for f in self.figures if f.passed is not None]
        return {
            "kind": "bench",
            "mode": self.s.mode,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now)),
            "seconds": round(seconds, 1),
            "machine": machine(),
            "http_generator": self.load.kind,
            "wrk_installed": self.wrk,
            "settings": asdict(replace(self.s, only=tuple(self.s.only))),
            "figures": [asdict(f) for f in self.figures],
            "passed": bool(judged) and all(judged),
            "timings": self.timings,
            "notes": self.notes,
            "raw": self.raw,
        }


async def _copy_rate(dsn: str, rows: list[Any]) -> float:
    """Rows/s of one COPY of ``rows`` into ``handles_copy``, an empty table like ``handles``
    (left for the caller to measure and drop)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS handles_copy")
        await conn.execute("CREATE TABLE handles_copy (LIKE handles INCLUDING ALL)")
        await conn.execute("CHECKPOINT")
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "handles_copy", records=rows, columns=("key", "handle", "data")
        )
        elapsed = time.perf_counter() - started
        return len(rows) / elapsed
    finally:
        await conn.close()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


# --- output ---------------------------------------------------------------------------------


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return ""
    if unit in ("req/s", "ids/s"):
        return f"{v:,.0f} {unit}"
    if unit == "B":
        return f"{v:,.1f} B"
    return f"{v:,.3g} {unit}" if v < 10 else f"{v:,.1f} {unit}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for f in report["figures"]:
        verdict = "info" if f["passed"] is None else ("PASS" if f["passed"] else "FAIL")
        if f["error"]:
            verdict = "ERROR" if f["value"] is None else verdict + " !"
        rows.append(
            [
                f["figure"],
                _value(f["value"], f["unit"]),
                (
                    f"{_value(f['baseline'], f['unit'])} ({f['baseline_label']})"
                    if f["baseline"] is not None
                    else ""
                ),
                f"{f['ratio']:.2f}x" if f["ratio"] is not None else "",
                f"{f['target']} ({f['target_source']})" if f["target"] else "",
                verdict,
                f["generator"],
                str(f["errors"]) if f["errors"] else "",
                f"{f['other_load']:.2f}" if f.get("other_load") is not None else "",
            ]
        )
    return rows


def print_table(report: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    head = ["figure", "value", "baseline", "ratio", "target", "result", "load", "errors", "other"]
    rows = table_rows(report)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {1, 3, 7, 8}
    for n, r in enumerate([head, *rows]):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\nidis bench ({report['mode']}): {report['seconds']:.0f} s on {m['cpus']} CPUs"
        f" ({m.get('cpu_model', 'unknown CPU')}); HTTP load by {report['http_generator']}"
        + ("" if report["wrk_installed"] else " (wrk is not installed: the Python generator)")
        + "\n"
    )
    print_table(report)
    raw = report["raw"]
    lines = []
    # Per CPU-second of the generator: what one core of it sends, whatever else the machine
    # was doing (a starved constant server lowers the req/s, not this).
    if "ceiling_wrk" in raw:
        c = raw["ceiling_wrk"]
        cores = c["cpu"].get("generator", 0)
        lines.append(
            f"generator ceiling, wrk: {c['rate']:,.0f} req/s using {cores:.2f} cores"
            + (f" = {c['rate'] / cores:,.0f} req/s per core of wrk" if cores else "")
        )
    if "ceiling_python" in raw:
        c = raw["ceiling_python"]
        share = c["generator"]["cpu_share"]
        lines.append(
            f"generator ceiling, Python ({c['generator']['loop']}): {c['per_s']:,.0f} req/s using"
            f" {share:.0%} of a core"
            + (f" = {c['per_s'] / share:,.0f} req/s per core of the generator" if share else "")
        )
    for key in ("register", "mix"):
        if key in raw:
            g = raw[key]["generator"]
            lines.append(
                f"{key}: Python generator used {g['cpu_share']:.0%} of a core"
                + (" (SATURATED: the figure may be the generator's)" if g["saturated"] else "")
            )
    if "scale10x" in raw:
        lines.append(f"scale10x: rows added by {raw['scale10x']['seeded']}")
    for f in report["figures"]:
        if f["detail"].get("per_server_core") is not None:
            lines.append(
                f"{f['key']}: per CPU-second of each server, {f['detail']['per_server_core']:.2f}x"
            )
    loads = [f["other_load"] for f in report["figures"] if f.get("other_load") is not None]
    if loads:
        busy = median(loads)
        lines.append(
            f"other: cores taken by other work on the machine during each run (median {busy:.2f}"
            f" of {report['machine']['cpus']})"
            + (
                "; the machine was shared: ratios, measured in the same conditions, are the"
                " steadier figures"
                if busy > 0.25
                else ""
            )
        )
    for note in report["notes"]:
        lines.append(note)
    if lines:
        print("\n" + "\n".join(lines))
    errors = [f for f in report["figures"] if f["error"]]
    for f in errors:
        print(f"! {f['key']}: {f['error']}")
    judged = [f for f in report["figures"] if f["passed"] is not None]
    failed = [f["key"] for f in judged if not f["passed"]]
    print(
        "\n"
        + (
            f"all {len(judged)} targets met"
            if report["passed"]
            else f"TARGETS MISSED: {', '.join(failed) or 'none measured'}"
        )
    )


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def chart(report: dict[str, Any], path: Path) -> bool:
    """A PNG of the ratios (log scale), targets marked; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figs = [f for f in report["figures"] if f["ratio"] is not None]
    if not figs:
        return False
    labels = [_short(f"{f['figure']} / {f['baseline_label']}", 80) for f in figs]
    ratios = [f["ratio"] for f in figs]
    colours = [
        "#9e9e9e" if f["passed"] is None else ("#2e7d32" if f["passed"] else "#c62828")
        for f in figs
    ]
    fig, ax = plt.subplots(figsize=(12, 0.4 * len(figs) + 1.6))
    y = list(range(len(figs)))[::-1]
    ax.barh(y, ratios, color=colours)
    for yi, f in zip(y, figs, strict=True):
        if f["target"]:
            bound = float(f["target"].split()[1])
            ax.plot([bound, bound], [yi - 0.4, yi + 0.4], color="black", linewidth=2)
        ax.text(f["ratio"], yi, f"  {f['ratio']:.2f}x", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    ax.set_xlabel("ratio to baseline (log scale); black tick: target")
    ax.set_title(
        f"idis bench ({report['mode']}) {report['started_at']}: green pass, red fail, grey info",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- entry points ---------------------------------------------------------------------------


def run_suite(settings: Settings) -> dict[str, Any]:
    """Run the suite; the report (``report["figures"]``: one dict per table row)."""
    if urlsplit(settings.postgres).hostname not in LOCAL_HOSTS:
        raise ValueError("the benchmark's PostgreSQL must be on 127.0.0.1")
    workdir = Path(tempfile.mkdtemp(prefix="idis-suite-"))
    try:
        return Suite(settings, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main_bench(args: argparse.Namespace) -> int:
    """``idis bench [--quick]``: run, print the table, write the JSON and the PNG."""
    settings = quick() if args.quick else full()
    only = tuple(x.strip() for x in args.only.split(",")) if args.only else STEPS
    unknown = set(only) - set(STEPS)
    if unknown:
        print(f"idis bench: unknown figures {sorted(unknown)}; known: {', '.join(STEPS)}")
        return 2
    settings = replace(
        settings, postgres=args.postgres, generator=args.generator, pin=args.pin, only=only
    )
    if settings.generator == "wrk":
        try:
            find_wrk()
        except GeneratorMissing as error:
            print(f"idis bench: {error}", file=sys.stderr)
            return 2
    report = run_suite(settings)
    print_report(report)
    json_path = Path(args.json or "bench.json")
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    png_path = Path(args.png or "bench.png")
    drawn = chart(report, png_path)
    print(
        f"\nreport: {json_path}"
        + (f"; chart: {png_path}" if drawn else " (no chart: pip install matplotlib)")
    )
    return 0 if report["passed"] else 1


def main_scale(args: argparse.Namespace) -> int:
    """``idis bench --scale``: see :mod:`loadtests.scale`."""
    from loadtests import scale

    return scale.main(args)
