"""The report of :mod:`loadtests.bench_recursive`: each figure beside its baseline over the
rounds, judged against its target, and the printed tables."""

from __future__ import annotations

from typing import Any

from loadtests.recursive_cold import COLD_FIGURES, CPU_GROUPS, HOPS
from loadtests.recursive_federation import COLD_TARGET
from loadtests.stats import median


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Each figure as the median over the rounds, beside its baseline, with the median of the
    per-round ratios and a verdict where there is a target; ``report["passed"]``."""
    rounds = report["rounds"]
    results: list[dict[str, Any]] = []

    def parts(key: str) -> list[str]:
        return list(HOPS) if key == "hops" else [key]

    def values(key: str, name: str) -> list[float]:
        return [sum(float(r[k][name]) for k in parts(key)) for r in rounds]

    def errors(key: str) -> int:
        return sum(
            int(r[k].get("error_count", r[k].get("errors", 0))) for r in rounds for k in parts(key)
        )

    def add(
        figure: str,
        key: str,
        name: str,
        base: str | None = None,
        target: tuple[str, float] | None = None,
    ) -> None:
        own = values(key, name)
        entry: dict[str, Any] = {
            "figure": figure,
            "key": f"{key}.{name}",
            "unit": "req/s" if name == "rate" else "ms",
            "value": round(median(own), 4),
            "rounds": [round(v, 4) for v in own],
            "samples": sum(int(r[k]["ok"]) for r in rounds for k in parts(key)),
            "errors": errors(key),
        }
        if base is not None:
            bases = values(base, name)
            ratios = [v / b for v, b in zip(own, bases, strict=True) if b]
            entry |= {
                "baseline": round(median(bases), 4),
                "baseline_key": f"{base}.{name}",
                "ratio": round(median(ratios), 3) if ratios else None,
                "ratio_rounds": [round(x, 3) for x in ratios],
            }
            entry["errors"] += errors(base)
        if name == "rate" and base is not None:
            # Requests per CPU-second of the serving node: steadier than req/s when other jobs
            # take part of its core.
            per_core = []
            for r in rounds:
                a, b = r[key]["cpu"].get("recursive"), r[base]["cpu"].get("secondary")
                if a and b:
                    per_core.append((r[key]["rate"] / a) / (r[base]["rate"] / b))
            entry["ratio_per_server_core"] = round(median(per_core), 3) if per_core else None
        if target is not None:
            op, bound = target

            def meets(x: float | None) -> bool:
                return x is not None and (x >= bound if op == ">=" else x <= bound)

            entry["target"] = f"{op} {bound:g}"
            entry["passed"] = meets(entry.get("ratio")) and entry["errors"] == 0
            core_ratio = entry.get("ratio_per_server_core")
            if core_ratio is not None and meets(core_ratio) != meets(entry.get("ratio")):
                # The machine was busy with other work: neither verdict can be trusted.
                entry["passed"] = False
                entry["disagrees"] = True
        results.append(entry)

    add("(a) direct at the secondary, warm: throughput", "direct_warm", "rate")
    add("(a) direct, warm: p50", "direct_warm", "p50_ms")
    add("(a) direct, warm: p99", "direct_warm", "p99_ms")
    add("(b) recursive, warm: throughput", "recursive_warm", "rate", "direct_warm", (">=", 0.9))
    add("(b) recursive, warm: p50", "recursive_warm", "p50_ms", "direct_warm")
    add("(b) recursive, warm: p99", "recursive_warm", "p99_ms", "direct_warm")
    add("(w) direct, cached id, cold client: p50", "cached", "p50_ms")
    add("(d) direct at the secondary, cold id: p50", "direct_cold", "p50_ms")
    add("(d) direct, cold id: p99", "direct_cold", "p99_ms")
    add(
        "(c) recursive, cold id, known prefix site: p50",
        "recursive_cold",
        "p50_ms",
        "direct_cold",
        ("<=", COLD_TARGET),
    )
    add("(c) recursive, cold id, known site: p99", "recursive_cold", "p99_ms", "direct_cold")
    add(
        "(n) recursive, new enterprise prefix, delegation known: p50",
        "new_prefix",
        "p50_ms",
        "direct_cold",
        ("<=", COLD_TARGET),
    )
    add("(n) recursive, new enterprise prefix: p99", "new_prefix", "p99_ms", "direct_cold")
    add(
        "(e) recursive, fully cold walk: p50",
        "fully_cold",
        "p50_ms",
        "direct_cold",
        ("<=", COLD_TARGET),
    )
    add("(e) recursive, fully cold walk: p99", "fully_cold", "p99_ms", "direct_cold")
    add("(e0) fully cold, early requests off: p50", "fully_cold_seq", "p50_ms", "direct_cold")
    add("(e) vs (e0): what early requests save", "fully_cold", "p50_ms", "fully_cold_seq")
    add("(f1) top level 0.NA/P referral, direct: p50", "hop_top", "p50_ms", "direct_cold")
    add("(f2) secondary 0.NA/P, direct: p50", "hop_prefix", "p50_ms", "direct_cold")
    add("(f3) secondary P/S, direct: p50", "hop_handle", "p50_ms", "direct_cold")
    add("(f) f1 + f3: a fully cold walk's floor", "hops", "p50_ms", "direct_cold")
    add("(e) vs (f): the walk over its floor", "fully_cold", "p50_ms", "hops")
    report["results"] = results
    report["passed"] = (
        report["checks"].get("before") == "ok"
        and not report["checks"]["counters"]
        and all(r.get("passed", True) for r in results)
    )
    return report


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nidis recursive resolution, {s['rounds']} round(s), one worker per node."
        f"\nwarm: wrk, {s['duration']:g}s per figure in {s['warm_slices']} runs taken in turn, at"
        f" concurrency {s['concurrency']}, after {s['warmup']:g}s warm-up; nodes on CPUs"
        f" {s['node_cpus'] or 'any'}, wrk on {s['generator_cpus'] or 'any'} (of {s['cpus']})."
        f"\ncold: one client, one request at a time (concurrency 1), the figures in turn,"
        f" {s['block']} requests of each at a time, up to {s['cold']:,} per figure per round,"
        " each handle never requested before;"
        f" {'pinned like the warm runs' if s['pin_cold'] else 'nothing pinned'}.\n"
    )
    head = ["figure", "value", "baseline", "ratio", "rounds", "target", "result", "n", "errors"]
    rows = [head]
    for r in report["results"]:
        rate = r["unit"] == "req/s"

        def show(v: float, rate: bool = rate) -> str:
            return f"{v:,.0f} req/s" if rate else f"{v:.3f} ms"

        verdict = "info"
        if "passed" in r:
            verdict = ("PASS" if r["passed"] else "FAIL") + ("*" if r.get("disagrees") else "")
        rows.append(
            [
                r["figure"],
                show(r["value"]),
                show(r["baseline"]) if "baseline" in r else "",
                f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "",
                " ".join(f"{x:.2f}" for x in r.get("ratio_rounds", [])),
                r.get("target", ""),
                verdict,
                f"{r['samples']:,}",
                str(r["errors"]),
            ]
        )
    _print_table(rows, left={0, 4, 5, 6})
    for r in report["results"]:
        if r.get("ratio_per_server_core") is not None:
            print(
                f"\n{r['figure']}: per CPU-second of the serving node"
                f" {r['ratio_per_server_core']:.2f}x of (a)"
            )
    rounds = report["rounds"]
    print("\nwarm runs, CPU in cores (the round of the median rate):")
    for key in ("direct_warm", "recursive_warm"):
        by_rate = sorted(rounds, key=lambda r: float(r[key]["rate"]))
        cpu = by_rate[len(rounds) // 2][key]["cpu"]
        print(f"  {key}: " + " ".join(f"{k}={v}" for k, v in cpu.items() if k != "machine_cores"))
    print("\ncold figures, CPU microseconds per request (medians over the rounds):")
    cpu_rows = [["figure", *CPU_GROUPS, "total"]]
    for f in COLD_FIGURES:
        per = {g: median([r[f.key]["cpu_us"][g] for r in rounds]) for g in CPU_GROUPS}
        cpu_rows.append(
            [f.label, *(f"{per[g]:.0f}" for g in CPU_GROUPS), f"{sum(per.values()):.0f}"]
        )
    _print_table(cpu_rows, left={0})
    print(
        "  (postgres: the backends of the two scratch databases; each request's share of the"
        " time between its sending and its answer)"
    )
    print(f"\na fully cold walk's path: {' -> '.join(report['checks'].get('full_walk_path', []))}")
    for problem in report["checks"]["counters"]:
        print(f"counters off: {problem}")
    for r in rounds:
        for key, fig in r.items():
            for failure in fig.get("failures", []):
                print(f"failed: {key}: {failure}")
    summary = report.get("profile")
    if summary:
        print(f"\nprofile of the recursive node, (c) and (e) ({summary['samples'][0][1]} samples):")
        for kind in ("own", "inclusive"):
            print(f"  {kind}:")
            for name, pct in summary[kind][:20]:
                print(f"    {pct:5.1f}%  {name}")
    if any(r.get("disagrees") for r in report["results"]):
        print(
            "\n* req/s and per-core ratios disagree about the target: the machine was busy"
            " with other work; run again when it is quiet"
        )
    print("\n" + ("all targets met" if report["passed"] else "TARGETS MISSED"))


def _print_table(rows: list[list[str]], left: set[int]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
