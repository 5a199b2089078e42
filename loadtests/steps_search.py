"""The step of search by value: ``GET /api/search`` p50 beside a primary-key lookup of the same
node at the same size (:mod:`loadtests.bench_search`, its own scratch database: 1M templated
identifiers with ``--quick``, 10M without)."""

from __future__ import annotations

from loadtests import bench_search
from loadtests.harness import Suite, Target

SEARCH_TARGET: Target = ("<=", bench_search.TARGET, "issue 12")


def search(suite: Suite) -> None:
    """Exact and range search p50 against lookup p50 (two rows of the table)."""
    quick = suite.s.mode == "quick"
    workdir = suite.workdir / "search"
    workdir.mkdir(parents=True, exist_ok=True)
    result = bench_search.measure(
        workdir,
        suite.admin_dsn,
        quick,
        server_cpus=suite.server_cpus,
        client_cpus=suite.gen_cpus,
    )
    suite.raw["search"] = result
    rows = result["rows"]
    for kind, what in (("exact", "exact value (one hit)"), ("range", "number range (ten hits)")):
        suite.add(
            f"search_{kind}",
            f"search p50, {what}, {rows:,} templated identifiers",
            result[f"{kind}_p50_ms"],
            "ms",
            baseline=result["lookup_p50_ms"],
            baseline_label="primary-key lookup, GET /api/handles, same node",
            ratio=result[f"{kind}_ratio"],
            target=SEARCH_TARGET,
            generator="python",
            errors=result["errors"],
            detail={
                "p99_ms": result[f"{kind}_p99_ms"],
                "lookup_p99_ms": result["lookup_p99_ms"],
                "requests": result["requests"],
                "seed_seconds": result["seed_seconds"],
                "plan": result["plans"][kind],
            },
        )
