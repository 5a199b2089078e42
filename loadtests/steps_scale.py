"""The ``scale10x`` step: uncached lookups and bytes per identifier as the table grows tenfold."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any

from loadtests import bench_http
from loadtests.generators import from_python, python_run
from loadtests.harness import PREFIX, SUFFIX_FORMAT, Suite, Target, say
from loadtests.mix import SequenceMix
from loadtests.scratch_db import (
    buffer_reads,
    home_prefixes,
    per_lookup,
    seed_range,
    sql,
    storage_of,
)
from loadtests.stats import median
from nodes.processes import ServeProcess

FLAT_TARGET: Target = ("<=", 1.5, "suite: flat lookups")
PROBE_WARMUP = 0.3
"""Seconds of each probe's lookups left out of its figures (other identifiers of the same
pool, never asked before either): a fresh node's first lookups open its database connections."""
MIN_ROUNDS = 3
"""Rounds at least, even in a quick suite: each order of the two probes, so that neither node
is always the one measured first, and a median that one round disturbed by other work cannot
move (a single one-second round swung the ratio from 0.4x to 2.7x on a shared machine; a
probe during which other processes took 1.5 of the 2 cores ran at 4x the p50)."""


def probe(
    suite: Suite, node: ServeProcess, dsn: str, ids: Sequence[int], label: str
) -> dict[str, Any]:
    """Uncached lookups of ``ids`` (in the order given) at low concurrency: latency, and
    PostgreSQL's block counters per lookup (approximate: backends report them lazily)."""
    api = "/api/handles/" + PREFIX + "/"
    blocks = buffer_reads(dsn)
    mix = SequenceMix(ids, lambda i: api + SUFFIX_FORMAT % i)
    report = python_run(
        node.url,
        mix,
        concurrency=suite.s.probe_concurrency,
        duration=suite.s.probe_seconds,
        warmup=PROBE_WARMUP,
        cpus=suite.gen_cpus,
        groups={"server": [node.pid]},
    )
    out = from_python(label, report)
    out["found"] = report["by_outcome"].get("found", {})
    time.sleep(1.2)  # the counters lag
    # Over every lookup sent, the warm-up's too (the counters cannot tell them apart).
    out["blocks_per_lookup"] = per_lookup(blocks, buffer_reads(dsn), mix.position)
    return out


def scale10x(suite: Suite) -> None:
    """Uncached lookup latency on the base database beside a second database holding 10x
    the rows of the same shape, each behind a fresh node of its own, probed in alternation
    round by round (so that other work on the machine weighs on both alike)."""
    from registry.migrate import upgrade

    s = suite.s
    if suite.node is None:
        suite.start_node()
    big_db = suite.dbname + "_10x"
    big_dsn = suite.dsn.rsplit("/", 1)[0] + "/" + big_db
    big_node: ServeProcess | None = None
    base_node: ServeProcess | None = None
    asyncio.run(bench_http._create_database(suite.admin_dsn, big_db))
    try:
        started = time.monotonic()
        upgrade(big_dsn)
        home_prefixes(big_dsn, suite.workdir / "data10x", [PREFIX], suite.secret)
        how = asyncio.run(seed_range(big_dsn, 0, 10 * s.rows, suite.now))
        sql(big_dsn, "VACUUM ANALYZE handles")
        seed_seconds = time.monotonic() - started
        big_storage = storage_of(big_dsn)
        base_storage = storage_of(suite.dsn)
        big_node = suite.launch_node(big_dsn, suite.workdir / "data10x", "node-10x")
        # A fresh node on the base database too: the main node has served every figure so
        # far (its memory holds their answers), and the two must differ only in rows.  The
        # main node stops here (scale10x is the last step that needs it).
        if suite.node is not None:
            suite.node.stop()
            suite.servers.remove(suite.node)
            suite.node = None
        node = base_node = suite.launch_node(suite.dsn, suite.workdir / "data-base", "node-base")
        rounds = max(MIN_ROUNDS, s.rounds)
        rnd = random.Random(5)
        per = len(suite.probe_ids) // rounds
        base_pool = rnd.sample(suite.probe_ids, per * rounds)
        big_pool = rnd.sample(range(10 * s.rows), per * rounds)
        results: list[dict[str, Any]] = []
        time.sleep(1.2)
        for n in range(rounds):
            ids = slice(n * per, (n + 1) * per)
            runs = [
                ("base", node, suite.dsn, base_pool[ids]),
                ("big", big_node, big_dsn, big_pool[ids]),
            ]
            if n % 2:
                runs.reverse()
            out = {k: probe(suite, srv, dsn, pool, k) for k, srv, dsn, pool in runs}
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
                suite.servers.remove(extra)
        with contextlib.suppress(Exception):
            asyncio.run(bench_http._drop_database(suite.admin_dsn, big_db))
    suite.raw["scale10x"] = {
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
        suite.add(
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
    first = suite.raw.get("storage_seeded")
    if first:
        # Linear storage: a row costs the same at 10x the rows.
        suite.add(
            "scale10x_storage",
            f"bytes per identifier, {big_storage['rows']:,} rows of the seeded shape",
            big_storage["bytes_per_id"],
            "B",
            baseline=first["bytes_per_id"],
            baseline_label=f"at {first['rows']:,} rows",
            detail={"seeded_by": how, "10x": big_storage, "base": first},
        )
