"""What observability costs the hot path (issue 15): cached REST resolution on a node with its
metrics on, JSON logs (at level info) and the national statistics' usage counting on, beside a
node with all of it off (``IDIS_METRICS=false``: the doors count nothing;
``IDIS_STATS__ENABLED=false``) and text logs.

Metrics cannot be turned off without that setting, so the baseline is a node configured so,
on the same database and the same CPUs; the two take turns going first in each round, so that
a drift of the shared machine's speed favours neither, and the figure is the median ratio.
The difference sought is a few percent, less than one short run's noise on a shared machine:
so at least :data:`MIN_ROUNDS` rounds, each run after a warm-up, even in a quick suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loadtests import bench_http
from loadtests.bench_attacked import compared

if TYPE_CHECKING:
    from loadtests.harness import Suite, Target

OBSERVED = {
    "IDIS_METRICS": "true",
    "IDIS_STATS__ENABLED": "true",
    "IDIS_LOG_FORMAT": "json",
    "IDIS_LOG_LEVEL": "info",
}
BARE = {
    "IDIS_METRICS": "false",
    "IDIS_STATS__ENABLED": "false",
    "IDIS_LOG_FORMAT": "text",
    "IDIS_LOG_LEVEL": "info",
}
MIN_ROUNDS = 5
MIN_WARMUP = 0.5


def run(suite: Suite, target: Target) -> None:
    from loadtests.harness import say

    s = suite.s
    nodes = {}
    for kind, settings in (("observed", OBSERVED), ("bare", BARE)):
        node = bench_http.bench_node(
            f"observe-{kind}",
            suite.dsn,
            suite.workdir / f"data-{kind}",
            suite.workdir / f"observe-{kind}",
            cpus=suite.server_cpus,
            settings=settings,
        )
        nodes[kind] = bench_http.start_listed(node, suite.servers)
    path = "/api/handles/" + bench_http.handle_text(suite.plan.cached_id)
    bodies = {}
    for kind, node in nodes.items():
        status, body, _ = bench_http.fetch(node.port, path)
        if status != 200:
            raise RuntimeError(f"{kind}: {path} answered {status}: {body[:200]!r}")
        bodies[kind] = body
    runs: dict[str, list[dict[str, Any]]] = {"observed": [], "bare": []}
    rounds = max(s.rounds, MIN_ROUNDS)
    for n in range(rounds):
        say(f"  round {n + 1}/{rounds} ({suite.load.kind})")
        for kind in ("observed", "bare") if n % 2 == 0 else ("bare", "observed"):
            node = nodes[kind]
            group: dict[str, Sequence[int]] = {"server": [node.pid]}
            runs[kind].append(
                suite.load.fixed(
                    f"cached, {kind}",
                    node.url,
                    path,
                    bodies[kind],
                    groups=group,
                    duration=s.duration,
                    warmup=max(s.warmup, MIN_WARMUP),
                )
            )
            say(f"    {kind}: {runs[kind][-1]['rate']:,.0f}/s")
    counted = scraped_resolutions(nodes["observed"].port)
    suite.raw["observe"] = {**runs, "observed_scraped_resolutions": counted}
    compared(
        suite,
        "observe",
        "HTTP resolution, cached, metrics and JSON logs on",
        target,
        runs,
        ("observed", "bare", "metrics, usage counting off; text logs"),
        {"scraped_resolutions": counted},
    )


def scraped_resolutions(port: int) -> float:
    """The REST resolutions the node's ``/metrics`` counts: the instrumentation did count."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body, _ = bench_http.fetch(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "idis_requests_total"
        and sample.labels.get("door") == "rest"
        and sample.labels.get("operation") == "resolve"
    )
