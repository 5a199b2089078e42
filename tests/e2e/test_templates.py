"""Data templates on a real ``idis serve`` process on PostgreSQL: their lifecycle over REST, and
refusals through REST PUT, ``POST /api/batch`` and ``idis import`` with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodeproc import PREFIX, REPO, NodeProcess

ITEMS: list[dict[str, Any]] = [
    {"name": "型号", "key": "model", "index": 2001, "type": "text", "minLength": 2,
     "maxLength": 20, "pattern": "[A-Z0-9-]+", "required": True},
    {"name": "容量", "key": "capacity", "index": 2002, "type": "number", "precision": 1,
     "minimum": 0, "maximum": 500, "required": True},
    {"name": "生产日期", "key": "madeOn", "index": 2003, "type": "date"},
    {"name": "检验时间", "key": "checkedAt", "index": 2004, "type": "date-time"},
    {"name": "合格", "key": "passed", "index": 2005, "type": "boolean"},
    {"name": "等级", "key": "grade", "index": 2006, "type": "enumeration",
     "choices": ["A", "B", "C"]},
    {"name": "说明书", "key": "manual", "index": 2007, "type": "url"},
    {"name": "批次", "key": "batch", "index": 2008, "type": "reference"},
    {"name": "标签", "key": "tags", "index": 2009, "type": "list",
     "element": {"type": "text", "maxLength": 8}},
    {"name": "重量", "key": "weight", "index": 2010, "type": "number", "precision": 2},
]  # fmt: skip
"""Ten typed items, one of each type (two numbers)."""

GOOD = {
    2001: ("model", "BAT-100"),
    2002: ("capacity", "72.5"),
    2003: ("madeOn", "2026-01-31"),
    2004: ("checkedAt", "2026-02-01T08:30:00Z"),
    2005: ("passed", "true"),
    2006: ("grade", "A"),
    2007: ("manual", "https://example.com/m/BAT-100"),
    2008: ("batch", f"{PREFIX}/LOT-7"),
    2009: ("tags", '["li-ion","12v"]'),
    2010: ("weight", "3.25"),
}


def template_doc(version: int, items: list[dict[str, Any]]) -> str:
    return json.dumps(
        {"prefix": PREFIX, "version": version, "industry": {"code": "C38"}, "items": items}
    )


def template_value(index: int, version: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"index": index, "type": "IDIS.TEMPLATE", "data": template_doc(version, items)}


def record(template: str, **changes: str | None) -> list[dict[str, Any]]:
    """The values of a good record of ``template``, with some values changed (None: left out)."""
    by_key = {key: (index, text) for index, (key, text) in GOOD.items()}
    values: list[dict[str, Any]] = [{"index": 1001, "type": "TEMPLATE", "data": template}]
    for key, (index, text) in by_key.items():
        text = changes.get(key, text)
        if text is not None:
            values.append({"index": index, "type": key, "data": text})
    return values


@pytest.fixture(scope="module")
def node(node_factory, pg_factory) -> Iterator[NodeProcess]:
    started = node_factory(database_url=pg_factory())
    yield started
    log = started.log()
    started.stop()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with node.client() as client:
        yield client


@pytest.fixture(scope="module")
def template(http: httpx.Client, node: NodeProcess) -> str:
    handle = f"{PREFIX}/TEMPLATE.battery-{uuid.uuid4().hex[:8]}"
    response = http.put(
        f"/api/handles/{handle}", json=[template_value(1, 1, ITEMS)], auth=node.auth
    )
    assert response.status_code == 201, response.text
    return handle


def fresh(name: str) -> str:
    return f"{PREFIX}/{name}-{uuid.uuid4().hex[:10]}"


def refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["responseCode"] == 202, body
    for word in words:
        assert word in body["message"], body


def absent(http: httpx.Client, handle: str) -> None:
    assert http.get(f"/api/handles/{handle}").status_code == 404


# --- lifecycle ---------------------------------------------------------------------------------


def test_template_is_a_resolvable_handle(http: httpx.Client, template: str) -> None:
    body = http.get(f"/api/handles/{template}").json()
    [value] = [v for v in body["values"] if v["type"] == "IDIS.TEMPLATE"]
    assert json.loads(value["data"]["value"])["items"][1]["key"] == "capacity"


@pytest.mark.parametrize(
    ("handle_name", "values", "words"),
    [
        ("TEMPLATE.bad", [{"index": 1, "type": "IDIS.TEMPLATE", "data": "not json"}], ["JSON"]),
        (
            "TEMPLATE.bad",
            [template_value(1, 1, [{**ITEMS[0], "index": 1999}])],
            ["model", "index"],
        ),
        ("TEMPLATE.bad", [template_value(1, 1, [{**ITEMS[0], "type": "blob"}])], ["type"]),
        ("notatemplate", [template_value(1, 1, ITEMS)], ["TEMPLATE."]),
    ],
)
def test_bad_template_documents_are_refused(
    http: httpx.Client, node: NodeProcess, handle_name: str, values: list, words: list[str]
) -> None:
    handle = fresh(handle_name)
    refused(http.put(f"/api/handles/{handle}", json=values, auth=node.auth), *words)
    absent(http, handle)


def test_versions_are_kept_and_items_disabled_never_deleted(
    http: httpx.Client, node: NodeProcess
) -> None:
    handle = fresh("TEMPLATE.cell")
    v1 = template_value(1, 1, ITEMS)
    assert http.put(f"/api/handles/{handle}", json=[v1], auth=node.auth).status_code == 201
    old = fresh("cell")
    assert http.put(f"/api/handles/{old}", json=record(handle), auth=node.auth).status_code == 201

    # Version 2 disables the required "model" and adds a required "maker".
    maker = {"name": "厂家", "key": "maker", "index": 2011, "type": "text", "required": True}
    items2 = [{**ITEMS[0], "state": "disabled"}, *ITEMS[1:], maker]
    dropped = [template_value(2, 2, items2)]  # version 1 left out
    refused(http.put(f"/api/handles/{handle}", json=dropped, auth=node.auth), "version 1")
    deleted = [v1, template_value(2, 2, ITEMS[1:])]  # "model" deleted, not disabled
    refused(http.put(f"/api/handles/{handle}", json=deleted, auth=node.auth), "model", "disable")
    v2 = [v1, template_value(2, 2, items2)]
    assert http.put(f"/api/handles/{handle}", json=v2, auth=node.auth).status_code == 200

    # Version 2 rules now: "maker" is required, "model" is no longer looked at.
    refused(
        http.put(f"/api/handles/{fresh('cell')}", json=record(handle), auth=node.auth),
        "maker",
        "required",
    )
    new = fresh("cell")
    values = [*record(handle, model=None), {"index": 2011, "type": "maker", "data": "ACME"}]
    assert http.put(f"/api/handles/{new}", json=values, auth=node.auth).status_code == 201
    # The old record still resolves as written, its disabled item's value untouched.
    kept = {v["index"]: v for v in http.get(f"/api/handles/{old}").json()["values"]}
    assert kept[2001]["data"]["value"] == "BAT-100"
    # Changing another of its values through PUT ?index= is checked against version 2.
    response = http.put(
        f"/api/handles/{old}?index=2011",
        json=[{"index": 2011, "type": "maker", "data": "ACME"}],
        auth=node.auth,
    )
    assert response.status_code == 200, response.text


# --- refusals on every door ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"model": None}, ["model", "required"]),
        ({"model": "b"}, ["model", "minLength"]),
        ({"model": "bat 100"}, ["model", "pattern"]),
        ({"capacity": "12.55"}, ["capacity", "precision"]),
        ({"capacity": "501"}, ["capacity", "maximum"]),
        ({"capacity": "lots"}, ["capacity", "type"]),
        ({"madeOn": "2026-02-30"}, ["madeOn", "date"]),
        ({"checkedAt": "2026-02-01 08:30"}, ["checkedAt", "date-time"]),
        ({"passed": "yes"}, ["passed", "boolean"]),
        ({"grade": "D"}, ["grade", "enumeration"]),
        ({"manual": "ftp://x"}, ["manual", "URL"]),
        ({"batch": "no-slash"}, ["batch", "identifier"]),
        ({"tags": '["ok","far-too-long"]'}, ["tags", "element.maxLength"]),
        ({"tags": "li-ion"}, ["tags", "JSON array"]),
    ],
)
def test_put_refusals_name_item_and_rule(
    http: httpx.Client, node: NodeProcess, template: str, changes: dict, words: list[str]
) -> None:
    handle = fresh("bat")
    refused(
        http.put(f"/api/handles/{handle}", json=record(template, **changes), auth=node.auth),
        *words,
    )
    absent(http, handle)


def test_put_refuses_unknown_items_and_missing_templates(
    http: httpx.Client, node: NodeProcess, template: str
) -> None:
    handle = fresh("bat")
    extra = [*record(template), {"index": 2999, "type": "colour", "data": "red"}]
    refused(http.put(f"/api/handles/{handle}", json=extra, auth=node.auth), "2999", "unknown")
    missing = record(f"{PREFIX}/TEMPLATE.nothing-here")
    refused(http.put(f"/api/handles/{handle}", json=missing, auth=node.auth), "no template")
    absent(http, handle)
    # A good record goes in; breaking it later (a value changed through ?index=) does not.
    assert (
        http.put(f"/api/handles/{handle}", json=record(template), auth=node.auth).status_code == 201
    )
    response = http.put(
        f"/api/handles/{handle}?index=2002",
        json=[{"index": 2002, "type": "capacity", "data": "-1"}],
        auth=node.auth,
    )
    refused(response, "capacity", "minimum")
    # Deleting a required value is a write too.
    refused(http.delete(f"/api/handles/{handle}?index=2002", auth=node.auth), "required")
    kept = {v["index"]: v for v in http.get(f"/api/handles/{handle}").json()["values"]}
    assert kept[2002]["data"]["value"] == "72.5"


def test_batch_refuses_the_bad_item_only(
    http: httpx.Client, node: NodeProcess, template: str
) -> None:
    good, bad, other = fresh("b"), fresh("b"), fresh("b")
    body = {
        "handles": [
            {"handle": good, "values": record(template)},
            {"handle": bad, "values": record(template, grade="Z")},
            {"handle": other, "values": record(template, tags="[]")},
        ]
    }
    response = http.post("/api/batch", json=body, auth=node.auth)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["responseCode"] for r in results] == [1, 202, 1]
    assert "grade" in results[1]["message"] and "enumeration" in results[1]["message"]
    absent(http, bad)
    assert http.get(f"/api/handles/{good}").status_code == 200


def test_import_rejects_by_line(
    http: httpx.Client, node: NodeProcess, template: str, tmp_path: Path
) -> None:
    handles = [fresh("imp") for _ in range(4)]
    lines = [
        {"handle": handles[0], "values": record(template)},
        {"handle": handles[1], "values": record(template, capacity="9999")},
        {"handle": handles[2], "values": record(template)},
        {"handle": handles[3], "values": [template_value(1, 1, ITEMS)]},
    ]
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "nodes.cli", "import", str(source)],
        env=dict(node.env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "loaded 2" in done.stdout, (done.stdout, done.stderr)
    assert f"{source}:2: template {template} version 1: item capacity" in done.stderr
    assert "maximum" in done.stderr
    assert f"{source}:4: templates are written over the REST API" in done.stderr
    # The import runs beside the node: its writes reach the node's cache through the board.
    assert http.get(f"/api/handles/{handles[0]}").status_code == 200
    assert http.get(f"/api/handles/{handles[2]}").status_code == 200
    absent(http, handles[1])
    absent(http, handles[3])
