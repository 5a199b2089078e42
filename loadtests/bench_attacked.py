"""Cached resolution while hostile traffic is attached, beside the same without it.

Two figures of issue 14 share this shape: ``hostile`` (1,000 idle connections and a
slow-header client, :mod:`loadtests.hostile`) and ``logins`` (a stream of failed logins,
:mod:`loadtests.logins`); and issue 12's ``quotas``, where the "attacked" run is a second
node on the same database with quotas on (``subject``).  Each round measures both runs,
taking turns going first so that a drift of the shared machine's speed favours neither; the
figure is the median ratio.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from loadtests import bench_http, hostile
from loadtests.logins import FailedLogins
from loadtests.stats import median

if TYPE_CHECKING:
    from loadtests.harness import Suite, Target

HOSTILE_IDLE = 1000
HOSTILE_SLOW = 1

Attach = Callable[[Any], AbstractContextManager[dict[str, Any]]]
"""Given the node, attaches the hostile traffic for the duration of the ``with`` block and
fills the dict it yields with what that traffic saw."""


def run(
    suite: Suite,
    key: str,
    title: str,
    target: Target,
    attach: Attach,
    *,
    subject: Any = None,
    baseline_label: str = "the same without them",
) -> None:
    """Measure ``key``: cached resolution with ``attach`` against the same without it; on
    ``subject`` (another node) rather than the suite's node for the attached runs, if given."""
    from loadtests.harness import say

    s = suite.s
    node = suite.node or suite.start_node()
    path = "/api/handles/" + bench_http.handle_text(suite.plan.cached_id)
    status, body, _ = bench_http.fetch(node.port, path)
    if status != 200:
        raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "attacked": []}
    seen: list[dict[str, Any]] = []

    def measure(kind: str) -> None:
        on = subject if subject is not None and kind == "attacked" else node

        def cached() -> dict[str, Any]:
            return suite.load.fixed(
                f"cached, {kind}",
                on.url,
                path,
                body,
                groups={"server": [on.pid]},
                duration=s.duration,
                warmup=s.warmup,
            )

        if kind == "plain":
            runs[kind].append(cached())
            return
        with attach(node) as attacker:
            runs[kind].append(cached())
        seen.append(attacker)

    for n in range(s.rounds):
        say(f"  round {n + 1}/{s.rounds} ({suite.load.kind})")
        for kind in ("plain", "attacked") if n % 2 == 0 else ("attacked", "plain"):
            measure(kind)
            say(f"    {kind}: {runs[kind][-1]['rate']:,.0f}/s")
    suite.raw[key] = {**runs, "attacker": seen}
    compared(
        suite,
        key,
        title,
        target,
        runs,
        ("attacked", "plain", baseline_label),
        {"attacker": seen[len(seen) // 2] if seen else {}},
    )


def compared(
    suite: Suite,
    key: str,
    title: str,
    target: Target,
    runs: dict[str, list[dict[str, Any]]],
    kinds: tuple[str, str, str],
    detail: dict[str, Any],
) -> None:
    """Add figure ``key``: the median rate of ``runs[measured]`` beside ``runs[baseline]``
    (``kinds`` is ``(measured, baseline, what the baseline is)``), their median ratio per
    round, and ``detail`` beside the latency and CPU per answer."""
    from loadtests.harness import cpu_per_request

    measured_kind, baseline_kind, baseline_label = kinds
    measured = [float(r["rate"]) for r in runs[measured_kind]]
    baseline = [float(r["rate"]) for r in runs[baseline_kind]]
    ratios = [a / b for a, b in zip(measured, baseline, strict=True) if b]
    mid = runs[measured_kind][len(measured) // 2]
    suite.add(
        key,
        title,
        median(measured),
        "req/s",
        baseline=median(baseline),
        baseline_label=baseline_label,
        ratio=median(ratios),
        target=target,
        generator=suite.load.kind,
        errors=sum(int(r["error_count"]) for k in runs for r in runs[k]),
        rounds=ratios,
        detail={
            "p50_ms": mid.get("p50_ms"),
            "p99_ms": mid.get("p99_ms"),
            # Steadier than rates on a shared machine: the node's CPU per answer.
            "server_cpu_us_per_request": {k: cpu_per_request(runs[k]) for k in runs},
            **detail,
        },
        cpu=mid.get("cpu"),
    )


def quota_node(suite: Suite) -> Any:
    """A second node on the suite's database with a daily resolution quota per prefix so high
    that it never refuses: all of the counting, none of the refusals."""
    node = bench_http.bench_node(
        "node-quotas",
        suite.dsn,
        suite.workdir / "data-quotas",
        suite.workdir / "node-quotas",
        cpus=suite.server_cpus,
    )
    node.env["IDIS_QUOTA__RESOLUTIONS_PER_PREFIX"] = str(10**15)
    return bench_http.start_listed(node, suite.servers)


def idle_and_slow(suite: Suite) -> Attach:
    """1,000 idle connections and a slow-header client (:mod:`loadtests.hostile`)."""

    def attach(node: Any) -> AbstractContextManager[dict[str, Any]]:
        return hostile.attached(
            node.port, idle=HOSTILE_IDLE, slow=HOSTILE_SLOW, cpus=suite.gen_cpus
        )

    return attach


def failed_logins(suite: Suite) -> Attach:
    """A stream of failed logins (:mod:`loadtests.logins`) for the length of one run."""
    s = suite.s

    @contextlib.contextmanager
    def attach(node: Any) -> Iterator[dict[str, Any]]:
        seen: dict[str, Any] = {}
        attacker = FailedLogins(node.url, s.warmup + s.duration + 1.0)
        try:
            yield seen
            seen.update(attacker.result(timeout=s.warmup + s.duration + 60.0))
        finally:
            attacker.stop()

    return attach
