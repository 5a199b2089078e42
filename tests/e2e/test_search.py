"""``GET /api/search`` on real ``idis serve`` processes, on PostgreSQL and on the embedded
SQLite: exact, prefix and range matches, keyset paging, values hidden from callers who may not
read them, results following rewrites and deletions, refused writes indexing nothing, bad
parameters answered 400, ``idis import`` indexing what it loads, and only items declared
``searchable`` indexed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from nodeproc import PREFIX, NodeProcess, stop_checked
from test_templates import ITEMS, import_file, record, template_value

SEARCHED = ("model", "capacity", "madeOn", "grade")
SEARCH_ITEMS = [{**item, "searchable": item["key"] in SEARCHED} for item in ITEMS]
"""The ten typed items, those searched here declared searchable (the others are not)."""


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def node(request: pytest.FixtureRequest, node_factory, pg_factory) -> Iterator[NodeProcess]:
    database = pg_factory() if request.param == "postgres" else None
    started = node_factory(database_url=database)
    yield started
    stop_checked(started)


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with node.client() as client:
        yield client


@pytest.fixture(scope="module")
def template(http: httpx.Client, node: NodeProcess) -> str:
    handle = f"{PREFIX}/TEMPLATE.search-{uuid.uuid4().hex[:8]}"
    response = http.put(
        f"/api/handles/{handle}", json=[template_value(1, 1, SEARCH_ITEMS)], auth=node.auth
    )
    assert response.status_code == 201, response.text
    return handle


def index_rows(node: NodeProcess, handle: str) -> list[tuple[int, str]]:
    """The ``attr_index`` rows ``(idx, type)`` of ``handle``, read from the node's database
    (PostgreSQL or its embedded SQLite file)."""
    key = handle.upper()
    url = node.env.get("IDIS_DATABASE_URL")
    if not url:
        with sqlite3.connect(node.data_dir / "idis.db", timeout=10) as db:
            found = db.execute(
                "SELECT idx, type FROM attr_index WHERE key = ? ORDER BY idx", (key,)
            ).fetchall()
        return [(idx, kind) for idx, kind in found]

    async def read() -> list[tuple[int, str]]:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT idx, type FROM attr_index WHERE key = $1 ORDER BY idx", key
            )
        finally:
            await connection.close()
        return [(row["idx"], row["type"]) for row in rows]

    return asyncio.run(read())


def tag() -> str:
    return uuid.uuid4().hex[:6].upper()


def put(http: httpx.Client, node: NodeProcess, handle: str, values: list[dict[str, Any]]) -> None:
    response = http.put(f"/api/handles/{handle}", json=values, auth=node.auth)
    assert response.status_code in (200, 201), response.text


def found(http: httpx.Client, auth: Any = None, **params: str) -> list[str]:
    """Every handle a search finds, following its pages."""
    params.setdefault("prefix", PREFIX)
    handles: list[str] = []
    for _ in range(50):
        response = http.get("/api/search", params=params, auth=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["responseCode"] == 1
        handles += body["handles"]
        if "next" not in body:
            return handles
        params["after"] = body["next"]
    raise AssertionError("more than 50 pages")


def test_exact_prefix_and_ranges(http: httpx.Client, node: NodeProcess, template: str) -> None:
    t = tag()
    rows = [("A", "72.5", "2026-01-05"), ("B", "80", "2026-02-01"), ("C", "100.5", "2025-12-31")]
    for suffix, capacity, made in rows:
        values = record(template, model=f"M{t}-{suffix}", capacity=capacity, madeOn=made)
        put(http, node, f"{PREFIX}/S{t}{suffix}", values)
    handle = {suffix: f"{PREFIX}/S{t}{suffix}" for suffix, _, _ in rows}
    assert found(http, type="model", value=f"M{t}-B") == [handle["B"]]
    assert found(http, type="MODEL", startsWith=f"M{t}-") == list(handle.values())
    # Numbers compare as numbers (80 < 100.5), not as text.
    assert found(http, type="capacity", min="75", max="100.5") == [handle["B"], handle["C"]]
    mine = found(http, type="madeOn", min="2026-01-01", max="2026-01-31")
    assert handle["A"] in mine and handle["B"] not in mine and handle["C"] not in mine
    assert found(http, type="model", value=f"M{t}-Z") == []


def test_pages_follow_each_other(http: httpx.Client, node: NodeProcess, template: str) -> None:
    t = tag()
    handles = [f"{PREFIX}/P{t}{n:02d}" for n in range(7)]
    batch = {
        "handles": [{"handle": h, "values": record(template, model=f"PAGE{t}")} for h in handles]
    }
    response = http.post("/api/batch", json=batch, auth=node.auth)
    assert response.status_code == 200, response.text
    assert [r["responseCode"] for r in response.json()["results"]] == [1] * 7
    first = http.get(
        "/api/search",
        params={"prefix": PREFIX, "type": "model", "value": f"PAGE{t}", "pageSize": "3"},
    )
    assert first.json()["handles"] == handles[:3] and "next" in first.json()
    assert found(http, type="model", value=f"PAGE{t}", pageSize="3") == handles


def test_private_values_only_for_who_may_read_them(
    http: httpx.Client, node: NodeProcess, template: str
) -> None:
    t = tag()
    handle = f"{PREFIX}/H{t}"
    values = record(template, model=f"HID{t}")
    for value in values:
        if value["type"] == "model":
            value["permissions"] = "1100"  # admin read/write, no public read
    put(http, node, handle, values)
    assert found(http, type="model", value=f"HID{t}") == []
    assert found(http, type="model", startsWith=f"HID{t}") == []
    assert found(http, node.auth, type="model", value=f"HID{t}") == [handle]
    # Never through a subtree search, not even for the administrator.
    assert found(http, node.auth, type="model", value=f"HID{t}", subtree="true") == []
    token = http.post(
        "/api/tokens", json={"prefix": PREFIX, "rights": ["READ_VALUE"]}, auth=node.auth
    )
    assert token.status_code == 201, token.text
    bearer = {"authorization": f"Bearer {token.json()['token']}"}
    response = http.get(
        "/api/search",
        params={"prefix": PREFIX, "type": "model", "value": f"HID{t}"},
        headers=bearer,
    )
    assert response.json()["handles"] == [handle]
    # A token of another prefix reads nothing private here.
    other = http.post(
        "/api/tokens", json={"prefix": "88.100.9", "rights": ["READ_VALUE"]}, auth=node.auth
    )
    if other.status_code == 201:
        headers = {"authorization": f"Bearer {other.json()['token']}"}
        response = http.get(
            "/api/search",
            params={"prefix": PREFIX, "type": "model", "value": f"HID{t}"},
            headers=headers,
        )
        assert response.json()["handles"] == []
    else:  # its issuer administers nothing of 88.100.9: refused, which also leaks nothing
        assert other.status_code == 403, other.text


def test_rewrites_and_deletions_change_the_results(
    http: httpx.Client, node: NodeProcess, template: str
) -> None:
    t = tag()
    handle = f"{PREFIX}/R{t}"
    put(http, node, handle, record(template, model=f"OLD{t}"))
    assert found(http, type="model", value=f"OLD{t}") == [handle]
    put(http, node, handle, record(template, model=f"NEW{t}"))
    assert found(http, type="model", value=f"OLD{t}") == []
    assert found(http, type="model", value=f"NEW{t}") == [handle]
    # Rewritten without its template: its values are no longer indexed.
    put(
        http,
        node,
        handle,
        [
            {"index": 1, "type": "URL", "data": "https://x"},
            {"index": 2001, "type": "model", "data": f"NEW{t}"},
        ],
    )
    assert found(http, type="model", value=f"NEW{t}") == []
    put(http, node, handle, record(template, model=f"AGAIN{t}"))
    assert found(http, type="model", value=f"AGAIN{t}") == [handle]
    assert http.delete(f"/api/handles/{handle}", auth=node.auth).status_code == 200
    assert found(http, type="model", value=f"AGAIN{t}") == []


def test_untemplated_values_are_not_found(
    http: httpx.Client, node: NodeProcess, template: str, tmp_path: Path
) -> None:
    """Only what a template declares is indexed: values at 2000 and above of records naming
    no template are found neither when written nor when imported."""
    t = tag()
    untemplated = [
        {"index": 1, "type": "URL", "data": "https://u"},
        {"index": 2001, "type": "model", "data": f"UNT{t}"},
        {"index": 2500, "type": "colour", "data": f"RED{t}"},
    ]
    put(http, node, f"{PREFIX}/U{t}", untemplated)
    batch = {"handles": [{"handle": f"{PREFIX}/UB{t}", "values": untemplated}]}
    assert http.post("/api/batch", json=batch, auth=node.auth).status_code == 200
    source = tmp_path / "untemplated.jsonl"
    source.write_text(json.dumps({"handle": f"{PREFIX}/UI{t}", "values": untemplated}) + "\n")
    result = import_file(node, source)
    assert result.returncode == 0, result.stderr
    for handle in (f"{PREFIX}/U{t}", f"{PREFIX}/UB{t}", f"{PREFIX}/UI{t}"):
        assert http.get(f"/api/handles/{handle}").status_code == 200
    assert found(http, type="model", value=f"UNT{t}") == []
    assert found(http, node.auth, type="colour", startsWith=f"RED{t}") == []
    # The same value in a templated record is found: the template declares index 2001.
    put(http, node, f"{PREFIX}/UT{t}", record(template, model=f"UNT{t}"))
    assert found(http, type="model", value=f"UNT{t}") == [f"{PREFIX}/UT{t}"]


def test_disabled_items_are_not_indexed(http: httpx.Client, node: NodeProcess) -> None:
    """A record is indexed by the template version that checked it: an item disabled in a
    later version stops being indexed when a record is written under it."""
    t = tag()
    name = f"{PREFIX}/TEMPLATE.dis-{t.lower()}"
    v1 = template_value(1, 1, SEARCH_ITEMS)
    put(http, node, name, [v1])
    put(http, node, f"{PREFIX}/D1{t}", record(name, model=f"DIS{t}", grade="B"))
    assert found(http, type="grade", value="B", prefix=PREFIX).count(f"{PREFIX}/D1{t}") == 1
    grade = next(item for item in SEARCH_ITEMS if item["key"] == "grade")
    items2 = [{**item, "state": "disabled"} if item is grade else item for item in SEARCH_ITEMS]
    put(http, node, name, [v1, template_value(2, 2, items2)])
    put(http, node, f"{PREFIX}/D2{t}", record(name, model=f"DIS{t}", grade="B"))
    assert f"{PREFIX}/D2{t}" not in found(http, type="grade", value="B")
    assert found(http, type="model", value=f"DIS{t}") == [f"{PREFIX}/D1{t}", f"{PREFIX}/D2{t}"]
    # Changed under version 2, the first record's disabled value leaves the index too (sent
    # again unchanged it would not be written at all, and keep its entries).
    put(http, node, f"{PREFIX}/D1{t}", record(name, model=f"DIT{t}", grade="B"))
    assert f"{PREFIX}/D1{t}" not in found(http, type="grade", value="B")


def test_refused_writes_index_nothing(http: httpx.Client, node: NodeProcess, template: str) -> None:
    t = tag()
    bad = record(template, model=f"BAD{t}", capacity="lots")
    response = http.put(f"/api/handles/{PREFIX}/B{t}", json=bad, auth=node.auth)
    assert response.status_code == 400, response.text
    batch = {"handles": [{"handle": f"{PREFIX}/BB{t}", "values": bad}]}
    assert (
        http.post("/api/batch", json=batch, auth=node.auth).json()["results"][0]["responseCode"]
        == 202
    )
    assert found(http, type="model", value=f"BAD{t}") == []
    assert found(http, node.auth, type="model", startsWith=f"BAD{t}") == []


@pytest.mark.parametrize(
    "params",
    [
        {"type": "model", "value": "X"},
        {"prefix": PREFIX, "value": "X"},
        {"prefix": PREFIX, "type": "model"},
        {"prefix": PREFIX, "type": "model", "value": "X", "startsWith": "X"},
        {"prefix": PREFIX, "type": "capacity", "min": "abc"},
        {"prefix": PREFIX, "type": "capacity", "min": "5", "max": "1"},
        {"prefix": PREFIX, "type": "model", "value": "X", "pageSize": "0"},
        {"prefix": PREFIX, "type": "model", "value": "X", "pageSize": "many"},
        {"prefix": PREFIX, "type": "model", "value": "X", "after": "%%%"},
        {"prefix": PREFIX, "type": "capacity", "min": "1", "after": "WyJhIiwiYiIsMV0"},
        {"prefix": PREFIX, "type": "model", "value": "X" * 300},
        {"prefix": PREFIX, "type": "model", "value": "X", "subtree": "perhaps"},
        {"prefix": f"{PREFIX}/X", "type": "model", "value": "X"},
    ],
)
def test_bad_parameters_answer_400(http: httpx.Client, params: dict[str, str]) -> None:
    response = http.get("/api/search", params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["responseCode"] == 4 and body["message"], body


def test_import_indexes_what_it_loads(
    http: httpx.Client, node: NodeProcess, template: str, tmp_path: Path
) -> None:
    t = tag()
    lines = [
        {
            "handle": f"{PREFIX}/I{t}{n}",
            "values": record(template, model=f"IMP{t}", capacity=str(10 + n)),
        }
        for n in range(3)
    ]
    lines.append(
        {
            "handle": f"{PREFIX}/I{t}plain",
            "values": [{"index": 1, "type": "URL", "data": "https://p"}],
        }
    )
    source = tmp_path / "search.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = import_file(node, source)
    assert result.returncode == 0, result.stderr
    handles = [line["handle"] for line in lines[:3]]
    assert found(http, type="model", value=f"IMP{t}") == handles
    assert found(http, type="capacity", min="11", max="12") == handles[1:]
    # Imported again with other values (the merge path): the index follows.
    for line in lines[:3]:
        line["values"] = record(template, model=f"IMQ{t}")
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = import_file(node, source)
    assert result.returncode == 0, result.stderr
    assert found(http, type="model", value=f"IMP{t}") == []
    assert found(http, type="model", value=f"IMQ{t}") == handles


def test_snms_search_answers_in_snms_terms(
    http: httpx.Client, node: NodeProcess, template: str
) -> None:
    t = tag()
    handle = f"{PREFIX}/N{t}"
    values = record(template, model=f"SNMS{t}")
    for value in values:
        if value["type"] == "model":
            value["permissions"] = "1100"
    put(http, node, handle, values)
    params = {"prefix": PREFIX, "type": "model", "value": f"SNMS{t}"}
    anonymous = http.get("/identityv2/data/search", params=params).json()
    assert anonymous["status"] == -1, anonymous
    login = http.post("/identity/token", json={"username": node.identity, "password": node.secret})
    bearer = {"authorization": f"Bearer {login.json()['data']['token']}"}
    body = http.get("/identityv2/data/search", params=params, headers=bearer).json()
    assert body["status"] == 1 and body["data"]["handles"] == [handle], body
    bad = http.get("/identityv2/data/search", params={"prefix": PREFIX}, headers=bearer).json()
    assert bad["status"] == -2 and "type" in bad["message"], bad


def test_private_values_follow_each_handles_own_admin(
    http: httpx.Client, node: NodeProcess, template: str
) -> None:
    """A handle whose HS_ADMIN names another administrator keeps its private values from the
    prefix's administrator too, as its resolution does."""
    t = tag()
    handle = f"{PREFIX}/O{t}"
    values = record(template, model=f"OWN{t}")
    for value in values:
        if value["type"] == "model":
            value["permissions"] = "1100"
    admin = {"handle": "0.NA/88.100.9", "index": 200, "permissions": "011111111111"}
    values.append({"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": admin}})
    put(http, node, handle, values)
    resolved = http.get(f"/api/handles/{handle}", params={"auth": "true"}, auth=node.auth)
    assert all(v["type"] != "model" for v in resolved.json()["values"]), resolved.text
    assert found(http, node.auth, type="model", value=f"OWN{t}") == []


def test_unsearchable_items_are_not_indexed(
    http: httpx.Client, node: NodeProcess, template: str, tmp_path: Path
) -> None:
    """A value of an item not declared searchable writes no index row, through PUT, batch and
    import: a search by its type finds nothing, though the record holds it."""
    t = tag()
    handles = [f"{PREFIX}/NS{t}", f"{PREFIX}/NSB{t}", f"{PREFIX}/NSI{t}"]
    values = record(template, model=f"NS{t}", manual=f"https://example.com/ns/{t}")
    put(http, node, handles[0], values)
    batch = {"handles": [{"handle": handles[1], "values": values}]}
    assert http.post("/api/batch", json=batch, auth=node.auth).status_code == 200
    source = tmp_path / "unsearchable.jsonl"
    source.write_text(json.dumps({"handle": handles[2], "values": values}) + "\n")
    result = import_file(node, source)
    assert result.returncode == 0, result.stderr
    searchable = [(i["index"], i["key"].upper()) for i in SEARCH_ITEMS if i["searchable"]]
    for handle in handles:
        stored = http.get(f"/api/handles/{handle}").json()["values"]
        assert f"https://example.com/ns/{t}" in [v["data"]["value"] for v in stored]
        assert index_rows(node, handle) == searchable
    assert found(http, type="model", value=f"NS{t}") == sorted(handles)
    assert found(http, node.auth, type="manual", value=f"https://example.com/ns/{t}") == []


def test_template_without_searchable_items_writes_no_rows(
    http: httpx.Client, node: NodeProcess
) -> None:
    """Records of a template with no searchable item have no index rows, created or
    rewritten; a later version making an item searchable indexes the records written after
    it (and those rewritten), not the ones left as they were."""
    t = tag()
    name = f"{PREFIX}/TEMPLATE.nos-{t.lower()}"
    plain = [{k: v for k, v in item.items() if k != "searchable"} for item in ITEMS]
    v1 = template_value(1, 1, plain)
    put(http, node, name, [v1])
    before, rewritten = f"{PREFIX}/NR1{t}", f"{PREFIX}/NR2{t}"
    for handle in (before, rewritten):
        put(http, node, handle, record(name, model=f"NR{t}"))
        assert index_rows(node, handle) == []
    put(http, node, rewritten, record(name, model=f"NQ{t}"))
    assert index_rows(node, rewritten) == []
    assert found(http, type="model", value=f"NR{t}") == []
    # Version 2 makes the model searchable.
    items2 = [{**item, "searchable": item["key"] == "model"} for item in plain]
    put(http, node, name, [v1, template_value(2, 2, items2)])
    after = f"{PREFIX}/NR3{t}"
    put(http, node, after, record(name, model=f"NR{t}"))
    put(http, node, rewritten, record(name, model=f"NR{t}"))
    assert index_rows(node, after) == [(2001, "MODEL")]
    assert index_rows(node, rewritten) == [(2001, "MODEL")]
    assert index_rows(node, before) == []
    assert found(http, type="model", value=f"NR{t}") == sorted([rewritten, after])
    # Version 3 may not make it unsearchable again: its indexed records keep their rows.
    response = http.put(
        f"/api/handles/{name}",
        json=[v1, template_value(2, 2, items2), template_value(3, 3, plain)],
        auth=node.auth,
    )
    assert response.status_code == 400 and "not searchable" in response.text, response.text
