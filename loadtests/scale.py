"""``idis bench --scale``: how cost grows with size in one node's PostgreSQL.

Loads the realistic population of :mod:`loadtests.shapes` into a scratch database (on the local
PostgreSQL, created and dropped here) up to each size in turn (default 1M, then 10M), through
the real import path (:func:`registry.importer.import_records`, what ``idis import`` runs), and
at each size reports:

- the import rate of that step (identifiers/s; generating the JSONL input is not counted);
- bytes per identifier: ``pg_total_relation_size('handles') / count(*)`` after VACUUM ANALYZE,
  with the heap / index / TOAST split and the raw payload beside it;
- uncached HTTP lookups through a running node (``python -m nodes.cli serve``, 1 worker):
  p50 / p99 latency at low concurrency of identifiers picked at random over the whole table,
  each never requested before, by the Python generator.

Expected: flat lookups (a B-tree lookup grows with log n, a few pages that stay cached) and
linear storage (constant bytes per identifier).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests import bench_http
from loadtests.generators import python_run
from loadtests.harness import LOCAL_HOSTS, say
from loadtests.mix import SequenceMix
from loadtests.report import machine
from loadtests.scratch_db import buffer_reads, home_prefixes, per_lookup, sql, storage_of
from loadtests.shapes import Population, api_path, write_jsonl
from nodes.processes import ServeProcess

CHUNK = 1_000_000
"""Identifiers per generated file (each imported on its own, then deleted)."""
PROBE_SECONDS = 8.0
PROBE_CONCURRENCY = 4
PROBE_IDS = 200_000


def parse_sizes(text: str) -> list[int]:
    """``"1e6,1e7"`` -> ``[1000000, 10000000]``: increasing, positive, whole."""
    sizes = []
    for part in text.split(","):
        value = float(part)
        if value <= 0 or value != int(value):
            raise ValueError(f"size {part!r} is not a positive whole number")
        sizes.append(int(value))
    if sizes != sorted(set(sizes)):
        raise ValueError("sizes must increase")
    return sizes


def run_scale(
    sizes: list[int],
    postgres: str,
    *,
    pin: bool = True,
    probe_seconds: float = PROBE_SECONDS,
    probe_concurrency: int = PROBE_CONCURRENCY,
) -> dict[str, Any]:
    """Load the population up to each of ``sizes`` and measure; the report (``kind: scale``)."""
    from urllib.parse import urlsplit

    from registry.importer import import_records
    from registry.migrate import upgrade

    pg = urlsplit(postgres)
    if pg.hostname not in LOCAL_HOSTS:
        raise ValueError("the benchmark's PostgreSQL must be on 127.0.0.1")
    where = f"postgresql://{pg.username or 'postgres'}@{pg.hostname}:{pg.port or 5432}"
    admin_dsn = where + "/postgres"
    dbname = f"idis_scale_{random.SystemRandom().randrange(16**8):08x}"
    dsn = f"{where}/{dbname}"
    server_cpus, gen_cpus = bench_http.cpu_plan(1, pin)
    population = Population()
    workdir = Path(tempfile.mkdtemp(prefix="idis-scale-"))
    node: ServeProcess | None = None
    steps: list[dict[str, Any]] = []
    shared_buffers = "?"
    started = time.monotonic()
    now = int(time.time())
    rnd = random.Random(3)
    probed: set[int] = set()
    try:
        asyncio.run(bench_http._create_database(admin_dsn, dbname))
        upgrade(dsn)
        shared_buffers = sql(dsn, "SHOW shared_buffers")[0][0]["shared_buffers"]
        home_prefixes(dsn, workdir / "data", population.prefixes, "scale-secret")
        node = bench_http.bench_node(
            "node", dsn, workdir / "data", workdir / "node", cpus=server_cpus
        )
        node.start(bench_http.READY_TIMEOUT, attempts=2)
        loaded = 0
        for size in sizes:
            say(f"[scale] loading identifiers {loaded:,} .. {size - 1:,}")
            generate_s = import_s = 0.0
            rejected = 0
            for lo in range(loaded, size, CHUNK):
                hi = min(size, lo + CHUNK)
                path = workdir / "chunk.jsonl"
                t0 = time.monotonic()
                write_jsonl(path, population, range(lo, hi))
                generate_s += time.monotonic() - t0
                t0 = time.monotonic()
                report = asyncio.run(import_records(dsn, path, now=now))
                import_s += time.monotonic() - t0
                rejected += report.rejected
                path.unlink()
                say(
                    f"  {hi:,} loaded; this chunk {report.loaded / report.elapsed:,.0f} ids/s"
                    f" ({report.rejected} rejected)"
                )
            t0 = time.monotonic()
            sql(dsn, "VACUUM ANALYZE handles")
            vacuum_s = time.monotonic() - t0
            storage = storage_of(dsn)
            population_rows = size - loaded
            loaded = size
            # Identifiers never requested before, anywhere in the table.
            want = min(PROBE_IDS, size)
            ids: list[int] = []
            while len(ids) < want and len(probed) < size:
                i = rnd.randrange(size)
                if i not in probed:
                    probed.add(i)
                    ids.append(i)
            time.sleep(1.2)  # let the statistics of the load settle
            blocks = buffer_reads(dsn)
            probe = python_run(
                node.url,
                SequenceMix(ids, lambda i: api_path(population.handle(i))),
                concurrency=probe_concurrency,
                duration=probe_seconds,
                cpus=gen_cpus,
                groups={"server": [node.pid]},
            )
            found = probe["by_outcome"].get("found", {})
            errors = probe["requests"] - found.get("count", 0)
            time.sleep(1.2)
            blocks_per_lookup = per_lookup(blocks, buffer_reads(dsn), probe["requests"])
            step = {
                "rows": size,
                "table_rows": storage["rows"],
                "added": population_rows,
                "import_per_s": round(population_rows / import_s, 1) if import_s else 0.0,
                "import_seconds": round(import_s, 1),
                "generate_seconds": round(generate_s, 1),
                "vacuum_seconds": round(vacuum_s, 1),
                "rejected": rejected,
                **{k: v for k, v in storage.items() if k != "rows"},
                "lookup_p50_ms": found.get("p50_ms"),
                "lookup_p99_ms": found.get("p99_ms"),
                "lookup_p999_ms": found.get("p999_ms"),
                "lookup_per_s": found.get("per_s"),
                "lookups": found.get("count", 0),
                "lookup_errors": errors,
                "lookup_concurrency": probe_concurrency,
                "generator_cpu_share": probe["generator"]["cpu_share"],
                "blocks_per_lookup": blocks_per_lookup,
                "cpu": probe["cpu"],
            }
            steps.append(step)
            say(
                f"  {size:,} rows: PostgreSQL blocks per lookup {blocks_per_lookup}"
                f" (read: not in shared_buffers)"
            )
            say(
                f"  {size:,} rows: import {step['import_per_s']:,.0f} ids/s,"
                f" {step['bytes_per_id']:,.1f} B/id, lookups p50 {step['lookup_p50_ms']} ms"
                f" p99 {step['lookup_p99_ms']} ms"
            )
    finally:
        if node is not None:
            node.stop()
        with contextlib.suppress(Exception):
            asyncio.run(bench_http._drop_database(admin_dsn, dbname))
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "kind": "scale",
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine(),
        "shared_buffers": shared_buffers,
        "population": population.describe(),
        "steps": steps,
    }


def _blocks_read(step: dict[str, Any]) -> str:
    blocks = step.get("blocks_per_lookup")
    if not blocks:
        return ""
    return f"{blocks['heap_read'] + blocks['idx_read']:.2f}"


def _other(step: dict[str, Any]) -> str:
    cpu = step.get("cpu")
    if not cpu:
        return ""
    return f"{cpu.get('other_procs', 0.0) + cpu.get('unattributed', 0.0):.2f}"


def print_scale(report: dict[str, Any]) -> None:
    head = [
        "rows",
        "import ids/s",
        "B/id",
        "heap",
        "index",
        "toast",
        "payload B/id",
        "lookup p50 ms",
        "p99 ms",
        "lookups/s",
        "blocks read/lookup",
        "errors",
        "other",
    ]
    rows = [head]
    for s in report["steps"]:
        n = s["table_rows"] or 1
        rows.append(
            [
                f"{s['rows']:,}",
                f"{s['import_per_s']:,.0f}",
                f"{s['bytes_per_id']:,.1f}",
                f"{s['heap_bytes'] / n:,.1f}",
                f"{s['index_bytes'] / n:,.1f}",
                f"{s['toast_bytes'] / n:,.1f}",
                f"{s['payload_per_id']:,.1f}",
                f"{s['lookup_p50_ms']:.3f}" if s["lookup_p50_ms"] is not None else "",
                f"{s['lookup_p99_ms']:.3f}" if s["lookup_p99_ms"] is not None else "",
                f"{s['lookup_per_s']:,.0f}" if s["lookup_per_s"] is not None else "",
                _blocks_read(s),
                str(s["lookup_errors"]),
                _other(s),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print(
        f"\nidis bench --scale: {report['seconds']:.0f} s on {report['machine']['cpus']} CPUs;"
        f" PostgreSQL shared_buffers {report.get('shared_buffers', '?')}; lookups: HTTP, 4"
        " connections, identifiers at random over the table, none requested before\n"
    )
    for k, r in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "\nblocks read/lookup: heap and index pages PostgreSQL had to get from the OS (not in"
        " shared_buffers) per lookup; other: cores taken by other work on the machine during"
        " the lookups"
    )
    steps = report["steps"]
    if len(steps) > 1:
        a, b = steps[0], steps[-1]
        growth = b["rows"] / a["rows"]
        storage = b["bytes_per_id"] / a["bytes_per_id"]
        print(
            f"\n{growth:g}x the rows: bytes per identifier x{storage:.2f}"
            + (
                f", lookup p50 x{b['lookup_p50_ms'] / a['lookup_p50_ms']:.2f},"
                f" p99 x{b['lookup_p99_ms'] / a['lookup_p99_ms']:.2f}"
                if a["lookup_p50_ms"] and a["lookup_p99_ms"]
                else ""
            )
            + f", import rate x{b['import_per_s'] / a['import_per_s']:.2f}"
        )


def chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = report["steps"]
    if not steps:
        return False
    xs = [s["rows"] for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(xs, [s["bytes_per_id"] for s in steps], "o-", label="PostgreSQL B/id")
    left.plot(xs, [s["payload_per_id"] for s in steps], "s--", label="raw payload B/id")
    left.set_xscale("log")
    left.set_ylim(bottom=0)
    left.set_xlabel("identifiers")
    left.set_title("storage per identifier")
    left.legend()
    right.plot(xs, [s["lookup_p50_ms"] for s in steps], "o-", label="p50")
    right.plot(xs, [s["lookup_p99_ms"] for s in steps], "s-", label="p99")
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("identifiers")
    right.set_ylabel("ms")
    right.set_title("uncached HTTP lookup latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(args: argparse.Namespace) -> int:
    """``idis bench --scale [--sizes 1e6,1e7] [--json F] [--png F]``."""
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as error:
        print(f"idis bench --scale: --sizes: {error}", file=sys.stderr)
        return 2
    report = run_scale(sizes, args.postgres, pin=args.pin)
    print_scale(report)
    json_path = Path(args.json or "bench-scale.json")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    png_path = Path(args.png or "bench-scale.png")
    drawn = chart(report, png_path)
    print(f"\nreport: {json_path}" + (f"; chart: {png_path}" if drawn else ""))
    failed = any(s["lookup_errors"] or s["rejected"] for s in report["steps"])
    return 1 if failed else 0
