"""Bulk import throughput (``idis import``) beside plain COPY of the same rows, in one run.

    python -m loadtests.bench_import [--rows N] [--repeat R] [--warmup W]
                                     [--database-url URL] [--cli] [--profile FILE]
                                     [--json out.json]

Needs a PostgreSQL that ``--database-url`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``) lets in with the right to create databases.  The benchmark creates a scratch
database next to that one, migrates it, writes N generated records in the shapes IDIS nodes
hold (enterprise prefixes ``88.1xx.NNNN``, suffixes of 10 to 30 characters, 3 to 8 values:
URL, template reference, product name, batch, dates, ...) to a JSONL file, homes their
prefixes, and drops the database at the end.

After ``--warmup`` rounds that are not reported, each round measures, into an emptied
``handles`` table after a CHECKPOINT:

1. the baseline: one asyncpg ``copy_records_to_table`` of the final rows, pre-encoded
   (key, handle, data) exactly as the import stores them;
2. the import of the file, in process (:func:`registry.importer.import_records`):
   reading, validating, settling and COPYing every record;
3. with ``--cli``, the wall time of ``python -m nodes.cli import FILE`` (start-up included).

(1) and (2) swap places every other round, so that a load drifting on a shared machine favours
neither.  Reported: identifiers/s of each and the ratio (2)/(1), medians over the rounds (the
ratio is the median of each round's ratio); the target is >= 0.8.  Also the share of its wall
time the importing process spent on a CPU, and its CPU time per row: near 100% means the
import is bound by Python's work per record, not by the database; well below, that it waited,
for the server or for a CPU other processes held (on Linux, the share of its time it waited
for a CPU is reported too: on a shared machine, what the import loses to other work).

``--profile FILE`` writes a cProfile of one more import.  The exit status is 0 when the target
is met and every run loaded every row, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import statistics
import string
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from nodes.processes import run_cli
from registry import migrate
from registry.importer import (
    RecordParser,
    Row,
    import_records,
)

TARGET = 0.8
CLI_TIMEOUT = 3600.0
_ALPHABET = string.ascii_uppercase + string.digits
_PRODUCTS = ["智能电表", "Hydraulic pump HP-200", "锂电池模组", "Servo motor SM-4", "工业网关"]
_ORIGINS = ["CN-GD-Shenzhen", "CN-JS-Suzhou", "CN-ZJ-Ningbo", "CN-SH-Minhang"]


def generate(path: Path, rows: int, seed: int = 7) -> list[str]:
    """Write ``rows`` records as JSONL to ``path``; the prefixes they use."""
    rnd = random.Random(seed)
    prefixes = [f"88.1{rnd.randint(0, 99):02d}.{rnd.randint(1, 9999)}" for _ in range(40)]
    with path.open("wb") as out:
        for n in range(rows):
            prefix = rnd.choice(prefixes)
            suffix = f"{n:08X}" + "".join(rnd.choices(_ALPHABET, k=rnd.randint(2, 22)))
            values: list[dict[str, Any]] = [
                {
                    "index": 1,
                    "type": "URL",
                    "data": {"format": "string", "value": f"https://trace.example.cn/p/{suffix}"},
                },
                {"index": 1001, "type": "TEMPLATE", "data": f"{prefix}/tpl-product-v2"},
                {"index": 2000, "type": "productName", "data": rnd.choice(_PRODUCTS)},
            ]
            extra = [
                ("batchNo", f"B{rnd.randint(2020, 2026)}{rnd.randint(1, 999999):06d}"),
                ("productionDate", f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"),
                ("manufacturer", f"{prefix} Manufacturing Co., Ltd."),
                ("origin", rnd.choice(_ORIGINS)),
                ("model", f"M-{rnd.randint(100, 999)}"),
            ]
            for index, (kind, data) in enumerate(rnd.sample(extra, rnd.randint(0, 5)), 2001):
                value: dict[str, Any] = {"index": index, "type": kind, "data": data}
                if rnd.random() < 0.1:
                    value["ttl"] = 3600
                values.append(value)
            out.write(orjson.dumps({"handle": f"{prefix}/{suffix}", "values": values}))
            out.write(b"\n")
    return prefixes


def final_rows(path: Path, prefixes: Sequence[str], now: int) -> list[Row]:
    """The rows the import stores for the file (validated by the importer's own parser)."""
    parser = RecordParser(prefixes, now)
    with path.open("rb") as lines:
        return [
            parser.row(record["handle"], record["values"]) for record in map(orjson.loads, lines)
        ]


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _reset(dsn: str) -> None:
    # Empty tables and a checkpoint, so that no round pays for the previous one's dirty pages.
    # The search index goes with the records (an import writes both).
    await _admin(dsn, "TRUNCATE handles, attr_index", "CHECKPOINT")


async def _copy(dsn: str, rows: list[Row]) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("handles", records=rows, columns=("key", "handle", "data"))
        return time.perf_counter() - started
    finally:
        await conn.close()


def _runqueue_wait() -> float | None:
    """Seconds this process has spent runnable but waiting for a CPU (Linux), or None."""
    try:
        with open("/proc/self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM handles"))
    finally:
        await conn.close()


def _cli(dsn: str, path: Path, data_dir: Path) -> float:
    """Seconds ``idis import PATH`` takes as a process of its own (raises if it fails)."""
    env = dict(os.environ, IDIS_DATABASE_URL=dsn, IDIS_DATA_DIR=str(data_dir))
    started = time.perf_counter()
    run_cli(env, "import", str(path), timeout=CLI_TIMEOUT)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = make_url(args.database_url)
    admin_dsn = server.render_as_string(hide_password=False)
    name = f"idis_bench_import_{uuid.uuid4().hex[:10]}"
    dsn = server.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="idis-bench-import-") as tmp:
            return _measure(args, dsn, Path(tmp))
    finally:
        asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _measure(args: argparse.Namespace, dsn: str, tmp: Path) -> dict[str, Any]:
    migrate.upgrade(dsn)
    path = tmp / "records.jsonl"
    started = time.perf_counter()
    prefixes = generate(path, args.rows)
    print(
        f"generated {args.rows} records ({path.stat().st_size / 2**20:.0f} MiB)"
        f" in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    homes = ", ".join(f"('{p}', '{p}')" for p in prefixes)
    asyncio.run(_admin(dsn, f"INSERT INTO prefixes (key, prefix) VALUES {homes}"))
    now = int(time.time())
    rows = final_rows(path, prefixes, now)
    copy_rates, import_rates, cli_rates, cpu_shares, cpu_per_row = [], [], [], [], []
    cpu_waits: list[float] = []
    complete = True

    def baseline() -> bool:
        asyncio.run(_reset(dsn))
        copy_rates.append(len(rows) / asyncio.run(_copy(dsn, rows)))
        return asyncio.run(_count(dsn)) == len(rows)

    def imported() -> bool:
        asyncio.run(_reset(dsn))
        cpu = time.process_time()
        queued = _runqueue_wait()
        report = asyncio.run(import_records(dsn, path, now=now))
        if queued is not None:
            cpu_waits.append(((_runqueue_wait() or 0.0) - queued) / report.elapsed)
        cpu_shares.append((time.process_time() - cpu) / report.elapsed)
        cpu_per_row.append((time.process_time() - cpu) / max(report.loaded, 1))
        import_rates.append(report.loaded / report.elapsed)
        return (
            report.loaded == len(rows)
            and not report.rejected
            and asyncio.run(_count(dsn)) == len(rows)
        )

    # Unreported: the first loads into a new database run slower (seen: COPY at half speed),
    # which would favour whichever went second.
    for _ in range(args.warmup):
        complete &= baseline() & imported()
    for figures in (copy_rates, import_rates, cpu_shares, cpu_per_row, cpu_waits):
        figures.clear()
    for round_ in range(1, args.repeat + 1):
        # Either first in turn, so that a load drifting on a shared machine favours neither.
        if round_ % 2:
            complete &= baseline()
            complete &= imported()
        else:
            complete &= imported()
            complete &= baseline()
        line = f"round {round_}: COPY {copy_rates[-1]:>9,.0f}/s  import {import_rates[-1]:>9,.0f}/s"
        if args.cli:
            asyncio.run(_reset(dsn))
            cli_rates.append(len(rows) / _cli(dsn, path, tmp / "data"))
            complete &= asyncio.run(_count(dsn)) == len(rows)
            line += f"  CLI {cli_rates[-1]:>9,.0f}/s"
        line += f"  ratio {import_rates[-1] / copy_rates[-1]:.2f}"
        waited = ""
        if cpu_waits:
            waited = f", waiting for a CPU {cpu_waits[-1]:.0%}"
        print(
            line + f"  (import process busy {cpu_shares[-1]:.0%} of its time{waited},"
            f" {cpu_per_row[-1] * 1e6:.2f} us of CPU a row)",
            flush=True,
        )
    if args.profile:
        asyncio.run(_reset(dsn))
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(import_records(dsn, path, now=now))
        profiler.disable()
        profiler.dump_stats(args.profile)
    copy_rate = statistics.median(copy_rates)
    import_rate = statistics.median(import_rates)
    # Each round's two runs are minutes apart at most: their ratio is the robust figure.
    ratio = statistics.median(i / c for i, c in zip(import_rates, copy_rates, strict=True))
    result: dict[str, Any] = {
        "rows": len(rows),
        "file_bytes": path.stat().st_size,
        "copy_per_s": round(copy_rate),
        "import_per_s": round(import_rate),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "import_cpu_share": round(statistics.median(cpu_shares), 3),
        "import_cpu_us_per_row": round(statistics.median(cpu_per_row) * 1e6, 2),
        "import_cpu_wait_share": round(statistics.median(cpu_waits), 3) if cpu_waits else None,
        "rounds": {"copy_per_s": copy_rates, "import_per_s": import_rates},
        "complete": complete,
    }
    if cli_rates:
        result["cli_per_s"] = round(statistics.median(cli_rates))
        result["rounds"]["cli_per_s"] = cli_rates
    return result


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m loadtests.bench_import", description=__doc__)
    cli.add_argument("--rows", type=int, default=200_000)
    cli.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    cli.add_argument(
        "--warmup", type=int, default=1, help="rounds run first and not reported (default 1)"
    )
    cli.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database of the server to benchmark on (the scratch database goes beside it)",
    )
    cli.add_argument("--cli", action="store_true", help="also time `idis import` as a process")
    cli.add_argument("--profile", metavar="FILE", help="write a cProfile of one more import")
    cli.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = cli.parse_args(argv)
    result = run(args)
    print(
        f"{result['rows']} rows: plain COPY {result['copy_per_s']:,}/s,"
        f" idis import {result['import_per_s']:,}/s"
        + (f" (CLI {result['cli_per_s']:,}/s)" if "cli_per_s" in result else "")
        + f", ratio {result['ratio']:.2f} (target >= {TARGET})"
        + ("" if result["complete"] else "; SOME ROWS WERE NOT LOADED")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["complete"] and result["ratio"] >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
