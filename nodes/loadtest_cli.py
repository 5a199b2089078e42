"""``idis loadtest`` and ``idis bench``: drive a deployment, plan for a target, benchmark this
machine.  Thin wrappers: the work is in the ``loadtests`` package.

::

    idis loadtest register --target URL --count N --secret-file F [--identity ID]
                           [--prefix P ...] [--start I] [--batch-size B] [--concurrency C]
                           [--max-seconds S] [--json report.json]
    idis loadtest resolve  --target URL --duration S --concurrency C [--from register.json |
                           --count N [--prefix P ...]] [--unknown-share 0.05] [--zipf 1.1]
                           [--json report.json]
    idis loadtest ceiling  [--duration S] [--concurrency C]
    idis loadtest plan     [--from report.json ...] [--database-url URL] [--target-ids 2e9]
                           [--daily 150e6] [--peak-factor 10] [--json plan.json]
    idis bench [--quick | --scale] [--json bench.json] [--png bench.png]

Reports are JSON (``--json``); a run stopped with Ctrl-C prints and writes what it measured
(``"stopped_by": "interrupt"``).  Heavy modules (rich, the generator) are imported by the
commands themselves, so that ``idis`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes.settings import SettingsError, read_secret_file

if TYPE_CHECKING:
    from loadtests.shapes import Population


def _write_json(path: str | None, report: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"report written to {path}")


def _population(args: argparse.Namespace, described: dict[str, Any] | None = None) -> Population:
    from loadtests.shapes import DEFAULT_PREFIXES, Population

    described = described or {}
    prefixes = tuple(args.prefix or described.get("prefixes") or ())
    if not prefixes and getattr(args, "identity", None):
        # 300:88.100.1/ADMIN registers under 88.100.1.
        handle = args.identity.partition(":")[2] or args.identity
        prefixes = (handle.partition("/")[0],)
    seed = args.seed if args.seed is not None else int(described.get("seed", 1))
    return Population(prefixes or DEFAULT_PREFIXES, seed=seed)


def _fmt_ms(summary: dict[str, Any], key: str) -> str:
    return f"{summary.get(key, 0.0):,.2f}"


# --- register -------------------------------------------------------------------------------


def cmd_register(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from loadtests import drive
    from loadtests.stats import generator_verdict

    secret = read_secret_file(args.secret_file)
    population = _population(args)
    credentials = {
        p: drive.Credentials(args.identity or drive.admin_identity(p), secret)
        for p in population.prefixes
    }
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("registering"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} ids/s  errors {task.fields[errors]:,}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        auto_refresh=False,
        disable=args.no_progress,
    )
    task = progress.add_task("register", total=args.count, rate=0.0, errors=0)

    def tick(state: dict[str, Any]) -> None:
        elapsed = state["elapsed"] or 1e-9
        progress.update(
            task, completed=state["done"], rate=state["done"] / elapsed, errors=state["errors"]
        )
        progress.refresh()

    print(
        f"registering {args.count:,} identifiers at {args.target} under"
        f" {', '.join(population.prefixes)} (Ctrl-C stops with a partial report)",
        flush=True,
    )
    with progress:
        report = drive.run(
            lambda stop: drive.register(
                args.target,
                population,
                credentials,
                start=args.start or 0,
                count=args.count,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                timeout=args.timeout,
                stop=stop,
                on_tick=tick,
            )
        )
    b = report["batches"]
    print(
        f"registered {report['registered']:,} of {report['count']:,} identifiers"
        f" ({', '.join(f'{k} {v:,}' for k, v in report['by_status'].items()) or 'none'})"
        f" in {report['elapsed_s']:.1f} s: {report['identifiers_per_s']:,.0f} identifiers/s;"
        f" stopped by {report['stopped_by']}"
    )
    print(
        f"batches of {report['batch_size']}, {report['concurrency']} in flight:"
        f" {b['count']:,} answered, latency p50 {_fmt_ms(b, 'p50_ms')} ms,"
        f" p99 {_fmt_ms(b, 'p99_ms')} ms, max {_fmt_ms(b, 'max_ms')} ms;"
        f" {report['retries']} retries"
    )
    errors = report["errors"]
    print(
        "errors by response code: "
        + (", ".join(f"{k}: {v:,}" for k, v in sorted(errors.items())) if errors else "none")
    )
    if report["not_sent"]:
        print(f"not sent: {report['not_sent']:,} (the run was stopped)")
    print(generator_verdict(report["generator"]))
    _write_json(args.json, report)
    return 0 if not errors and report["registered"] == report["count"] else 1


# --- resolve --------------------------------------------------------------------------------


def _print_outcomes(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=None, show_edge=False)
    for name in ("outcome", "count", "per s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"):
        table.add_column(name, justify="left" if name == "outcome" else "right")
    for outcome, s in report["by_outcome"].items():
        table.add_row(
            outcome,
            f"{s['count']:,}",
            f"{s['per_s']:,.0f}",
            _fmt_ms(s, "p50_ms"),
            _fmt_ms(s, "p90_ms"),
            _fmt_ms(s, "p99_ms"),
            _fmt_ms(s, "p999_ms"),
            _fmt_ms(s, "max_ms"),
        )
    Console().print(table)


def cmd_resolve(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from loadtests import drive
    from loadtests.mix import ResolveMix
    from loadtests.stats import generator_verdict

    described: dict[str, Any] | None = None
    start, count = args.start, args.count
    if args.from_report:
        try:
            source = json.loads(Path(args.from_report).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SettingsError(f"--from {args.from_report}: {error}") from None
        if source.get("kind") != "register":
            raise SettingsError(f"--from {args.from_report} is not a loadtest register report")
        described = source["population"]
        start = source["start"] if args.start is None else start
        count = source["registered"] if count is None else count
    if not count:
        raise SettingsError(
            "say which identifiers exist: --from REGISTER_REPORT, or --count N (the first N"
            " identifiers `idis loadtest register` creates with the same --prefix and --seed)"
        )
    population = _population(args, described)
    mix = ResolveMix(
        population,
        start or 0,
        count,
        zipf_s=args.zipf,
        unknown_share=args.unknown_share,
        seed=args.mix_seed,
    )
    ceiling = None
    if args.ceiling_seconds > 0:
        print(f"measuring the generator's ceiling for {args.ceiling_seconds:g} s ...", flush=True)
        ceiling = drive.measure_ceiling(concurrency=args.concurrency, duration=args.ceiling_seconds)
    progress = Progress(
        TextColumn("resolving"),
        BarColumn(),
        TextColumn("{task.fields[done]:>10,} requests {task.fields[rate]:>9,.0f}/s"),
        TextColumn("errors {task.fields[errors]:,}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
        disable=args.no_progress,
    )
    total = args.warmup + args.duration
    task = progress.add_task("resolve", total=total, done=0, rate=0.0, errors=0)

    def tick(state: dict[str, Any]) -> None:
        elapsed = state["elapsed"]
        measured = max(1e-9, elapsed - args.warmup)
        progress.update(
            task,
            completed=min(total, elapsed),
            done=state["done"],
            rate=state["done"] / measured if elapsed > args.warmup else 0.0,
            errors=state["errors"],
        )
        progress.refresh()

    print(
        f"resolving at {args.target} for {args.warmup + args.duration:g} s"
        " (Ctrl-C stops with a partial report)",
        flush=True,
    )
    with progress:
        report = drive.run(
            lambda stop: drive.resolve(
                args.target,
                mix,
                concurrency=args.concurrency,
                duration=args.duration,
                max_requests=args.max_requests,
                warmup=args.warmup,
                timeout=args.timeout,
                stop=stop,
                on_tick=tick,
            )
        )
    if ceiling is not None:
        report["generator_ceiling"] = {
            "per_s": ceiling["per_s"],
            "cpu_share": ceiling["generator"]["cpu_share"],
            "concurrency": ceiling["concurrency"],
            "duration_s": ceiling["duration_s"],
        }
    print(
        f"{report['requests']:,} requests in {report['elapsed_s']:.1f} s:"
        f" {report['per_s']:,.0f} requests/s at concurrency {report['concurrency']}"
        f" (Zipf s={args.zipf:g} over {count:,} identifiers, {args.unknown_share:.0%} unknown);"
        f" stopped by {report['stopped_by']}"
    )
    _print_outcomes(report)
    if report["anomalies"]:
        print("anomalies: " + ", ".join(f"{k}: {v:,}" for k, v in report["anomalies"].items()))
    print(generator_verdict(report["generator"]))
    if ceiling is not None:
        share = report["per_s"] / ceiling["per_s"] if ceiling["per_s"] else 0.0
        print(
            f"generator ceiling on this machine (against a constant server):"
            f" {ceiling['per_s']:,.0f} requests/s; this run used {share:.0%} of it"
            + (" -- near the ceiling: the generator may be the limit" if share > 0.8 else "")
        )
    _write_json(args.json, report)
    errors = sum(s["count"] for k, s in report["by_outcome"].items() if k.startswith("error"))
    return 0 if not errors else 1


def cmd_ceiling(args: argparse.Namespace) -> int:
    from loadtests import drive
    from loadtests.stats import generator_verdict

    report = drive.measure_ceiling(concurrency=args.concurrency, duration=args.duration)
    print(
        f"generator ceiling: {report['per_s']:,.0f} requests/s against a constant server on"
        f" 127.0.0.1 ({report['concurrency']} keep-alive connections,"
        f" {report['generator']['loop']})"
    )
    print(generator_verdict(report["generator"]))
    _write_json(args.json, report)
    return 0


# --- plan -----------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    import asyncio

    from loadtests.plan import inputs_from_reports, load_reports, make_plan, measure_bytes_per_id

    try:
        inputs = inputs_from_reports(load_reports(args.from_reports or []))
    except ValueError as error:
        raise SettingsError(str(error)) from None
    if args.database_url:
        try:
            inputs.bytes_per_id = asyncio.run(measure_bytes_per_id(args.database_url))
        except (OSError, ValueError) as error:
            raise SettingsError(f"--database-url: {error}") from None
        except Exception as error:  # asyncpg's errors
            raise SettingsError(f"--database-url: {error}") from None
    try:
        plan = make_plan(
            inputs,
            target_ids=args.target_ids,
            daily=args.daily,
            peak_factor=args.peak_factor,
            disk_per_node=args.disk_per_node,
            max_fill=args.max_fill,
            max_utilisation=args.max_utilisation,
            min_nodes=args.min_nodes,
        )
    except ValueError as error:
        raise SettingsError(str(error)) from None
    print(
        f"plan for {args.target_ids:,.0f} identifiers and {args.daily:,.0f} resolutions a day"
        f" (peak factor {args.peak_factor:g})"
    )
    for line in plan["lines"]:
        print(line)
    if plan["missing"]:
        print("missing measurements: " + ", ".join(plan["missing"]))
    _write_json(args.json, plan)
    return 0 if not plan["missing"] else 1


# --- bench ----------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from loadtests import suite

    if args.scale:
        return suite.main_scale(args)
    return suite.main_bench(args)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def _count(text: str) -> int:
    value = _positive_float(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text} is not a whole number")
    return int(value)


def add_loadtest_commands(commands: Any) -> None:
    """Register ``idis loadtest ...`` and ``idis bench`` on the ``idis`` subcommands."""
    loadtest = commands.add_parser(
        "loadtest", help="drive a deployment: register, resolve, plan for a target"
    )
    actions = loadtest.add_subparsers(dest="loadtest_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", required=True, help="base URL of the node, http://H:P")
        parser.add_argument(
            "--prefix",
            action="append",
            help="enterprise prefix of the synthetic identifiers (repeatable; default: the"
            " identity's prefix, else eight prefixes under 88.100-88.123)",
        )
        parser.add_argument("--seed", type=int, help="population seed (default 1)")
        parser.add_argument("--start", type=int, help="first identifier index (default 0)")
        parser.add_argument("--timeout", type=float, help="seconds before a request is abandoned")
        parser.add_argument("--json", help="write the report here")
        parser.add_argument("--no-progress", action="store_true", help="no live progress bar")

    register = actions.add_parser(
        "register", help="register N synthetic identifiers through the batch API"
    )
    common(register)
    register.add_argument("--count", type=_count, required=True, help="identifiers to register")
    register.add_argument(
        "--identity",
        help="who registers, e.g. 300:88.100.1/ADMIN (default: 300:PREFIX/ADMIN per prefix)",
    )
    register.add_argument("--secret-file", required=True, help="that identity's secret")
    register.add_argument("--batch-size", type=int, default=1000, help="handles per call (≤2000)")
    register.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    register.add_argument(
        "--max-seconds", type=_positive_float, default=3600.0, help="stop after this long"
    )
    register.set_defaults(run=cmd_register, timeout=120.0)

    resolve = actions.add_parser(
        "resolve", help="resolve a Zipf-skewed mix with a share of unknown identifiers"
    )
    common(resolve)
    resolve.add_argument("--duration", type=_positive_float, required=True, help="seconds")
    resolve.add_argument("--concurrency", type=int, required=True, help="keep-alive connections")
    resolve.add_argument(
        "--from", dest="from_report", help="a register report: which identifiers exist"
    )
    resolve.add_argument(
        "--count", type=_count, help="identifiers registered (indexes START..START+N-1)"
    )
    resolve.add_argument("--zipf", type=_positive_float, default=1.1, help="Zipf exponent s")
    resolve.add_argument(
        "--unknown-share", type=float, default=0.05, help="share of never-registered ids"
    )
    resolve.add_argument("--warmup", type=float, default=0.0, help="unmeasured seconds first")
    resolve.add_argument(
        "--max-requests", type=_count, default=50_000_000, help="stop after this many"
    )
    resolve.add_argument("--mix-seed", type=int, help="seed of the random draws")
    resolve.add_argument(
        "--ceiling-seconds",
        type=float,
        default=2.0,
        help="first measure the generator's ceiling against a local constant server (0: skip)",
    )
    resolve.set_defaults(run=cmd_resolve, timeout=10.0)

    ceiling = actions.add_parser(
        "ceiling", help="the generator's own ceiling, against a constant server on loopback"
    )
    ceiling.add_argument("--duration", type=_positive_float, default=3.0, help="seconds")
    ceiling.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    ceiling.add_argument("--json", help="write the report here")
    ceiling.set_defaults(run=cmd_ceiling)

    plan = actions.add_parser("plan", help="plan nodes, storage and time for a target")
    plan.add_argument(
        "--from",
        dest="from_reports",
        action="append",
        metavar="REPORT",
        help="a register, resolve, bench or scale JSON report (repeatable)",
    )
    plan.add_argument(
        "--database-url", help="measure bytes per identifier in this node's PostgreSQL"
    )
    plan.add_argument(
        "--target-ids", type=_positive_float, default=2e9, help="identifiers to plan for"
    )
    plan.add_argument("--daily", type=float, default=150e6, help="resolutions a day")
    plan.add_argument(
        "--peak-factor", type=_positive_float, default=10.0, help="peak rate over the daily mean"
    )
    plan.add_argument(
        "--disk-per-node", type=_positive_float, default=2e12, help="bytes of disk per node"
    )
    plan.add_argument("--max-fill", type=float, default=0.7, help="fill the disks at most this")
    plan.add_argument(
        "--max-utilisation",
        type=float,
        default=0.7,
        help="run nodes at most at this share of measured capacity",
    )
    plan.add_argument("--min-nodes", type=int, default=1, help="secondary nodes at least")
    plan.add_argument("--json", help="write the plan here")
    plan.set_defaults(run=cmd_plan)

    bench = commands.add_parser(
        "bench", help="benchmark this machine: every figure beside its baseline, in one run"
    )
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="a short run (about five minutes on 2 cores)"
    )
    mode.add_argument(
        "--scale", action="store_true", help="load 1M then 10M identifiers; cost at each size"
    )
    bench.add_argument("--json", help="report file (default bench.json / bench-scale.json)")
    bench.add_argument("--png", help="chart file (default bench.png / bench-scale.png)")
    bench.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server for the scratch databases (loopback, trust auth)",
    )
    bench.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load: wrk when installed (auto), or the Python generator",
    )
    bench.add_argument(
        "--sizes",
        default="1e6,1e7",
        help="with --scale: the sizes to load, comma-separated (default 1e6,1e7)",
    )
    bench.add_argument(
        "--only",
        help="run only these figures (comma-separated keys: http, native, dns, hostile, logins,"
        " quotas, observe, register, templates, mix, storage, scale10x, crosshost, import,"
        " recursive, failover, search)",
    )
    bench.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin to CPUs")
    bench.set_defaults(run=cmd_bench)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - for python -m
    from nodes.cli import main as idis_main

    return idis_main(["loadtest", *(argv or sys.argv[1:])])
