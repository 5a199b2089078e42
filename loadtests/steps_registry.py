"""Steps of writing identifiers and what they cost: batch registration (plain and templated),
the realistic resolution mix over what was registered, bytes per identifier, ``idis import``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import time
from typing import Any

from loadtests import drive
from loadtests.generators import own_cpu_apart, pinned, python_run
from loadtests.harness import PREFIX, Suite, Target
from loadtests.loadgen import cpu_sample, cpu_usage
from loadtests.mix import ResolveMix
from loadtests.scratch_db import sql, storage_of

IMPORT_TARGET: Target = (">=", 0.8, "issue 2")
TEMPLATES_TARGET: Target = (">=", 0.8, "issue 12")


def register(suite: Suite) -> None:
    """Batch registration of the realistic population, beside plain COPY of its rows."""
    from registry.importer import RecordParser

    s = suite.s
    node = suite.node or suite.start_node()
    population = suite.population
    credentials = {
        p: drive.Credentials(drive.admin_identity(p), suite.secret) for p in population.prefixes
    }
    before = cpu_sample()
    with pinned(suite.gen_cpus):
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
    suite.raw["register"] = {k: v for k, v in report.items() if not k.startswith("timeline")}
    parser = RecordParser(population.prefixes, suite.now)
    rows = [parser.row(population.handle(i), population.values(i)) for i in range(s.register_count)]
    # The COPY's table stays until the storage step: it holds exactly these identifiers.
    copy_rate = asyncio.run(_copy_rate(suite.dsn, rows))
    errors = sum(report["errors"].values())
    suite.add(
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


def templates(suite: Suite) -> None:
    """Templated batch registration beside untemplated (loadtests.bench_templates)."""
    from loadtests import bench_templates

    s = suite.s
    node = suite.node or suite.start_node()
    with pinned(suite.gen_cpus):
        result = bench_templates.measure(
            node.url,
            PREFIX,
            suite.secret,
            count=s.template_count,
            batch=s.register_batch,
            concurrency=s.register_concurrency,
            rounds=max(2, s.rounds),
            tag=f"TPL{suite.now}",
        )
    suite.raw["templates"] = result
    suite.add(
        "templates",
        f"batch registration of templated records (10 typed attributes, 2 searchable), "
        f"{s.template_count:,}",
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


def mix(suite: Suite) -> None:
    """The realistic resolution mix over the registered population."""
    s = suite.s
    node = suite.node or suite.start_node()
    count = s.register_count
    mix = ResolveMix(suite.population, 0, count, zipf_s=1.1, unknown_share=0.05, seed=11)
    report = python_run(
        node.url,
        mix,
        concurrency=s.concurrency,
        duration=s.duration,
        warmup=max(0.5, s.warmup),
        cpus=suite.gen_cpus,
        groups={"server": [node.pid]},
    )
    suite.raw["mix"] = {k: v for k, v in report.items() if not k.startswith("timeline")}
    bare = next((f.value for f in suite.figures if f.key == "bare"), None)
    by = report["by_outcome"]
    errors = sum(v["count"] for k, v in by.items() if k.startswith("error"))
    suite.add(
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


def storage(suite: Suite) -> None:
    """Bytes per identifier of the realistic population (the rows registered, as the COPY
    baseline of the register step stored them in a table of the same schema and indexes);
    the node's whole ``handles`` table in the detail."""
    sql(suite.dsn, "VACUUM ANALYZE handles")
    node_table = storage_of(suite.dsn)
    exists = sql(suite.dsn, "SELECT to_regclass('handles_copy') IS NOT NULL AS e")[0][0]["e"]
    if exists:
        sql(suite.dsn, "VACUUM ANALYZE handles_copy")
        measured = storage_of(suite.dsn, "handles_copy")
        sql(suite.dsn, "DROP TABLE handles_copy")
        what = f"{measured['rows']:,} realistic identifiers"
    else:
        measured = node_table
        what = f"the node's {measured['rows']:,} rows"
    suite.raw["storage"] = {"population": measured, "node_table": node_table}
    suite.add(
        "storage",
        f"PostgreSQL bytes per identifier ({what})",
        measured["bytes_per_id"],
        "B",
        baseline=measured["payload_per_id"],
        baseline_label="raw payload (handle + values)",
        detail={**measured, "node_table": node_table},
    )


def import_(suite: Suite) -> None:
    """``idis import`` beside plain COPY (loadtests.bench_import, its own database)."""
    from loadtests import bench_import

    s = suite.s
    args = argparse.Namespace(
        rows=s.import_rows,
        repeat=s.import_repeat,
        warmup=1,
        database_url=suite.admin_dsn,
        cli=False,
        profile=None,
    )
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = bench_import.run(args)
    suite.raw["import"] = result
    suite.raw["import_log"] = out.getvalue()
    ratio = result["ratio"]
    suite.add(
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
