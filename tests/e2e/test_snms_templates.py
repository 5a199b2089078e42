"""SNMS data templates (``/snms/api/v5/template``) on a real ``idis serve`` on PostgreSQL: their
lifecycle, records written through SNMS and REST checked against them, refusals in SNMS
statuses, and the same template seen as the handle it is through REST and the native protocol.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from conftest import StartNode
from nodeproc import NodeProcess

from loadtests import handle_client as hc

PREFIX = "88.300"
OTHER = f"{PREFIX}/OTHER"
OTHER_SECRET = "other-pass-phrase-long"
PATH = "/snms/api/v5/template"

ITEMS: list[dict[str, Any]] = [
    {
        "name": "型号",
        "idType": "model",
        "idIndex": "2000",  # the deployed API's own example sends a string
        "required": True,
        "metadata": {"type": "string", "minLength": 2, "maxLength": 20},
    },
    {
        "name": "容量",
        "idType": "capacity",
        "idIndex": 2001,
        "metadata": {"type": 2, "precision": 1, "minimum": 0, "maximum": 500},
    },
    {"name": "生产日期", "idType": "madeOn", "idIndex": 2002, "metadata": {"type": "date"}},
]


def body(version: str, items: list[dict[str, Any]] = ITEMS, **fields: Any) -> dict[str, Any]:
    return {
        "prefix": PREFIX,
        "version": version,
        "industryCategory": "C",
        "industrySpecific": "38",
        "industryTrade": "384",
        "industrySubclass": "3841",
        "type": 1,
        "description": "电池",
        "items": items,
        **fields,
    }


@pytest.fixture(scope="module")
def node(node_factory: StartNode, pg_factory: Any) -> NodeProcess:
    node = node_factory(database_url=pg_factory(), prefix=PREFIX)
    with node.client(auth=node.auth) as client:
        values = [{"index": 300, "type": "HS_SECKEY", "data": OTHER_SECRET}]
        assert client.put(f"/api/handles/{OTHER}", json=values).status_code == 201
    return node


def bearer_of(node: NodeProcess, username: str, password: str) -> dict[str, str]:
    login = {"username": username, "password": password}
    answer = httpx.post(f"{node.base_url}/identity/token", json=login, timeout=30).json()
    assert answer["status"] == 1, answer
    return {"Authorization": f"Bearer {answer['data']['token']}"}


@pytest.fixture(scope="module")
def admin(node: NodeProcess) -> dict[str, str]:
    return bearer_of(node, node.identity, node.secret)


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Any:
    with node.client() as client:
        yield client


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def send(http: httpx.Client, method: str, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    response = http.request(method, PATH, headers=headers, **kw)
    assert response.status_code == 200, response.text
    return dict(response.json())


def read(http: httpx.Client, version: str, **params: Any) -> dict[str, Any]:
    return dict(http.get(PATH, params={"prefix": PREFIX, "version": version, **params}).json())


def snms_record(handle: str, version: str, values: dict[int, tuple[str, str]]) -> dict[str, Any]:
    return {
        "handle": handle,
        "templateVersion": version,
        "value": [
            {"index": index, "type": kind, "data": {"format": "string", "value": text}}
            for index, (kind, text) in values.items()
        ],
    }


GOOD = {1: ("URL", "https://x/b"), 2000: ("model", "BAT-1"), 2001: ("capacity", "72.5")}


def test_the_template_lifecycle(http: httpx.Client, admin: dict[str, str]) -> None:
    version = fresh("1.0")
    assert send(http, "POST", admin, json=body(version)) == {
        "status": 1,
        "message": "success",
        "data": True,
    }
    again = send(http, "POST", admin, json=body(version))
    assert again["status"] == -2 and again["code"] == 101, again
    first = read(http, version)
    assert first["status"] == 1, first
    data = first["data"]
    assert data["handle"] == f"{PREFIX}/TEMPLATE.{version}" and data["version"] == version
    assert data["revision"] == 1 and data["industrySubclass"] == "3841" and data["type"] == 1
    model, capacity, made = data["items"]
    assert model == {
        "name": "型号",
        "idType": "model",
        "idIndex": 2000,
        "required": True,
        "unique": False,
        "searchable": False,
        "state": 1,
        "metadata": {"type": "string", "minLength": 2, "maxLength": 20},
    }
    assert capacity["metadata"]["type"] == "number" and made["metadata"] == {"type": "date"}

    # Revision 2: "model" disabled, a new item without idIndex takes the next free index.
    change = body(
        version,
        [
            {"name": "型号", "idType": "model", "idIndex": 2000, "state": 0},
            {"name": "厂家", "idType": "maker", "required": True, "metadata": {"maxLength": 8}},
        ],
    )
    assert send(http, "PUT", admin, json=change)["status"] == 1
    latest = read(http, version)["data"]
    assert latest["revision"] == 2 and latest["revisions"] == [1, 2]
    by_type = {item["idType"]: item for item in latest["items"]}
    assert by_type["model"]["state"] == 0 and by_type["model"]["metadata"]["minLength"] == 2
    assert by_type["maker"]["idIndex"] == 2003 and by_type["maker"]["required"] is True
    assert by_type["capacity"] == capacity  # left out of the change: kept as it was
    assert read(http, version, revision=1)["data"]["items"][0]["state"] == 1
    assert send(http, "PUT", admin, json=change)["message"] == "unchanged"

    listed = http.get(f"{PATH}/list", params={"prefix": PREFIX}).json()
    assert listed["status"] == 1
    mine = [t for t in listed["data"]["items"] if t["version"] == version]
    assert [t["revision"] for t in mine] == [2]
    refused = send(http, "DELETE", admin, json={"prefix": PREFIX, "version": version})
    assert refused["status"] == -2 and "disable" in refused["message"]
    assert read(http, version)["data"]["revision"] == 2


def test_records_are_checked_against_the_snms_template(
    node: NodeProcess, http: httpx.Client, admin: dict[str, str]
) -> None:
    version = fresh("cell")
    assert send(http, "POST", admin, json=body(version))["status"] == 1
    old = f"{PREFIX}/{fresh('cell')}"
    created = http.post("/identityv2/data", json=snms_record(old, version, GOOD), headers=admin)
    assert created.json()["status"] == 1, created.text
    detail = http.get("/identityv2/data/detail", params={"handle": old}, headers=admin).json()
    assert detail["data"]["templateVersion"] == version
    rest = {v["index"]: v for v in http.get(f"/api/handles/{old}").json()["values"]}
    assert rest[1001]["data"]["value"] == f"{PREFIX}/TEMPLATE.{version}"

    bad = f"{PREFIX}/{fresh('cell')}"
    short = {**GOOD, 2000: ("model", "B")}
    refused = http.post("/identityv2/data", json=snms_record(bad, version, short), headers=admin)
    answer = refused.json()
    assert answer["status"] == -2 and answer["code"] == 202, answer
    assert "model" in answer["message"] and "minLength" in answer["message"]
    assert http.get(f"/api/handles/{bad}").status_code == 404
    by_rest = [
        {"index": 1001, "type": "TEMPLATE", "data": f"{PREFIX}/TEMPLATE.{version}"},
        {"index": 2001, "type": "capacity", "data": "72.55"},
        {"index": 2000, "type": "model", "data": "BAT-2"},
    ]
    put = http.put(f"/api/handles/{bad}", json=by_rest, auth=node.auth)
    assert put.status_code == 400 and "precision" in put.json()["message"], put.text
    missing = http.post(
        "/identityv2/data", json=snms_record(bad, fresh("none"), GOOD), headers=admin
    )
    assert missing.json()["status"] == -2 and "no template" in missing.json()["message"]

    # Revision 2 disables the required "model": new records go in without it, the old one
    # still resolves with its value, and batches are checked against revision 2.
    change = body(version, [{"name": "型号", "idType": "model", "idIndex": 2000, "state": 0}])
    assert send(http, "PUT", admin, json=change)["status"] == 1
    without = {1: GOOD[1], 2001: GOOD[2001]}
    batch = [
        snms_record(f"{PREFIX}/{fresh('b')}", version, without),
        snms_record(f"{PREFIX}/{fresh('b')}", version, {**without, 2001: ("capacity", "-1")}),
    ]
    results = http.post("/identityv2/data/batchCreate", json=batch, headers=admin).json()
    assert [r["status"] for r in results["data"]["results"]] == [1, -2], results
    kept = {v["index"]: v for v in http.get(f"/api/handles/{old}").json()["values"]}
    assert kept[2000]["data"]["value"] == "BAT-1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prefix": None}, "prefix"),
        ({"version": ""}, "version"),
        ({"version": "a b"}, "version"),
        ({"items": "no"}, "items"),
        ({"items": []}, "items"),
        ({"items": [{**ITEMS[0], "idIndex": 1001}]}, "items[0].idIndex"),
        ({"items": [{**ITEMS[0], "idIndex": "x"}]}, "items[0].idIndex"),
        ({"items": [{**ITEMS[0], "idType": ""}]}, "items[0].idType"),
        ({"items": [{**ITEMS[0], "name": 3}]}, "items[0].name"),
        ({"items": [{**ITEMS[0], "state": 5}]}, "items[0].state"),
        ({"items": [{**ITEMS[0], "required": "yes"}]}, "items[0].required"),
        ({"items": [{**ITEMS[0], "metadata": []}]}, "items[0].metadata"),
        ({"items": [{**ITEMS[0], "metadata": {"type": "blob"}}]}, "type must be one of"),
        ({"items": [{**ITEMS[0], "metadata": {"type": [1]}}]}, "items[0].metadata.type"),
        ({"items": [{**ITEMS[0], "metadata": {"maxLength": "x"}}]}, "maxLength"),
        ({"items": [ITEMS[0], {**ITEMS[1], "idIndex": 2000}]}, "items[1].idIndex"),
        ({"items": [ITEMS[0], {**ITEMS[1], "idType": "model"}]}, "items[1].idType"),
    ],
)
def test_bad_bodies_are_minus_two_naming_the_field(
    http: httpx.Client, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    version = fresh("bad")
    answer = send(http, "POST", admin, json={**body(version), **change})
    assert answer["status"] == -2 and field in answer["message"], answer
    assert read(http, version)["status"] == -2  # nothing written


def test_bad_changes_and_bodies_that_are_not_json(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    version = fresh("chg")
    assert send(http, "POST", admin, json=body(version))["status"] == 1
    retyped = body(version, [{"name": "x", "idType": "serial", "idIndex": 2000}])
    answer = send(http, "PUT", admin, json=retyped)
    assert answer["status"] == -2 and "items[0].idType" in answer["message"], answer
    taken = body(version, [{"name": "x", "idType": "model", "idIndex": 2005}])
    answer = send(http, "PUT", admin, json=taken)
    assert answer["status"] == -2 and "items[0].idType" in answer["message"], answer
    absent = send(http, "PUT", admin, json=body(fresh("absent")))
    assert absent["status"] == -2 and absent["code"] == 100
    for raw in (b"{not json", b"[1, 2]"):
        answer = send(http, "POST", {**admin, "content-type": "application/json"}, content=raw)
        assert answer["status"] == -2, answer
    assert read(http, version)["data"]["revision"] == 1
    wrong = read(http, version, revision=7)
    assert wrong["status"] == -2 and "revision" in wrong["message"]


def test_only_the_prefix_administrator_creates_and_changes(
    node: NodeProcess, http: httpx.Client, admin: dict[str, str]
) -> None:
    anonymous = send(http, "POST", {}, json=body(fresh("anon")))
    assert anonymous["status"] == -1, anonymous
    other = bearer_of(node, f"300:{OTHER}", OTHER_SECRET)
    version = fresh("own")
    refused = send(http, "POST", other, json=body(version))
    assert refused["status"] == -3, refused
    assert send(http, "POST", admin, json=body(version))["status"] == 1
    change = body(version, [{"name": "型号", "idType": "model", "idIndex": 2000, "state": 0}])
    assert send(http, "PUT", other, json=change)["status"] == -3
    # A token holding ADD_HANDLE creates templates but cannot change one (ADD_VALUE).
    issued = http.post(
        "/api/tokens", json={"prefix": PREFIX, "rights": ["ADD_HANDLE"]}, auth=node.auth
    )
    assert issued.status_code == 201, issued.text
    token = {"Authorization": f"Bearer {issued.json()['token']}"}
    scoped = fresh("tok")
    assert send(http, "POST", token, json=body(scoped))["status"] == 1
    assert send(http, "PUT", token, json={**change, "version": scoped})["status"] == -3
    assert read(http, version)["data"]["revision"] == 1
    assert read(http, scoped)["data"]["items"][0]["state"] == 1


def test_the_template_is_the_handle_rest_and_native_resolve(
    node: NodeProcess, http: httpx.Client, admin: dict[str, str]
) -> None:
    version = fresh("pub")
    assert send(http, "POST", admin, json=body(version))["status"] == 1
    handle = f"{PREFIX}/TEMPLATE.{version}"
    rest = http.get(f"/api/handles/{handle}").json()
    [value] = [v for v in rest["values"] if v["type"] == "IDIS.TEMPLATE"]
    doc = json.loads(value["data"]["value"])
    assert doc["version"] == 1 and [i["key"] for i in doc["items"]] == [
        "model",
        "capacity",
        "madeOn",
    ]
    assert doc["industry"]["industryCategory"] == "C"
    native = hc.http(node.base_url, handle, hc.resolution(handle))
    assert native.code == 1, native.message()
    # A template written over REST is read through SNMS the same way.
    by_rest = f"{PREFIX}/TEMPLATE.{fresh('rest')}"
    rest_doc = {**doc, "items": doc["items"][:1]}
    values = [{"index": 1, "type": "IDIS.TEMPLATE", "data": json.dumps(rest_doc)}]
    assert http.put(f"/api/handles/{by_rest}", json=values, auth=node.auth).status_code == 201
    seen = read(http, by_rest.partition("TEMPLATE.")[2])["data"]
    assert seen["handle"] == by_rest and seen["items"][0]["idType"] == "model"


def test_searchable_items_through_snms(
    node: NodeProcess, http: httpx.Client, admin: dict[str, str]
) -> None:
    """``items[i].searchable`` (true/false or 1/0, default false) is the item's search flag:
    read back as a boolean, kept by a change that leaves it out, never taken back; records
    written through SNMS are found by searchable items only."""
    version = fresh("srch")
    items = [{**ITEMS[0], "searchable": True}, {**ITEMS[1], "searchable": 1}, ITEMS[2]]
    assert send(http, "POST", admin, json=body(version, items))["status"] == 1
    shown = read(http, version)["data"]["items"]
    assert [item["searchable"] for item in shown] == [True, True, False]
    values = {**GOOD, 2002: ("madeOn", "2026-01-31")}
    handle = f"{PREFIX}/{fresh('s')}"
    created = http.post(
        "/identityv2/data", json=snms_record(handle, version, values), headers=admin
    )
    assert created.json()["status"] == 1, created.text

    def search(kind: str, **match: str) -> list[str]:
        params = {"prefix": PREFIX, "type": kind, **match}
        response = http.get("/api/search", params=params)
        assert response.status_code == 200, response.text
        return list(response.json()["handles"])

    assert handle in search("model", value=GOOD[2000][1])
    assert handle in search("capacity", min=GOOD[2001][1], max=GOOD[2001][1])
    assert search("madeOn", value=values[2002][1]) == []  # not searchable: not indexed
    # Revision 2 makes madeOn searchable (1) and leaves the others' flags as they were.
    change = body(version, [{"name": "生产日期", "idType": "madeOn", "searchable": 1}])
    assert send(http, "PUT", admin, json=change)["status"] == 1
    assert [item["searchable"] for item in read(http, version)["data"]["items"]] == [True] * 3
    later = f"{PREFIX}/{fresh('s')}"
    created = http.post("/identityv2/data", json=snms_record(later, version, values), headers=admin)
    assert created.json()["status"] == 1, created.text
    assert later in search("madeOn", value=values[2002][1])
    # Never unflagged again; a flag that is not a boolean or 0/1 is refused naming it.
    for flag, words in ((False, "not searchable"), ("yes", "items[0].searchable")):
        unflag = body(version, [{"name": "型号", "idType": "model", "searchable": flag}])
        answer = send(http, "PUT", admin, json=unflag)
        assert answer["status"] == -2 and words in answer["message"], answer
