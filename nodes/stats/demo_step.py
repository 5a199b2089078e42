"""The demo's national statistics step (``idis demo``, nodes/demo.py).

The secondary nodes count what they registered and resolved in the steps before and report it
upward (every :data:`DEMO_ENV` ``IDIS_STATS__REPORT_INTERVAL``; ``idis stats report`` once
more here, as an operator would); the step waits until a top-level node's ``GET
/api/national/stats`` shows both industry nodes with registrations and resolutions, and prints
the figures against the national targets.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.table import Table

from nodes.demo_cluster import Demo
from nodes.demo_output import StepFailed

DEMO_ENV = {"IDIS_STATS__FLUSH_INTERVAL": "1", "IDIS_STATS__REPORT_INTERVAL": "2"}
"""Settings of the demo's secondary nodes: counts flushed every second, reported every two."""
INDUSTRY_NODES = ("88.100", "88.101")
TIMEOUT = 20.0
HTTP_TIMEOUT = 10.0


def _stats(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/national/stats", params={"days": 7}, timeout=HTTP_TIMEOUT)
    if response.status_code != 200:
        raise StepFailed(f"GET /api/national/stats: HTTP {response.status_code} {response.text}")
    return dict(response.json())


def _shown(stats: dict[str, Any]) -> bool:
    nodes = {node["prefix"]: node for node in stats["nodes"]}
    return all(
        p in nodes and nodes[p]["registeredToday"] > 0 and nodes[p]["resolvedToday"] > 0
        for p in INDUSTRY_NODES
    )


def table(stats: dict[str, Any]) -> Table:
    """The figures as a table: one row per industry node, and the national totals."""
    target, totals = stats["target"], stats["totals"]
    found = Table(title=f"national statistics (运行监测) as of {totals['asOf']}")
    for column in ("industry node", "reported by", "identifiers", "registered today"):
        found.add_column(column, justify="left" if "node" in column else "right")
    found.add_column("resolved today", justify="right")
    for node in stats["nodes"]:
        found.add_row(
            f"{node['prefix']} ({', '.join(node.get('prefixes', []))})",
            node["node"],
            f"{node['identifiers']:,}",
            f"{node['registeredToday']:,}",
            f"{node['resolvedToday']:,}",
        )
    found.add_row(
        "[bold]national[/]",
        "",
        f"{totals['identifiers']:,} of {target['identifiers']:,}",
        f"{totals['registeredToday']:,}",
        f"{totals['resolvedToday']:,} of {target['resolutionsPerDay']:,} a day",
    )
    return found


def national_statistics(demo: Demo, top: str = "Shanghai") -> None:
    """The step (see the module docstring), reading the figures at the top-level node ``top``."""
    url = demo.member(top).url
    with demo.steps.step(
        "the secondary nodes report their counts upward; the top level shows them"
    ) as notes:
        secondary = demo.member("secondary-88.100")
        demo.cluster.cli(secondary, "stats", "report")
        deadline = time.monotonic() + TIMEOUT
        stats = _stats(url)
        while not _shown(stats):
            if time.monotonic() > deadline:
                raise StepFailed(f"{top} does not show both industry nodes: {stats['nodes']}")
            time.sleep(0.2)
            stats = _stats(url)
        notes.append("idis stats report at secondary-88.100; both report every 2 s on their own")
        notes.append(f"GET {url}/api/national/stats (idis stats show --url {url})")
    demo.console.print(table(stats))
