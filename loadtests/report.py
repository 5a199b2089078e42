"""The suite's report on screen and as a chart: the machine it ran on, the table of figures,
the notes under it, and a PNG of the ratios."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

from loadtests.stats import median


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return ""
    if unit in ("req/s", "ids/s"):
        return f"{v:,.0f} {unit}"
    if unit == "B":
        return f"{v:,.1f} B"
    return f"{v:,.3g} {unit}" if v < 10 else f"{v:,.1f} {unit}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for f in report["figures"]:
        verdict = "info" if f["passed"] is None else ("PASS" if f["passed"] else "FAIL")
        if f["error"]:
            verdict = "ERROR" if f["value"] is None else verdict + " !"
        rows.append(
            [
                f["figure"],
                _value(f["value"], f["unit"]),
                (
                    f"{_value(f['baseline'], f['unit'])} ({f['baseline_label']})"
                    if f["baseline"] is not None
                    else ""
                ),
                f"{f['ratio']:.2f}x" if f["ratio"] is not None else "",
                f"{f['target']} ({f['target_source']})" if f["target"] else "",
                verdict,
                f["generator"],
                str(f["errors"]) if f["errors"] else "",
                f"{f['other_load']:.2f}" if f.get("other_load") is not None else "",
            ]
        )
    return rows


def print_table(report: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    head = ["figure", "value", "baseline", "ratio", "target", "result", "load", "errors", "other"]
    rows = table_rows(report)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {1, 3, 7, 8}
    for n, r in enumerate([head, *rows]):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\nidis bench ({report['mode']}): {report['seconds']:.0f} s on {m['cpus']} CPUs"
        f" ({m.get('cpu_model', 'unknown CPU')}); HTTP load by {report['http_generator']}"
        + ("" if report["wrk_installed"] else " (wrk is not installed: the Python generator)")
        + "\n"
    )
    print_table(report)
    raw = report["raw"]
    lines = []
    # Per CPU-second of the generator: what one core of it sends, whatever else the machine
    # was doing (a starved constant server lowers the req/s, not this).
    if "ceiling_wrk" in raw:
        c = raw["ceiling_wrk"]
        cores = c["cpu"].get("generator", 0)
        lines.append(
            f"generator ceiling, wrk: {c['rate']:,.0f} req/s using {cores:.2f} cores"
            + (f" = {c['rate'] / cores:,.0f} req/s per core of wrk" if cores else "")
        )
    if "ceiling_python" in raw:
        c = raw["ceiling_python"]
        share = c["generator"]["cpu_share"]
        lines.append(
            f"generator ceiling, Python ({c['generator']['loop']}): {c['per_s']:,.0f} req/s using"
            f" {share:.0%} of a core"
            + (f" = {c['per_s'] / share:,.0f} req/s per core of the generator" if share else "")
        )
    for key in ("register", "mix"):
        if key in raw:
            g = raw[key]["generator"]
            lines.append(
                f"{key}: Python generator used {g['cpu_share']:.0%} of a core"
                + (" (SATURATED: the figure may be the generator's)" if g["saturated"] else "")
            )
    if "scale10x" in raw:
        lines.append(f"scale10x: rows added by {raw['scale10x']['seeded']}")
    for f in report["figures"]:
        if f["detail"].get("per_server_core") is not None:
            lines.append(
                f"{f['key']}: per CPU-second of each server, {f['detail']['per_server_core']:.2f}x"
            )
    loads = [f["other_load"] for f in report["figures"] if f.get("other_load") is not None]
    if loads:
        busy = median(loads)
        lines.append(
            f"other: cores taken by other work on the machine during each run (median {busy:.2f}"
            f" of {report['machine']['cpus']})"
            + (
                "; the machine was shared: ratios, measured in the same conditions, are the"
                " steadier figures"
                if busy > 0.25
                else ""
            )
        )
    for note in report["notes"]:
        lines.append(note)
    if lines:
        print("\n" + "\n".join(lines))
    errors = [f for f in report["figures"] if f["error"]]
    for f in errors:
        print(f"! {f['key']}: {f['error']}")
    judged = [f for f in report["figures"] if f["passed"] is not None]
    failed = [f["key"] for f in judged if not f["passed"]]
    print(
        "\n"
        + (
            f"all {len(judged)} targets met"
            if report["passed"]
            else f"TARGETS MISSED: {', '.join(failed) or 'none measured'}"
        )
    )


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def chart(report: dict[str, Any], path: Path) -> bool:
    """A PNG of the ratios (log scale), targets marked; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figs = [f for f in report["figures"] if f["ratio"] is not None]
    if not figs:
        return False
    labels = [_short(f"{f['figure']} / {f['baseline_label']}", 80) for f in figs]
    ratios = [f["ratio"] for f in figs]
    colours = [
        "#9e9e9e" if f["passed"] is None else ("#2e7d32" if f["passed"] else "#c62828")
        for f in figs
    ]
    fig, ax = plt.subplots(figsize=(12, 0.4 * len(figs) + 1.6))
    y = list(range(len(figs)))[::-1]
    ax.barh(y, ratios, color=colours)
    for yi, f in zip(y, figs, strict=True):
        # A target with a unit ("<= 5 s") bounds the value, not the ratio: no tick.
        if f["target"] and len(f["target"].split()) == 2:
            bound = float(f["target"].split()[1])
            ax.plot([bound, bound], [yi - 0.4, yi + 0.4], color="black", linewidth=2)
        ax.text(f["ratio"], yi, f"  {f['ratio']:.2f}x", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    ax.set_xlabel("ratio to baseline (log scale); black tick: target")
    ax.set_title(
        f"idis bench ({report['mode']}) {report['started_at']}: green pass, red fail, grey info",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
