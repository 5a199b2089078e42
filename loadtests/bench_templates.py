"""Batch registration of templated records (10 typed attributes, 2 of them searchable) beside
the same records untemplated: what checking every write against its data template, and
indexing its searchable values, costs.

Run by ``idis bench`` (step ``templates``) on the suite's node; :func:`measure` takes any node
and prefix whose administrator's secret it is given.  After a warm-up round, rounds alternate
which kind goes first; each round registers fresh identifiers.  The ratio templated/untemplated
of the medians is judged against the issue's target (>= 0.8: validation must be cheap).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any, cast

import httpx

from loadtests import drive
from loadtests.shapes import Population

ITEMS: list[dict[str, Any]] = [
    {"name": "型号", "key": "model", "index": 2001, "type": "text", "maxLength": 32,
     "pattern": "[A-Z0-9-]+", "required": True, "searchable": True},
    {"name": "容量", "key": "capacity", "index": 2002, "type": "number", "precision": 1,
     "minimum": 0, "maximum": 1000, "required": True},
    {"name": "生产日期", "key": "madeOn", "index": 2003, "type": "date", "searchable": True},
    {"name": "检验时间", "key": "checkedAt", "index": 2004, "type": "date-time"},
    {"name": "合格", "key": "passed", "index": 2005, "type": "boolean"},
    {"name": "等级", "key": "grade", "index": 2006, "type": "enumeration",
     "choices": ["A", "B", "C"]},
    {"name": "说明书", "key": "manual", "index": 2007, "type": "url"},
    {"name": "批次", "key": "lot", "index": 2008, "type": "reference"},
    {"name": "标签", "key": "tags", "index": 2009, "type": "list",
     "element": {"type": "text", "maxLength": 12}},
    {"name": "重量", "key": "weight", "index": 2010, "type": "number", "precision": 2},
]  # fmt: skip
"""The templated records' items: ten typed attributes, of which two are searchable (the model
number and the production date, what a manufacturer looks its products up by), so each
templated record writes two search index rows, not ten."""


@dataclass(frozen=True)
class Records:
    """The population :func:`loadtests.drive.register` sends: identifiers ``i`` under
    ``prefix``, each with a URL and the ten attributes, naming ``template`` if given."""

    prefix: str
    tag: str
    template: str | None

    @property
    def prefixes(self) -> tuple[str, ...]:
        return (self.prefix,)

    def prefix_of(self, i: int) -> str:
        return self.prefix

    def describe(self) -> dict[str, Any]:
        return {"prefixes": [self.prefix], "tag": self.tag, "template": self.template}

    def record(self, i: int) -> dict[str, Any]:
        handle = f"{self.prefix}/{self.tag}-{i:08d}"
        attributes = {
            2001: ("model", f"BAT-{i % 977}"),
            2002: ("capacity", f"{i % 1000}.5"),
            2003: ("madeOn", f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}"),
            2004: ("checkedAt", f"2026-03-{i % 28 + 1:02d}T08:{i % 60:02d}:00Z"),
            2005: ("passed", "true" if i % 7 else "false"),
            2006: ("grade", "ABC"[i % 3]),
            2007: ("manual", f"https://example.com/m/{i % 977}"),
            2008: ("lot", f"{self.prefix}/LOT-{i // 1000}"),
            2009: ("tags", json.dumps(["li-ion", f"c{i % 50}"])),
            2010: ("weight", f"{i % 90}.25"),
        }
        values: list[dict[str, Any]] = [
            {"index": 1, "type": "URL", "data": f"https://example.com/p/{i}"}
        ]
        if self.template is not None:
            values.append({"index": 1001, "type": "TEMPLATE", "data": self.template})
        values += [{"index": n, "type": k, "data": v} for n, (k, v) in attributes.items()]
        return {"handle": handle, "values": values}


def create_template(url: str, prefix: str, secret: str, name: str) -> str:
    """Create the template handle ``prefix/TEMPLATE.name`` of :data:`ITEMS`; its handle."""
    handle = f"{prefix}/TEMPLATE.{name}"
    doc = {"prefix": prefix, "version": 1, "items": ITEMS}
    auth = httpx.BasicAuth(drive.admin_identity(prefix).replace(":", "%3A", 1), secret)
    response = httpx.put(
        f"{url}/api/handles/{handle}",
        json=[{"index": 1, "type": "IDIS.TEMPLATE", "data": json.dumps(doc)}],
        auth=auth,
        timeout=30,
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"creating the template failed: {response.text}")
    return handle


def _register(
    url: str,
    records: Records,
    credentials: dict[str, drive.Credentials],
    count: int,
    batch: int,
    concurrency: int,
) -> dict[str, Any]:
    return drive.run(
        lambda stop: drive.register(
            url,
            cast(Population, records),
            credentials,
            count=count,
            batch_size=batch,
            concurrency=concurrency,
            max_seconds=300,
            stop=stop,
        )
    )


def measure(
    url: str,
    prefix: str,
    secret: str,
    *,
    count: int,
    batch: int,
    concurrency: int,
    rounds: int,
    tag: str,
) -> dict[str, Any]:
    """Identifiers/s of batch registration with and without the template, ``rounds`` each."""
    template = create_template(url, prefix, secret, tag.lower())
    credentials = {prefix: drive.Credentials(drive.admin_identity(prefix), secret)}
    rates: dict[str, list[float]] = {"templated": [], "untemplated": []}
    errors = 0
    # Round -1 is a warm-up, not reported: the first registrations into a new table run
    # slower, which would favour whichever kind goes second.
    for r in range(-1, rounds):
        order = ("templated", "untemplated") if r % 2 == 0 else ("untemplated", "templated")
        for kind in order:
            records = Records(
                prefix, f"{tag}{kind[0].upper()}{r + 1}", template if kind == "templated" else None
            )
            report = _register(url, records, credentials, count, batch, concurrency)
            if report["stopped_by"] == "interrupt":
                raise KeyboardInterrupt
            errors += sum(report["errors"].values())
            if r >= 0:
                rates[kind].append(report["identifiers_per_s"])
    templated = statistics.median(rates["templated"])
    untemplated = statistics.median(rates["untemplated"])
    return {
        "templated_per_s": templated,
        "untemplated_per_s": untemplated,
        "ratio": templated / untemplated if untemplated else None,
        "rounds": rates,
        "errors": errors,
    }
