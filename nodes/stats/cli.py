"""``idis stats``: the national statistics from the command line (nodes/stats/)::

idis stats report                 # report this node's figures to its top level now
idis stats recount [PREFIX ...]   # count the identifiers under homed prefixes once more
idis stats show --url URL [--days N] [--json]   # a top level's figures as a table
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httpx

from nodes.settings import SettingsError, load_settings

SHOW_TIMEOUT = 10.0


async def _report() -> list[str]:
    from nodes.bootstrap import build_node
    from nodes.stats.reporter import ReportFailed, report_once
    from registry.stores.usage import SqlUsage

    settings = load_settings()
    node = build_node(settings)
    usage = SqlUsage(settings.database_url)
    try:
        return await report_once(node, usage)
    except ReportFailed as error:
        raise SettingsError(str(error)) from None
    finally:
        await usage.close()
        await node.close()


async def recount(database_url: str, prefixes: list[str] | None = None) -> dict[str, int]:
    """Count the identifiers under ``prefixes`` (default: every homed prefix) once more and
    make that their total (see :meth:`registry.stores.usage.SqlUsage.recount`)."""
    from registry.stores.sql import SqlStore
    from registry.stores.usage import SqlUsage
    from resolver.identifiers import fold

    usage = SqlUsage(database_url)
    try:
        if prefixes is None:
            store = SqlStore(database_url)
            try:
                prefixes = await store.homed_prefixes()
            finally:
                await store.close()
        return {fold(p): await usage.recount(p) for p in prefixes}
    finally:
        await usage.close()


def cmd_report(args: argparse.Namespace) -> int:
    for url in asyncio.run(_report()):
        print(f"reported to {url}")
    return 0


def cmd_recount(args: argparse.Namespace) -> int:
    counts = asyncio.run(recount(load_settings().database_url, args.prefix or None))
    for prefix, count in counts.items():
        print(f"{prefix}: {count:,} identifiers")
    return 0


def render_table(stats: dict[str, Any]) -> str:
    """The ``GET /api/national/stats`` body as text: totals against the targets, one line
    per industry node, one per day."""
    target, totals = stats["target"], stats["totals"]
    lines = [
        f"national statistics as of {totals['asOf']}",
        f"identifiers   {totals['identifiers']:>15,} of {target['identifiers']:,}"
        f" ({totals['identifiers'] / target['identifiers']:.6%})",
        f"resolved today {totals['resolvedToday']:>14,} of {target['resolutionsPerDay']:,} a day"
        f" ({totals['resolvedToday'] / target['resolutionsPerDay']:.6%})",
        f"registered today {totals['registeredToday']:>12,}",
        "",
        f"{'industry node':<16}{'node':<20}{'identifiers':>14}{'registered':>12}{'resolved':>12}"
        "  last report",
    ]
    for node in stats["nodes"]:
        lines.append(
            f"{node['prefix']:<16}{node['node'][:19]:<20}{node['identifiers']:>14,}"
            f"{node['registeredToday']:>12,}{node['resolvedToday']:>12,}  {node['lastReport']}"
        )
    lines += ["", f"{'day':<12}{'identifiers':>14}{'registered':>12}{'resolved':>12}"]
    for day in stats["days"]:
        lines.append(
            f"{day['day']:<12}{day['identifiers']:>14,}{day['registered']:>12,}"
            f"{day['resolved']:>12,}"
        )
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/api/national/stats"
    try:
        response = httpx.get(url, params={"days": args.days}, timeout=SHOW_TIMEOUT)
    except httpx.HTTPError as error:
        raise SettingsError(f"--url {args.url}: {error!r}") from None
    if response.status_code != 200:
        raise SettingsError(f"--url {args.url}: HTTP {response.status_code} {response.text}")
    stats = response.json()
    print(json.dumps(stats, indent=2) if args.json else render_table(stats))
    return 0


def add_stats_commands(commands: Any) -> None:
    stats = commands.add_parser("stats", help="national statistics: report, recount, show")
    actions = stats.add_subparsers(dest="stats_command", required=True)
    report = actions.add_parser(
        "report", help="report this node's figures to its top level now (IDIS_FEDERATION__*)"
    )
    report.set_defaults(run=cmd_report)
    again = actions.add_parser(
        "recount", help="count the identifiers under homed prefixes once more (after an import)"
    )
    again.add_argument("prefix", nargs="*", help="prefixes to count (default: every homed one)")
    again.set_defaults(run=cmd_recount)
    show = actions.add_parser("show", help="a top-level node's national statistics")
    show.add_argument("--url", required=True, help="the top-level node's base URL")
    show.add_argument("--days", type=int, default=7, help="UTC days to list")
    show.add_argument("--json", action="store_true", help="print the JSON as served")
    show.set_defaults(run=cmd_show)
