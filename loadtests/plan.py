"""A capacity plan for a target (2 billion identifiers, 150 million resolutions a day) from
figures measured on one node.

Inputs, each with where it came from (nothing is assumed: a figure not measured is missing,
and the plan says what to run to get it):

- **registration rate** (identifiers/s through the batch API) from an ``idis loadtest register``
  report or a bench report;
- **resolution capacity** (requests/s of one node) from an ``idis loadtest resolve`` report or a
  bench report (the realistic Zipf mix, or uncached lookups when that is all there is);
- **bytes per identifier** measured in a node's PostgreSQL
  (``pg_total_relation_size('handles') / count(*)``, table, TOAST and indexes), from
  ``--database-url`` or a bench / scale report;
- optionally the bulk-import rate (``idis import``), from a bench or scale report.

Several reports of the same kind give the median; storage and import figures of a scale
report (at its largest size) are preferred to a bench report's, and a bench report gives its
uncached resolution rate (conservative: at 2 billion identifiers little is in memory).
:func:`make_plan` does the arithmetic and returns every step as text beside the numbers, so
the reader can check it:

- storage: ids x bytes/id; nodes for storage = ceil(total / (disk per node x max fill));
- resolution: average = daily / 86,400 s; peak = average x peak factor; nodes for resolution =
  ceil(peak / (capacity x max utilisation));
- secondary nodes = the larger of the two (and of ``min_nodes``); storage per node = total /
  nodes; capacity of the plan = nodes x capacity, per second and per day, against the peak;
- time to register the target at the measured rate on one node, and on all nodes in parallel
  (each node registers its own prefixes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.stats import median

DAY = 86_400


@dataclass(frozen=True)
class Measured:
    """A figure and where it came from."""

    value: float
    sources: tuple[str, ...]

    def text(self, unit: str, digits: int = 0) -> str:
        return f"{self.value:,.{digits}f} {unit} (from {', '.join(self.sources)})"


@dataclass
class Inputs:
    """The measured per-node figures a plan needs (None: not measured)."""

    register_rate: Measured | None = None
    resolve_rate: Measured | None = None
    bytes_per_id: Measured | None = None
    import_rate: Measured | None = None
    notes: list[str] = field(default_factory=list)


def _collect(found: dict[str, list[tuple[float, str]]], name: str, value: Any, source: str) -> None:
    if isinstance(value, int | float) and value > 0:
        found.setdefault(name, []).append((float(value), source))


def _bench_figure(report: dict[str, Any], key: str) -> float | None:
    for fig in report.get("figures", []):
        if fig.get("key") == key and fig.get("value") is not None:
            return float(fig["value"])
    return None


def inputs_from_reports(reports: Iterable[tuple[str, dict[str, Any]]]) -> Inputs:
    """Gather the figures of ``(name, report)`` pairs: register, resolve, bench and scale
    reports of this package (``"kind"``); other reports are ignored with a note."""
    found: dict[str, list[tuple[float, str]]] = {}
    notes: list[str] = []
    for name, report in reports:
        kind = report.get("kind")
        if kind == "register":
            _collect(found, "register", report.get("identifiers_per_s"), f"{name} (register)")
            if report.get("errors"):
                notes.append(f"{name}: the registration run had errors {report['errors']}")
        elif kind == "resolve":
            _collect(found, "resolve", report.get("ok_per_s"), f"{name} (resolve)")
            if report.get("generator", {}).get("saturated"):
                notes.append(
                    f"{name}: the load generator was saturated, so the node's capacity is at"
                    " least the figure used, not exactly it"
                )
        elif kind == "bench":
            _collect(found, "register", _bench_figure(report, "register"), f"{name} (bench)")
            # Uncached lookups: the conservative capacity (at 2 billion identifiers a node's
            # memory holds a small share of them); the Zipf mix is mentioned beside it.
            uncached = _bench_figure(report, "uncached")
            _collect(found, "resolve", uncached, f"{name} (bench, uncached)")
            mix = _bench_figure(report, "mix")
            if mix is not None and uncached is not None:
                notes.append(
                    f"{name}: with the Zipf mix (popular identifiers cached) one node resolved"
                    f" {mix:,.0f}/s; the plan uses the uncached {uncached:,.0f}/s"
                )
            _collect(found, "bench_bytes", _bench_figure(report, "storage"), f"{name} (bench)")
            _collect(found, "bench_import", _bench_figure(report, "import"), f"{name} (bench)")
        elif kind == "scale":
            steps = sorted(report.get("steps", []), key=lambda s: s.get("rows", 0))
            if steps:
                last = steps[-1]
                where = f"{name} (scale, {last.get('rows', 0):,} rows)"
                _collect(found, "bytes", last.get("bytes_per_id"), where)
                _collect(found, "import", last.get("import_per_s"), where)
                if len(steps) > 1 and steps[0].get("import_per_s"):
                    notes.append(
                        f"{name}: the import rate falls as the table grows"
                        f" ({steps[0]['import_per_s']:,.0f}/s up to {steps[0]['rows']:,} rows,"
                        f" {last['import_per_s']:,.0f}/s up to {last['rows']:,}): at billions"
                        " of rows expect less than the figure used"
                    )
        else:
            notes.append(f"{name}: not a report of idis loadtest or idis bench; ignored")

    # Storage and import measured at scale win over the bench's small-table figures.
    for key in ("bytes", "import"):
        if key not in found and f"bench_{key}" in found:
            found[key] = found[f"bench_{key}"]

    def pick(key: str) -> Measured | None:
        items = found.get(key)
        if not items:
            return None
        return Measured(median(v for v, _ in items), tuple(s for _, s in items))

    return Inputs(pick("register"), pick("resolve"), pick("bytes"), pick("import"), notes)


def load_reports(paths: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Read JSON reports; raises ``ValueError`` naming a file that is not one."""
    out = []
    for path in paths:
        try:
            out.append((Path(path).name, json.loads(Path(path).read_text(encoding="utf-8"))))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable JSON report ({error})") from None
    return out


async def measure_bytes_per_id(database_url: str) -> Measured:
    """``pg_total_relation_size('handles') / count(*)`` of a node's PostgreSQL database."""
    import asyncpg

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        size = await conn.fetchval("SELECT pg_total_relation_size('handles')")
        rows = await conn.fetchval("SELECT count(*) FROM handles")
    finally:
        await conn.close()
    if not rows:
        raise ValueError("the handles table of that database is empty: nothing to measure")
    host = dsn.rsplit("@", 1)[-1]
    return Measured(size / rows, (f"PostgreSQL {host}: {size:,} bytes / {rows:,} rows",))


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:,.1f} minutes"
    if seconds < 3 * DAY:
        return f"{seconds / 3600:,.1f} hours"
    return f"{seconds / DAY:,.1f} days"


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def make_plan(
    inputs: Inputs,
    *,
    target_ids: float = 2e9,
    daily: float = 150e6,
    peak_factor: float = 10.0,
    disk_per_node: float = 2e12,
    max_fill: float = 0.7,
    max_utilisation: float = 0.7,
    min_nodes: int = 1,
) -> dict[str, Any]:
    """The plan: numbers, and ``lines`` showing the arithmetic (see the module docstring).

    Sections whose input was not measured are left out, with a line saying what to measure.
    """
    if not (target_ids > 0 and daily >= 0 and peak_factor >= 1):
        raise ValueError("target ids must be > 0, daily >= 0 and the peak factor >= 1")
    if not (0 < max_fill <= 1 and 0 < max_utilisation <= 1 and disk_per_node > 0):
        raise ValueError("fill and utilisation are fractions in (0, 1]; disk per node > 0")
    lines: list[str] = []
    plan: dict[str, Any] = {
        "kind": "plan",
        "target_ids": target_ids,
        "daily_resolutions": daily,
        "peak_factor": peak_factor,
        "disk_per_node": disk_per_node,
        "max_fill": max_fill,
        "max_utilisation": max_utilisation,
        "inputs": {},
        "missing": [],
    }
    nodes_for: dict[str, int] = {"minimum": min_nodes}

    bpi = inputs.bytes_per_id
    if bpi is not None:
        plan["inputs"]["bytes_per_id"] = {"value": bpi.value, "sources": list(bpi.sources)}
        total = target_ids * bpi.value
        usable = disk_per_node * max_fill
        nodes_for["storage"] = max(1, math.ceil(total / usable))
        plan["storage_total_bytes"] = total
        lines += [
            "storage",
            f"  bytes per identifier: {bpi.text('B', 1)}",
            f"  total: {target_ids:,.0f} ids x {bpi.value:,.1f} B = {_bytes(total)}",
            f"  usable per node: {_bytes(disk_per_node)} disk x {max_fill:.0%} max fill"
            f" = {_bytes(usable)}",
            f"  nodes for storage: ceil({_bytes(total)} / {_bytes(usable)})"
            f" = {nodes_for['storage']}",
        ]
    else:
        plan["missing"].append("bytes per identifier")
        lines += [
            "storage: bytes per identifier not measured"
            " (give --database-url of a loaded node, or a bench or scale report)"
        ]

    capacity = inputs.resolve_rate
    average = daily / DAY
    peak = average * peak_factor
    plan["average_per_s"] = average
    plan["peak_per_s"] = peak
    if capacity is not None:
        plan["inputs"]["resolve_per_s"] = {
            "value": capacity.value,
            "sources": list(capacity.sources),
        }
        usable_rate = capacity.value * max_utilisation
        nodes_for["resolution"] = max(1, math.ceil(peak / usable_rate)) if peak else 1
        lines += [
            "resolution",
            f"  average: {daily:,.0f} / {DAY:,} s = {average:,.1f} /s",
            f"  peak: {average:,.1f} /s x {peak_factor:g} = {peak:,.1f} /s",
            f"  one node: {capacity.text('/s')}; planned at {max_utilisation:.0%}"
            f" = {usable_rate:,.1f} /s",
            f"  nodes for resolution: ceil({peak:,.1f} / {usable_rate:,.1f})"
            f" = {nodes_for['resolution']}",
        ]
    else:
        plan["missing"].append("resolution capacity")
        lines += ["resolution: capacity not measured (give an idis loadtest resolve report)"]

    nodes = max(nodes_for.values())
    plan["nodes_for"] = nodes_for
    plan["secondary_nodes"] = nodes
    reason = max(nodes_for, key=lambda k: (nodes_for[k], k != "minimum"))
    lines += [
        "plan",
        "  secondary nodes: max("
        + ", ".join(f"{k} {v}" for k, v in nodes_for.items())
        + f") = {nodes} (set by {reason})",
    ]
    if bpi is not None:
        per_node = target_ids * bpi.value / nodes
        plan["storage_per_node_bytes"] = per_node
        plan["ids_per_node"] = target_ids / nodes
        lines.append(
            f"  storage per node: {_bytes(target_ids * bpi.value)} / {nodes} = {_bytes(per_node)}"
            f" ({target_ids / nodes:,.0f} ids; {per_node / disk_per_node:.0%} of"
            f" {_bytes(disk_per_node)})"
        )
    if capacity is not None:
        total_rate = nodes * capacity.value
        plan["capacity_per_s"] = total_rate
        plan["capacity_per_day"] = total_rate * DAY
        plan["peak_headroom"] = total_rate / peak if peak else None
        lines.append(
            f"  resolution capacity: {nodes} x {capacity.value:,.1f} /s = {total_rate:,.1f} /s"
            f" = {total_rate * DAY:,.0f} a day, {total_rate * DAY / daily:,.1f}x the"
            f" {daily:,.0f} a day; {total_rate / peak:,.1f}x the peak of {peak:,.1f} /s"
            if daily and peak
            else f"  resolution capacity: {nodes} x {capacity.value:,.1f} /s = {total_rate:,.1f} /s"
        )

    reg = inputs.register_rate
    if reg is not None:
        plan["inputs"]["register_per_s"] = {"value": reg.value, "sources": list(reg.sources)}
        one = target_ids / reg.value
        plan["register_seconds_one_node"] = one
        plan["register_seconds_all_nodes"] = one / nodes
        lines += [
            "registration",
            f"  one node: {reg.text('ids/s')}",
            f"  {target_ids:,.0f} ids / {reg.value:,.0f} ids/s = {one:,.0f} s = {_duration(one)}"
            " on one node",
            f"  on {nodes} nodes in parallel: {one:,.0f} s / {nodes} = {_duration(one / nodes)}",
            f"  one node registers {reg.value * DAY:,.0f} ids a day",
        ]
    else:
        plan["missing"].append("registration rate")
        lines += ["registration: rate not measured (give an idis loadtest register report)"]
    imp = inputs.import_rate
    if imp is not None:
        plan["inputs"]["import_per_s"] = {"value": imp.value, "sources": list(imp.sources)}
        seconds = target_ids / imp.value
        plan["import_seconds_one_node"] = seconds
        lines.append(
            f"  bulk import instead (idis import): {target_ids:,.0f} / {imp.value:,.0f} ids/s"
            f" = {_duration(seconds)} on one node, {_duration(seconds / nodes)} on {nodes}"
        )
    lines.extend(f"note: {n}" for n in inputs.notes)
    plan["notes"] = list(inputs.notes)
    plan["lines"] = lines
    return plan
