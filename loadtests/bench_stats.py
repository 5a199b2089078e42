"""What counting the national statistics costs the hot path (issue 15, item 4): cached REST
resolution on a node counting usage per prefix (``IDIS_STATS__ENABLED=true``, the default: one
more dict addition per resolution, in the quotas' count) beside the same node with it off.

    python -m loadtests.bench_stats [--quick]

Needs ``wrk`` and the benchmark PostgreSQL (as :mod:`loadtests.bench_http`).  Both nodes run
on one scratch database seeded by :mod:`loadtests.bench_http`'s helpers, take turns going
first in each round (so a drift of a shared machine's speed favours neither), and the figure
is the median of the per-round ratios.  :func:`measure` returns::

    {"counting_rate": req/s (median), "baseline_rate": req/s (median),
     "ratio": median of counting/baseline per round, "rounds": [ratio, ...],
     "counted_resolutions": resolutions the counting node stored in usage_daily (> 0: it did
     count), "errors": wrk errors over all runs, "duration": s per run, "concurrency": C}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from loadtests import bench_http
from loadtests.loadgen import run_wrk
from nodes.processes import ServeProcess, free_ports, run_cli

DSN = "postgresql://postgres@127.0.0.1:5432"
SETTINGS = {
    "counting": {"IDIS_STATS__ENABLED": "true"},
    "baseline": {"IDIS_STATS__ENABLED": "false"},
}


async def _resolved(dsn: str) -> int:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await connection.fetchval("SELECT coalesce(sum(resolved), 0) FROM usage_daily"))
    finally:
        await connection.close()


def measure(workdir: Path, dsn: str, quick: bool) -> dict[str, Any]:
    """The figure (see the module docstring) on a scratch database of the server ``dsn``
    (``postgresql://USER@HOST:PORT``), files under ``workdir``."""
    from registry.migrate import upgrade

    duration, rounds, rows, concurrency = (3.0, 3, 2_000, 32) if quick else (8.0, 5, 20_000, 64)
    name = f"idis_bench_stats_{secrets.token_hex(4)}"
    asyncio.run(bench_http._create_database(f"{dsn}/postgres", name))
    database = f"{dsn}/{name}"
    servers: list[ServeProcess] = []
    try:
        upgrade(database)
        secret = workdir / "secret"
        secret.write_text(secrets.token_urlsafe(24))
        env = bench_http.node_settings(database, workdir / "init", free_ports(1)[0])
        run_cli(env, "prefix", "init", bench_http.PREFIX, "--secret-file", str(secret))
        asyncio.run(bench_http._seed(database, rows, int(time.time())))
        nodes = {
            kind: bench_http.start_listed(
                bench_http.bench_node(
                    f"stats-{kind}",
                    database,
                    workdir / f"data-{kind}",
                    workdir / kind,
                    settings=settings,
                ),
                servers,
            )
            for kind, settings in SETTINGS.items()
        }
        path = "/api/handles/" + bench_http.handle_text(1)
        bodies = {}
        for kind, node in nodes.items():
            status, body, _ = bench_http.fetch(node.port, path)
            if status != 200:
                raise RuntimeError(f"{kind}: {path} answered {status}: {body[:200]!r}")
            bodies[kind] = body
        rates: dict[str, list[float]] = {kind: [] for kind in SETTINGS}
        errors = 0
        for n in range(rounds):
            for kind in ("counting", "baseline") if n % 2 == 0 else ("baseline", "counting"):
                node = nodes[kind]
                run_wrk(
                    f"{kind} warm-up",
                    node.url + path,
                    bodies[kind],
                    concurrency=concurrency,
                    duration=1.0,
                )
                result = run_wrk(
                    f"cached, {kind}",
                    node.url + path,
                    bodies[kind],
                    concurrency=concurrency,
                    duration=duration,
                )
                rates[kind].append(result.rate)
                errors += result.error_count
                print(f"  round {n + 1} {kind}: {result.rate:,.0f}/s", file=sys.stderr)
        deadline = time.monotonic() + 15.0  # its flush interval (5 s) passes: the counts land
        while (counted := asyncio.run(_resolved(database))) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        ratios = [c / b for c, b in zip(rates["counting"], rates["baseline"], strict=True) if b]
        return {
            "counting_rate": statistics.median(rates["counting"]),
            "baseline_rate": statistics.median(rates["baseline"]),
            "ratio": statistics.median(ratios),
            "rounds": ratios,
            "counted_resolutions": counted,
            "errors": errors,
            "duration": duration,
            "concurrency": concurrency,
        }
    finally:
        for server in servers:
            server.stop()
        asyncio.run(bench_http._drop_database(f"{dsn}/postgres", name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, fewer rounds")
    parser.add_argument("--postgres", default=DSN, help="postgresql://USER@HOST:PORT")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idis-bench-stats-") as workdir:
        print(json.dumps(measure(Path(workdir), args.postgres, args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
