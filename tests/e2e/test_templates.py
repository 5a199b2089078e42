"""Data templates on a real ``idis serve`` process on PostgreSQL: their lifecycle over REST, and
refusals through REST PUT, ``POST /api/batch`` and ``idis import`` with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodeproc import PREFIX, REPO, NodeProcess

from loadtests.bench_templates import ITEMS as BENCH_ITEMS

ITEMS: list[dict[str, Any]] = [
    {**BENCH_ITEMS[0], "minLength": 2, "maxLength": 20},
    {**BENCH_ITEMS[1], "maximum": 500},
    *BENCH_ITEMS[2:8],
    {**BENCH_ITEMS[8], "element": {"type": "text", "maxLength": 8}},
    BENCH_ITEMS[9],
]
"""Ten typed items, one of each type (two numbers)."""

GOOD = {
    2001: ("model", "BAT-100"),
    2002: ("capacity", "72.5"),
    2003: ("madeOn", "2026-01-31"),
    2004: ("checkedAt", "2026-02-01T08:30:00Z"),
    2005: ("passed", "true"),
    2006: ("grade", "A"),
    2007: ("manual", "https://example.com/m/BAT-100"),
    2008: ("lot", f"{PREFIX}/LOT-7"),
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
    # Two workers: concurrent writers are in different processes.
    started = node_factory(database_url=pg_factory(), workers=2)
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


def import_file(node: NodeProcess, source: Path) -> subprocess.CompletedProcess[str]:
    """``idis import SOURCE`` into the node's database, beside the running node."""
    return subprocess.run(
        [sys.executable, "-m", "nodes.cli", "import", str(source)],
        env=dict(node.env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
        ({"lot": "no-slash"}, ["lot", "identifier"]),
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
    # A 1001 naming no template handle of this registry is a label: nothing to check.
    label = record(f"{PREFIX}/tpl-product-v2", capacity="lots")
    labelled = fresh("label")
    assert http.put(f"/api/handles/{labelled}", json=label, auth=node.auth).status_code == 201
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
    done = import_file(node, source)
    assert "loaded 2" in done.stdout, (done.stdout, done.stderr)
    assert f"{source}:2: template {template} version 1: item capacity" in done.stderr
    assert "maximum" in done.stderr
    assert f"{source}:4: templates are written over the REST API" in done.stderr
    # The import runs beside the node: its writes reach the node's cache through the board.
    assert http.get(f"/api/handles/{handles[0]}").status_code == 200
    assert http.get(f"/api/handles/{handles[2]}").status_code == 200
    absent(http, handles[1])
    absent(http, handles[3])


# --- unique items ------------------------------------------------------------------------------

SERIAL = {"name": "序列号", "key": "serial", "index": 2011, "type": "text", "unique": True}


@pytest.fixture(scope="module")
def unique_template(http: httpx.Client, node: NodeProcess) -> str:
    handle = fresh("TEMPLATE.serial")
    value = template_value(1, 1, [*ITEMS, SERIAL])
    assert http.put(f"/api/handles/{handle}", json=[value], auth=node.auth).status_code == 201
    return handle


def serial_record(template: str, serial: str) -> list[dict[str, Any]]:
    return [*record(template), {"index": 2011, "type": "serial", "data": serial}]


def test_a_unique_value_is_refused_on_a_second_handle(
    http: httpx.Client, node: NodeProcess, unique_template: str
) -> None:
    serial = uuid.uuid4().hex
    first, second = fresh("u"), fresh("u")
    values = serial_record(unique_template, serial)
    assert http.put(f"/api/handles/{first}", json=values, auth=node.auth).status_code == 201
    refused(http.put(f"/api/handles/{second}", json=values, auth=node.auth), "2011", "unique")
    absent(http, second)
    # Rewriting the holder keeps its value; once it changes its serial the old one is free.
    assert http.put(f"/api/handles/{first}", json=values, auth=node.auth).status_code == 200
    other = serial_record(unique_template, uuid.uuid4().hex)
    assert http.put(f"/api/handles/{first}", json=other, auth=node.auth).status_code == 200
    assert http.put(f"/api/handles/{second}", json=values, auth=node.auth).status_code == 201
    # Deleting a handle frees its value too.
    assert http.delete(f"/api/handles/{second}", auth=node.auth).status_code == 200
    assert http.put(f"/api/handles/{fresh('u')}", json=values, auth=node.auth).status_code == 201


def test_batch_items_taking_a_taken_value_fail_alone(
    http: httpx.Client, node: NodeProcess, unique_template: str
) -> None:
    held, a, b = (uuid.uuid4().hex for _ in range(3))
    holder = fresh("u")
    values = serial_record(unique_template, held)
    assert http.put(f"/api/handles/{holder}", json=values, auth=node.auth).status_code == 201
    handles = [fresh("ub") for _ in range(4)]
    serials = [a, a, b, held]  # the second takes the first's value, the last the holder's
    body = {
        "handles": [
            {"handle": h, "values": serial_record(unique_template, s)}
            for h, s in zip(handles, serials, strict=True)
        ]
    }
    results = http.post("/api/batch", json=body, auth=node.auth).json()["results"]
    assert [r["responseCode"] for r in results] == [1, 202, 1, 202], results
    assert "unique" in results[3]["message"]
    absent(http, handles[1])
    absent(http, handles[3])
    # Sent again after a timeout: the written ones are unchanged, the others still refused.
    again = http.post("/api/batch", json=body, auth=node.auth).json()["results"]
    assert [(r["responseCode"], r["status"]) for r in again] == [
        (1, "unchanged"),
        (202, "error"),
        (1, "unchanged"),
        (202, "error"),
    ]


def test_concurrent_writers_of_one_unique_value_one_wins(
    node: NodeProcess, unique_template: str
) -> None:
    """Rounds of writers in parallel (two worker processes, one PostgreSQL), each round all
    taking one serial on handles of their own, by PUT and by batch: one wins a round."""
    writers = 8

    def put(handle: str, serial: str) -> int:
        with node.client() as client:
            values = serial_record(unique_template, serial)
            response = client.put(f"/api/handles/{handle}", json=values, auth=node.auth)
            assert response.status_code in (201, 400), response.text
            return response.status_code

    def batch(handle: str, serial: str) -> int:
        with node.client() as client:
            body = {
                "handles": [{"handle": handle, "values": serial_record(unique_template, serial)}]
            }
            response = client.post("/api/batch", json=body, auth=node.auth)
            code = response.json()["results"][0]["responseCode"]
            assert code in (1, 202), response.text
            return 201 if code == 1 else 400

    with ThreadPoolExecutor(writers) as pool, node.client() as http:
        for round_ in range(6):
            serial = uuid.uuid4().hex
            door = put if round_ % 2 == 0 else batch
            handles = [fresh("race") for _ in range(writers)]
            codes = list(pool.map(door, handles, [serial] * writers))
            assert sorted(codes) == [201] + [400] * (writers - 1), codes
            held = [h for h in handles if http.get(f"/api/handles/{h}").status_code == 200]
            assert held == [handles[codes.index(201)]]


def test_import_refuses_records_of_templates_with_unique_items(
    http: httpx.Client, node: NodeProcess, unique_template: str, tmp_path: Path
) -> None:
    handle = fresh("imp")
    source = tmp_path / "unique.jsonl"
    line = {"handle": handle, "values": serial_record(unique_template, uuid.uuid4().hex)}
    source.write_text(json.dumps(line) + "\n", encoding="utf-8")
    done = import_file(node, source)
    assert f"{source}:1: template {unique_template} has unique items" in done.stderr, done.stderr
    absent(http, handle)
