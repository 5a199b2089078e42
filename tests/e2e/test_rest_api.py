"""The Handle REST API of a real ``idis serve`` process, over HTTP, on PostgreSQL.

Every module-scoped node is shared by the tests of its parametrization, so each test works on
handles of its own (see :func:`fresh`).  The ``postgres+redis`` parametrization runs two
workers with the Redis cache, so most reads there may come from either worker.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from http.client import HTTPConnection
from typing import Any

import httpx
import pytest
import redis
from nodeproc import PREFIX, NodeProcess, basic_auth

from nodes.processes import free_ports

MAX_BODY = 256 * 1024
"""The nodes' IDIS_MAX_BODY_BYTES: small, yet room for a batch of 2000 small handles."""

TIMESTAMP = re.compile(r'"timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"')
STRANGER_SECRET = "stranger-secret"


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["postgres", "postgres+redis"])
def node(request: pytest.FixtureRequest, node_factory, pg_factory) -> Iterator[NodeProcess]:
    """A node on a database of its own: one worker, or two workers sharing Redis."""
    with_redis = request.param == "postgres+redis"
    started = node_factory(
        database_url=pg_factory(),
        redis_url=request.getfixturevalue("redis_url") if with_redis else None,
        workers=2 if with_redis else 1,
        extra_env={"IDIS_MAX_BODY_BYTES": str(MAX_BODY)},
    )
    yield started
    log = started.log()
    started.stop()
    # Every malformed request got a Handle code: nothing anywhere escaped as a crash.
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with node.client() as client:
        yield client


@pytest.fixture(scope="module")
def admin(node: NodeProcess) -> httpx.BasicAuth:
    return node.auth


@pytest.fixture(scope="module")
def stranger(http: httpx.Client, admin: httpx.BasicAuth) -> httpx.BasicAuth:
    """An identity the node knows (it has a secret key) but that no HS_ADMIN names."""
    handle = fresh("stranger")
    response = http.put(
        f"/api/handles/{handle}",
        json=[{"index": 300, "type": "HS_SECKEY", "data": STRANGER_SECRET}],
        auth=admin,
    )
    assert response.status_code == 201, response.text
    return basic_auth(f"300:{handle}", STRANGER_SECRET)


# --- helpers ---------------------------------------------------------------------------------


def fresh(name: str) -> str:
    return f"{PREFIX}/{name}-{uuid.uuid4().hex[:8]}"


def expect(response: httpx.Response, status: int, code: int, handle: str | None = None) -> dict:
    """The JSON body, after checking the HTTP status and the Handle response code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["responseCode"] == code, body
    if handle is not None:
        assert body["handle"] == handle, body
    return body


def create(http: httpx.Client, auth: httpx.BasicAuth, handle: str, values: Any) -> None:
    expect(http.put(f"/api/handles/{handle}", json=values, auth=auth), 201, 1, handle)


def stored(http: httpx.Client, handle: str) -> tuple[int, str]:
    """Status and body of an authoritative read (past every cache)."""
    response = http.get(f"/api/handles/{handle}", params={"auth": "true"})
    return response.status_code, response.text


def values_of(http: httpx.Client, handle: str, **params: str) -> dict[int, dict]:
    response = http.get(f"/api/handles/{handle}", params=params)
    assert response.status_code == 200, response.text
    return {v["index"]: v for v in response.json()["values"]}


def url_value(values: dict[int, dict], index: int = 1) -> str:
    return values[index]["data"]["value"]


def count(http: httpx.Client, auth: httpx.BasicAuth) -> int:
    response = http.get("/api/handles", params={"prefix": PREFIX, "pageSize": 0}, auth=auth)
    return int(expect(response, 200, 1)["totalCount"])


SIMPLE = [{"index": 1, "type": "URL", "data": "https://example.com/simple"}]


# --- resolution ------------------------------------------------------------------------------


def test_resolution_json_shape(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("shape")
    create(
        http,
        admin,
        handle,
        {
            "values": [
                {"index": 1, "type": "URL", "data": "https://example.com/p/1"},
                {
                    "index": 2,
                    "type": "EMAIL",
                    "data": {"format": "string", "value": "ops@example.com"},
                    "ttl": 3600,
                },
                {"index": 3, "type": "BLOB", "data": {"format": "hex", "value": "00ff10"}},
                {
                    "index": 4,
                    "type": "REF",
                    "data": "x",
                    "permissions": "1111",
                    "references": [{"handle": f"{PREFIX}/OTHER", "index": 1}],
                },
                {"index": 5, "type": "PRIVATE", "data": "hidden", "permissions": "1100"},
                {"index": 6, "type": "EXP", "data": "e", "ttl": "2030-01-02T03:04:05Z"},
                {
                    "index": 100,
                    "type": "HS_ADMIN",
                    "data": {
                        "format": "admin",
                        "value": {
                            "handle": f"0.NA/{PREFIX}",
                            "index": "200",
                            "permissions": "011111111111",
                        },
                    },
                },
            ]
        },
    )
    before = time.time()
    response = http.get(f"/api/handles/{handle}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    text = response.text
    stamps = TIMESTAMP.findall(text)
    assert len(stamps) == 6
    for stamp in stamps:
        moment = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert abs(moment - before) < 300, stamp
    # Field order, formats and omitted defaults exactly as Handle.Net writes them.
    expected = (
        (
            '{"responseCode":1,"handle":"HANDLE","values":['
            '{"index":1,"type":"URL","data":{"format":"string","value":"https://example.com/p/1"},'
            '"ttl":86400,"timestamp":"T"},'
            '{"index":2,"type":"EMAIL","data":{"format":"string","value":"ops@example.com"},'
            '"ttl":3600,"timestamp":"T"},'
            '{"index":3,"type":"BLOB","data":{"format":"base64","value":"AP8Q"},'
            '"ttl":86400,"timestamp":"T"},'
            '{"index":4,"type":"REF","data":{"format":"string","value":"x"},"permissions":"1111",'
            '"ttl":86400,"timestamp":"T","references":[{"handle":"PREFIX/OTHER","index":1}]},'
            '{"index":6,"type":"EXP","data":{"format":"string","value":"e"},'
            '"ttl":"2030-01-02T03:04:05Z","timestamp":"T"},'
            '{"index":100,"type":"HS_ADMIN","data":{"format":"admin","value":'
            '{"handle":"0.NA/PREFIX","index":200,"permissions":"011111111111"}},'
            '"ttl":86400,"timestamp":"T"}]}'
        )
        .replace("HANDLE", handle)
        .replace("PREFIX", PREFIX)
    )
    assert TIMESTAMP.sub('"timestamp":"T"', text) == expected

    # The value without public read shows only to an identity with read rights.
    assert 5 not in values_of(http, handle)
    private = http.get(f"/api/handles/{handle}", auth=admin).json()["values"]
    assert next(v for v in private if v["index"] == 5)["permissions"] == "1100"
    public_only = http.get(f"/api/handles/{handle}?publicOnly=true", auth=admin).json()
    assert 5 not in {v["index"] for v in public_only["values"]}

    head = http.head(f"/api/handles/{handle}")
    assert head.status_code == 200
    assert head.content == b""


def test_type_and_index_filters(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("filter")
    create(
        http,
        admin,
        handle,
        [
            {"index": 1, "type": "URL", "data": "https://example.com/main"},
            {"index": 2, "type": "URL.mirror", "data": "https://mirror.example.com/"},
            {"index": 3, "type": "EMAIL", "data": "ops@example.com"},
        ],
    )

    def indexes(query: str) -> list[int]:
        body = expect(http.get(f"/api/handles/{handle}?{query}"), 200, 1, handle)
        return [v["index"] for v in body["values"]]

    assert indexes("type=URL") == [1]
    assert indexes("type=url") == [1]
    assert indexes("type=URL.") == [1, 2]
    assert indexes("type=URL.mirror") == [2]
    assert indexes("type=EMAIL&type=URL") == [1, 3]
    assert indexes("index=2") == [2]
    assert indexes("index=3&index=1") == [1, 3]
    assert indexes("type=URL&index=3") == [1, 3]
    for query in ("index=99", "type=NOPE"):
        body = expect(http.get(f"/api/handles/{handle}?{query}"), 200, 200, handle)
        assert body["values"] == []
    expect(http.get(f"/api/handles/{handle}?index=abc"), 400, 4, handle)
    expect(http.get(f"/api/handles/{handle}?index="), 400, 4, handle)


def test_pretty(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("pretty")
    create(http, admin, handle, SIMPLE)
    compact = http.get(f"/api/handles/{handle}").text
    pretty = http.get(f"/api/handles/{handle}?pretty").text
    assert "\n" not in compact
    assert pretty.startswith('{\n  "responseCode": 1,\n  "handle": ')
    assert json.loads(pretty) == json.loads(compact)
    assert http.get(f"/api/handles/{handle}?pretty=false").text == compact


def test_jsonp_callback(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("jsonp")
    create(http, admin, handle, SIMPLE)
    compact = http.get(f"/api/handles/{handle}").text
    for name in ("cb", "jQuery3_1.done", "$x"):
        response = http.get(f"/api/handles/{handle}", params={"callback": name})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/javascript"
        assert response.text == f"{name}({compact});"


@pytest.mark.parametrize(
    "name",
    ["alert(1)", "a;b", "<script>", "1abc", "", "a b", "x" * 101, "a\u2028b", "f=1"],
    ids=["call", "semicolon", "tag", "digit", "empty", "space", "long", "linesep", "equals"],
)
def test_hostile_callback(http: httpx.Client, admin: httpx.BasicAuth, name: str) -> None:
    handle = fresh("hostile")
    create(http, admin, handle, SIMPLE)
    response = http.get(f"/api/handles/{handle}", params={"callback": name})
    expect(response, 400, 4, handle)  # JSON, never script wrapped in the hostile name


def test_sources_and_auth_true(
    node: NodeProcess, http: httpx.Client, admin: httpx.BasicAuth
) -> None:
    handle = fresh("source")
    create(http, admin, handle, SIMPLE)
    first = http.get(f"/api/handles/{handle}")
    assert first.headers["x-idis-source"] == "store"
    later = {http.get(f"/api/handles/{handle}").headers["x-idis-source"] for _ in range(10)}
    if node.workers == 1:
        assert later == {"memory"}
    else:
        assert later <= {"memory", "redis"}
    for _ in range(3):
        fresh_read = http.get(f"/api/handles/{handle}?auth=true")
        assert fresh_read.headers["x-idis-source"] == "store"
        assert fresh_read.json() == first.json()
    if node.env.get("IDIS_REDIS_URL"):
        shared = redis.Redis.from_url(node.env["IDIS_REDIS_URL"])
        try:
            assert shared.keys(f"*{node.env['IDIS_NAME']}*"), "nothing cached in Redis"
        finally:
            shared.close()


def test_case_insensitive_and_echoed(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("CaSe")
    create(http, admin, handle, SIMPLE)
    for spelling in (handle, handle.lower(), handle.upper()):
        expect(http.get(f"/api/handles/{spelling}"), 200, 1, spelling)
    response = http.put(f"/api/handles/{handle.upper()}?overwrite=false", json=SIMPLE, auth=admin)
    expect(response, 409, 101, handle.upper())


# --- writes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"values": [{"index": 1, "type": "URL", "data": "https://example.com/v"}]},
        [{"index": 1, "type": "URL", "data": "https://example.com/v"}],
        {"index": 1, "type": "URL", "data": "https://example.com/v"},
    ],
    ids=["values-object", "bare-array", "single-value"],
)
def test_put_body_forms(http: httpx.Client, admin: httpx.BasicAuth, body: Any) -> None:
    handle = fresh("form")
    response = http.put(f"/api/handles/{handle}", json=body, auth=admin)
    assert response.status_code == 201
    assert response.text == f'{{"responseCode":1,"handle":"{handle}"}}'
    assert url_value(values_of(http, handle)) == "https://example.com/v"
    again = http.put(f"/api/handles/{handle}", json=body, auth=admin)
    expect(again, 200, 1, handle)


def test_put_replaces_the_record(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("replace")
    create(http, admin, handle, [*SIMPLE, {"index": 2, "type": "EMAIL", "data": "a@b.c"}])
    body = [{"index": 1, "type": "URL", "data": "https://example.com/new"}]
    expect(http.put(f"/api/handles/{handle}", json=body, auth=admin), 200, 1, handle)
    values = values_of(http, handle)
    assert url_value(values) == "https://example.com/new"
    assert 2 not in values


def test_put_overwrite_false(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("nooverwrite")
    response = http.put(f"/api/handles/{handle}?overwrite=false", json=SIMPLE, auth=admin)
    expect(response, 201, 1, handle)
    before = stored(http, handle)
    other = [{"index": 1, "type": "URL", "data": "https://example.com/other"}]
    response = http.put(f"/api/handles/{handle}?overwrite=false", json=other, auth=admin)
    expect(response, 409, 101, handle)
    assert stored(http, handle) == before


def test_put_index_partial_update(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("partial")
    create(http, admin, handle, [*SIMPLE, {"index": 2, "type": "EMAIL", "data": "a@b.c"}])

    def put(query: str, body: Any) -> httpx.Response:
        return http.put(f"/api/handles/{handle}?{query}", json=body, auth=admin)

    new_url = {"index": 1, "type": "URL", "data": "https://example.com/changed"}
    expect(put("index=1", [new_url]), 200, 1, handle)
    values = values_of(http, handle)
    assert url_value(values) == "https://example.com/changed"
    assert values[2]["data"]["value"] == "a@b.c"

    added = {"index": 3, "type": "DESC", "data": "added"}
    expect(put("index=3", added), 200, 1, handle)
    both = [{**new_url, "data": "https://example.com/both"}, {**added, "data": "both"}]
    expect(put("index=1&index=3", both), 200, 1, handle)
    values = values_of(http, handle)
    assert (url_value(values), values[3]["data"]["value"]) == ("https://example.com/both", "both")

    before = stored(http, handle)
    expect(put("index=2&overwrite=false", {"index": 2, "type": "EMAIL", "data": "x"}), 409, 201)
    assert stored(http, handle) == before
    expect(put("index=4&overwrite=false", {"index": 4, "type": "NEW", "data": "n"}), 200, 1)
    assert values_of(http, handle)[4]["data"]["value"] == "n"


@pytest.mark.parametrize(
    ("query", "indexes"),
    [("index=2", [1]), ("index=1&index=2", [1]), ("index=1", [1, 2])],
    ids=["other", "missing-from-body", "missing-from-query"],
)
def test_put_mismatched_index(
    http: httpx.Client, admin: httpx.BasicAuth, query: str, indexes: list[int]
) -> None:
    handle = fresh("mismatch")
    create(http, admin, handle, SIMPLE)
    before = stored(http, handle)
    body = [{"index": i, "type": f"T{i}", "data": "x"} for i in indexes]
    response = http.put(f"/api/handles/{handle}?{query}", json=body, auth=admin)
    expect(response, 400, 4, handle)
    assert stored(http, handle) == before


def test_mint_new_suffix(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    total = count(http, admin)
    response = http.put(f"/api/handles/{PREFIX}/?mintNewSuffix=true", json=SIMPLE, auth=admin)
    body = expect(response, 201, 1)
    prefix, _, suffix = body["handle"].partition("/")
    assert prefix == PREFIX
    uuid.UUID(suffix)
    assert url_value(values_of(http, body["handle"])) == SIMPLE[0]["data"]
    second = http.put(f"/api/handles/{PREFIX}/?mintNewSuffix=true", json=SIMPLE, auth=admin)
    assert expect(second, 201, 1)["handle"] != body["handle"]
    response = http.put(f"/api/handles/{PREFIX}/X?mintNewSuffix=true", json=SIMPLE, auth=admin)
    expect(response, 400, 102)
    assert count(http, admin) == total + 2


def test_delete_handle(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("delete")
    create(http, admin, handle, SIMPLE)
    response = http.delete(f"/api/handles/{handle}", auth=admin)
    assert response.status_code == 200
    assert response.text == f'{{"responseCode":1,"handle":"{handle}"}}'
    expect(http.get(f"/api/handles/{handle}"), 404, 100, handle)
    expect(http.delete(f"/api/handles/{handle}", auth=admin), 404, 100, handle)


def test_delete_values_by_index(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("delindex")
    create(
        http,
        admin,
        handle,
        [*SIMPLE, {"index": 2, "type": "A", "data": "a"}, {"index": 3, "type": "B", "data": "b"}],
    )
    expect(http.delete(f"/api/handles/{handle}?index=2", auth=admin), 200, 1, handle)
    values = values_of(http, handle)
    assert 2 not in values
    assert {1, 3} <= set(values)

    before = stored(http, handle)
    expect(http.delete(f"/api/handles/{handle}?index=99", auth=admin), 400, 200, handle)
    # One missing index refuses the whole request: index 3 stays.
    expect(http.delete(f"/api/handles/{handle}?index=3&index=99", auth=admin), 400, 200, handle)
    expect(http.delete(f"/api/handles/{handle}?index=abc", auth=admin), 400, 4, handle)
    assert stored(http, handle) == before


# --- listing ---------------------------------------------------------------------------------


def test_listing(http: httpx.Client, admin: httpx.BasicAuth, stranger: httpx.BasicAuth) -> None:
    tag = uuid.uuid4().hex[:8]
    mine = {f"{PREFIX}/list-{tag}-{n}" for n in range(5)}
    for handle in mine:
        create(http, admin, handle, SIMPLE)

    only_count = http.get("/api/handles", params={"prefix": PREFIX, "pageSize": 0}, auth=admin)
    body = expect(only_count, 200, 1)
    assert body["prefix"] == PREFIX
    assert body["handles"] == []
    assert isinstance(body["totalCount"], str)
    total = int(body["totalCount"])
    assert total >= len(mine) + 1  # and the administrator's own handle

    seen: list[str] = []
    for page in range(total // 7 + 1):
        response = http.get(
            "/api/handles", params={"prefix": PREFIX, "page": page, "pageSize": 7}, auth=admin
        )
        body = expect(response, 200, 1)
        assert int(body["totalCount"]) == total
        assert len(body["handles"]) <= 7
        seen += body["handles"]
    assert len(seen) == total == len(set(seen))
    assert mine <= set(seen)
    assert f"{PREFIX}/ADMIN" in seen

    listing = f"/api/handles?prefix={PREFIX}"
    expect(http.get(listing), 401, 402)
    expect(http.get(listing, auth=stranger), 403, 401)
    expect(http.get("/api/handles", auth=admin), 400, 4)
    for bad in ("page=-1", "page=abc", "pageSize=abc", "pageSize=-1", "pageSize=10001"):
        expect(http.get(f"{listing}&{bad}", auth=admin), 400, 4)


def test_prefixes(http: httpx.Client) -> None:
    response = http.get("/api/prefixes")
    assert response.status_code == 200
    assert response.json() == {"responseCode": 1, "prefixes": [PREFIX]}


# --- the web proxy ---------------------------------------------------------------------------


def test_proxy(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    target = fresh("target")
    create(
        http,
        admin,
        target,
        [
            {"index": 1, "type": "URL", "data": "https://example.com/t"},
            {"index": 2, "type": "URL.mirror", "data": "https://mirror.example.com/t"},
            {"index": 3, "type": "EMAIL", "data": "ops@example.com"},
        ],
    )
    alias = fresh("alias")
    create(http, admin, alias, [{"index": 1, "type": "HS_ALIAS", "data": target}])
    alias2 = fresh("alias2")
    create(http, admin, alias2, [{"index": 1, "type": "HS_ALIAS", "data": alias}])

    def location(path: str) -> str:
        # http.client, not httpx: httpx cannot even represent a mailto: Location.
        host, port = str(http.base_url.host), http.base_url.port
        conn = HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 302, response.read()
            return str(response.getheader("location"))
        finally:
            conn.close()

    assert location(f"/{target}") == "https://example.com/t"
    assert location(f"/{alias}") == "https://example.com/t"
    assert location(f"/{alias2}") == "https://example.com/t"
    assert location(f"/{target}?urlappend=/page%3Fq%3D1") == "https://example.com/t/page?q=1"
    assert location(f"/{target}?type=URL.mirror") == "https://mirror.example.com/t"
    assert location(f"/{target}?index=3") == "mailto:ops@example.com"

    shown = http.get(f"/{target}?noredirect")
    assert shown.status_code == 200
    body = shown.json()
    assert body["responseCode"] == 1
    assert body["handle"] == target
    assert [v["index"] for v in body["values"]][:3] == [1, 2, 3]

    email = fresh("email")
    create(http, admin, email, [{"index": 1, "type": "EMAIL", "data": "x@example.com"}])
    assert location(f"/{email}") == "mailto:x@example.com"

    loc = fresh("loc")
    xml = (
        '<locations><location href="https://a.example.com/" weight="0.2"/>'
        '<location href="https://b.example.com/" weight="0.8"/></locations>'
    )
    create(
        http,
        admin,
        loc,
        [
            {"index": 1, "type": "URL", "data": "https://fallback.example.com/"},
            {"index": 2, "type": "10320/LOC", "data": xml},
        ],
    )
    assert location(f"/{loc}") == "https://b.example.com/"

    nowhere = fresh("nowhere")
    create(http, admin, nowhere, [{"index": 1, "type": "DESC", "data": "no location"}])
    expect(http.get(f"/{nowhere}"), 200, 1, nowhere)

    expect(http.get(f"/{fresh('missing')}"), 404, 100)
    dangling = fresh("dangling")
    create(http, admin, dangling, [{"index": 1, "type": "HS_ALIAS", "data": f"{PREFIX}/gone"}])
    expect(http.get(f"/{dangling}"), 404, 100)
    expect(http.get("/no-slash-here"), 400, 102)
    expect(http.get("/99.9/x"), 400, 301)


def test_proxy_alias_loop_is_no_crash(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    a, b = fresh("loopa"), fresh("loopb")
    create(http, admin, a, [{"index": 1, "type": "HS_ALIAS", "data": b}])
    create(http, admin, b, [{"index": 1, "type": "HS_ALIAS", "data": a}])
    response = http.get(f"/{a}")
    assert response.status_code < 500
    assert "location" not in response.headers


# --- who may do what -------------------------------------------------------------------------


AUTHS = ("none", "admin", "wrong", "stranger", "bearer", "garbled")


@pytest.mark.parametrize(
    ("method", "target", "auth", "status", "code"),
    [
        ("PUT", "new", "none", 401, 402),
        ("PUT", "existing", "none", 401, 402),
        ("DELETE", "existing", "none", 401, 402),
        ("PUT", "new", "wrong", 403, 403),
        ("PUT", "existing", "wrong", 403, 403),
        ("DELETE", "existing", "wrong", 403, 403),
        ("GET", "existing", "wrong", 403, 403),
        ("PUT", "existing", "bearer", 403, 403),
        ("PUT", "existing", "garbled", 403, 403),
        ("GET", "existing", "garbled", 403, 403),
        ("PUT", "new", "stranger", 403, 401),
        ("PUT", "existing", "stranger", 403, 401),
        ("PUT?index=2", "existing", "stranger", 403, 401),
        ("DELETE", "existing", "stranger", 403, 401),
        ("DELETE?index=1", "existing", "stranger", 403, 401),
        ("GET", "missing", "none", 404, 100),
        ("GET", "missing", "admin", 404, 100),
        ("DELETE", "missing", "admin", 404, 100),
        ("GET", "invalid", "none", 400, 102),
        ("PUT", "invalid", "admin", 400, 102),
        ("DELETE", "invalid", "admin", 400, 102),
        ("GET", "elsewhere", "none", 400, 301),
        ("GET", "sibling", "none", 400, 301),
        ("PUT", "elsewhere", "admin", 400, 301),
        ("DELETE", "elsewhere", "admin", 400, 301),
    ],
)
def test_status_table(
    node: NodeProcess,
    http: httpx.Client,
    admin: httpx.BasicAuth,
    stranger: httpx.BasicAuth,
    method: str,
    target: str,
    auth: str,
    status: int,
    code: int,
) -> None:
    existing = fresh("guarded")
    create(http, admin, existing, SIMPLE)
    handle = {
        "new": fresh("new"),
        "existing": existing,
        "missing": fresh("missing"),
        "invalid": "88.100.1-no-slash",
        "elsewhere": "99.9/x",
        "sibling": "88.100.2/x",
    }[target]
    credentials: dict[str, Any] = {
        "none": {},
        "admin": {"auth": admin},
        "wrong": {"auth": basic_auth(node.identity, node.secret + "x")},
        "stranger": {"auth": stranger},
        "bearer": {"headers": {"authorization": "Bearer abc"}},
        "garbled": {"headers": {"authorization": "Basic !!!not-base64"}},
    }[auth]
    verb, _, query = method.partition("?")
    url = f"/api/handles/{handle}" + (f"?{query}" if query else "")
    body = [{"index": int(query[6:]) if query else 1, "type": "URL", "data": "https://x/"}]
    before = stored(http, existing)
    if verb == "PUT":
        response = http.put(url, json=body, **credentials)
    else:
        response = http.request(verb, url, **credentials)
    expect(response, status, code, handle)
    if status == 401:
        assert response.headers["www-authenticate"].lower().startswith("basic")
    assert stored(http, existing) == before
    if target == "new":
        expect(http.get(f"/api/handles/{handle}"), 404, 100)


def test_stranger_reads_public_values_only(
    http: httpx.Client, admin: httpx.BasicAuth, stranger: httpx.BasicAuth
) -> None:
    handle = fresh("readable")
    create(
        http,
        admin,
        handle,
        [*SIMPLE, {"index": 2, "type": "P", "data": "p", "permissions": "1100"}],
    )
    body = expect(http.get(f"/api/handles/{handle}", auth=stranger), 200, 1, handle)
    assert [v["index"] for v in body["values"]] == [1, 100]
    body = expect(http.get(f"/api/handles/{handle}", auth=admin), 200, 1, handle)
    assert [v["index"] for v in body["values"]] == [1, 2, 100]


# --- batch -----------------------------------------------------------------------------------


def batch_items(tag: str, n: int, data: str = "u") -> list[dict]:
    return [
        {"handle": f"{PREFIX}/b{tag}-{i}", "values": [{"index": 1, "type": "URL", "data": data}]}
        for i in range(n)
    ]


def test_batch_limits_and_idempotence(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    total = count(http, admin)
    tag = uuid.uuid4().hex[:6]
    too_many = batch_items(tag + "x", 2001)
    response = http.post("/api/batch", json={"handles": too_many}, auth=admin)
    expect(response, 400, 4)
    assert count(http, admin) == total  # refused as a whole: nothing written

    items = batch_items(tag, 2000)
    response = http.post("/api/batch", json={"handles": items}, auth=admin)
    body = expect(response, 200, 1)
    assert [r["handle"] for r in body["results"]] == [i["handle"] for i in items]
    assert {(r["responseCode"], r["status"]) for r in body["results"]} == {(1, "created")}
    assert count(http, admin) == total + 2000
    for i in (0, 999, 1999):
        assert url_value(values_of(http, items[i]["handle"])) == "u"

    # A client retrying after a timeout gets success, not conflicts.
    again = expect(http.post("/api/batch", json={"handles": items}, auth=admin), 200, 1)
    assert {(r["responseCode"], r["status"]) for r in again["results"]} == {(1, "unchanged")}
    bare = expect(http.post("/api/batch", json=items[:10], auth=admin), 200, 1)
    assert {r["status"] for r in bare["results"]} == {"unchanged"}

    changed = batch_items(tag, 3, data="v")
    body = expect(http.post("/api/batch", json={"handles": changed}, auth=admin), 200, 1)
    assert {r["status"] for r in body["results"]} == {"updated"}
    assert url_value(values_of(http, changed[0]["handle"])) == "v"
    conflicting = batch_items(tag, 3, data="w")
    response = http.post("/api/batch?overwrite=false", json={"handles": conflicting}, auth=admin)
    body = expect(response, 200, 1)
    assert {(r["responseCode"], r["status"]) for r in body["results"]} == {(101, "error")}
    assert url_value(values_of(http, changed[0]["handle"])) == "v"
    assert count(http, admin) == total + 2000


def test_batch_mixed_items(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    existing = fresh("bexisting")
    create(http, admin, existing, SIMPLE)
    before = stored(http, existing)
    good = [fresh("bgood"), fresh("bgood")]
    url = [{"index": 1, "type": "URL", "data": "https://example.com/b"}]
    items: list[Any] = [
        {"handle": good[0], "values": url},
        {"handle": "no-slash", "values": url},
        {
            "handle": fresh("bformat"),
            "values": [{"index": 1, "type": "U", "data": {"format": "?"}}],
        },
        {"handle": "99.9/elsewhere", "values": url},
        {"handle": fresh("bempty"), "values": []},
        {"handle": good[0], "values": url},
        {"nohandle": True},
        42,
        {"handle": fresh("bhalf"), "values": [*url, {"index": 2, "type": "X", "data": 5}]},
        {"handle": existing, "values": [*url, {"index": 2, "type": "X", "data": None}]},
        {"handle": good[1], "values": url},
    ]
    expected = [
        (1, "created"),
        (102, "error"),
        (202, "error"),
        (301, "error"),
        (202, "error"),
        (101, "error"),
        (102, "error"),
        (102, "error"),
        (202, "error"),
        (202, "error"),
        (1, "created"),
    ]
    body = expect(http.post("/api/batch", json={"handles": items}, auth=admin), 200, 1)
    assert [(r["responseCode"], r["status"]) for r in body["results"]] == expected
    assert all(r["message"] for r in body["results"] if r["status"] == "error")
    for handle in good:
        assert url_value(values_of(http, handle)) == "https://example.com/b"
    for item in (items[2], items[4], items[8]):
        expect(http.get(f"/api/handles/{item['handle']}"), 404, 100)
    assert stored(http, existing) == before  # nothing half-written

    again = expect(http.post("/api/batch", json={"handles": items}, auth=admin), 200, 1)
    assert [(r["responseCode"], r["status"]) for r in again["results"]] == [
        (1, "unchanged") if e == (1, "created") else e for e in expected
    ]


def test_batch_refusals(
    http: httpx.Client, admin: httpx.BasicAuth, stranger: httpx.BasicAuth
) -> None:
    items = batch_items(uuid.uuid4().hex[:6], 3)
    expect(http.post("/api/batch", json={"handles": items}), 401, 402)
    body = expect(http.post("/api/batch", json={"handles": items}, auth=stranger), 200, 1)
    assert {(r["responseCode"], r["status"]) for r in body["results"]} == {(401, "error")}
    for item in items:
        expect(http.get(f"/api/handles/{item['handle']}"), 404, 100)
    expect(http.post("/api/batch", json={"something": 1}, auth=admin), 400, 202)
    expect(http.post("/api/batch", content=b"{not json", auth=admin), 400, 4)


# --- bad input -------------------------------------------------------------------------------


BAD_HANDLES = {
    "no-slash": "88.100.1X",
    "empty-segment": "88..1/x",
    "trailing-dot": "88.100.1./x",
    "empty-prefix": "/x",
    "empty-suffix": "88.100.1/",
    "control-char": "88.100.1/a%01b",
    "delete-char": "88.100.1/a%7Fb",
    "too-long": "88.100.1/" + "x" * 2100,
    "too-long-utf8": "88.100.1/" + "%C3%A4" * 1100,
    "invalid-utf8": "88.100.1/a%FFb",
    "overlong-utf8": "88.100.1/a%C0%AFb",
    "space-in-prefix": "88.100%20.1/x",
}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", list(BAD_HANDLES.values()), ids=list(BAD_HANDLES))
def test_malformed_handle(
    http: httpx.Client, admin: httpx.BasicAuth, method: str, path: str
) -> None:
    total = count(http, admin)
    response = http.request(method, f"/api/handles/{path}", json=SIMPLE, auth=admin)
    expect(response, 400, 102)
    if method == "GET" and not path.startswith("/"):  # httpx reads "//x" as a host
        expect(http.get(f"/{path}"), 400, 102)  # the web proxy too
    assert count(http, admin) == total


def _values(n: int) -> list[dict]:
    return [{"index": i + 1, "type": "T", "data": ""} for i in range(n)]


def admin_value(permissions: str | None) -> dict:
    value: dict[str, Any] = {"handle": f"0.NA/{PREFIX}", "index": 200}
    if permissions is not None:
        value["permissions"] = permissions
    return {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": value}}


GOOD = {"index": 1, "type": "URL", "data": "https://example.com/good"}

BAD_BODIES: dict[str, tuple[bytes, int]] = {
    "malformed-json": (b'{"values": [{"index": 1', 4),
    "invalid-utf8": (b'[{"index":1,"type":"URL","data":"\xff\xfe"}]', 4),
    "invalid-utf8-in-key": (b'[{"ind\xc3x":1,"type":"URL","data":"a"}]', 4),
    "lone-surrogate": (b'[{"index":1,"type":"URL","data":"\\ud800"}]', 4),
    "trailing-garbage": (b'[{"index":1,"type":"URL","data":"a"}] x', 4),
    "unknown-format": (
        json.dumps([{"index": 1, "type": "URL", "data": {"format": "weird", "value": "x"}}]),
        202,
    ),
    "admin-bad-permissions": (json.dumps([GOOD, admin_value("01111111111x")]), 202),
    "admin-short-permissions": (json.dumps([GOOD, admin_value("0111")]), 202),
    "admin-no-permissions": (json.dumps([GOOD, admin_value(None)]), 202),
    "admin-as-string": (json.dumps([GOOD, {**admin_value("0" * 12), "data": "admin"}]), 202),
    "index-not-number": (json.dumps([{**GOOD, "index": "abc"}]), 202),
    "index-float": (json.dumps([{**GOOD, "index": 1.5}]), 202),
    "index-zero": (json.dumps([{**GOOD, "index": 0}]), 202),
    "index-huge": (b'[{"index":99999999999999999999999,"type":"URL","data":"a"}]', 202),
    "duplicate-index": (json.dumps([GOOD, GOOD]), 202),
    "too-many-values": (json.dumps(_values(2049)), 202),
    "one-good-one-bad": (json.dumps([GOOD, {"index": 2, "type": "X", "data": 5}]), 202),
    "ttl-garbage": (json.dumps([{**GOOD, "ttl": "soon"}]), 202),
    "empty": (b"", 202),
    "number": (b"42", 202),
    "null": (b"null", 202),
    "string": (b'"https://example.com/"', 202),
    "true": (b"true", 202),
    "empty-list": (b"[]", 202),
    "values-null": (b'{"values": null}', 202),
    "values-number": (b'{"values": 7}', 202),
    "no-data": (json.dumps([{"index": 1, "type": "URL"}]), 202),
    "no-type": (json.dumps([{"index": 1, "data": "x"}]), 202),
    "deep-nesting": (b"[" * 5000 + b"]" * 5000, 4),
    "oversize": (
        json.dumps([{**GOOD, "data": "x" * (MAX_BODY + 1)}]),
        4,
    ),
}


@pytest.mark.parametrize("target", ["new", "existing"])
@pytest.mark.parametrize(("body", "code"), list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_malformed_body(
    http: httpx.Client,
    admin: httpx.BasicAuth,
    target: str,
    body: bytes | str,
    code: int,
) -> None:
    handle = fresh("body")
    if target == "existing":
        create(http, admin, handle, [{**GOOD, "data": "https://example.com/before"}])
    before = stored(http, handle)
    content = body.encode() if isinstance(body, str) else body
    headers = {"content-type": "application/json"}
    # A body over IDIS_MAX_BODY_BYTES is refused by the server before any route sees it.
    status, named = (413, None) if len(content) > MAX_BODY else (400, handle)
    for query in ("", "?index=1"):
        response = http.put(
            f"/api/handles/{handle}{query}", content=content, headers=headers, auth=admin
        )
        expect(response, status, code, named)
    assert stored(http, handle) == before


def test_query_index_not_a_number(http: httpx.Client, admin: httpx.BasicAuth) -> None:
    handle = fresh("qindex")
    create(http, admin, handle, SIMPLE)
    before = stored(http, handle)
    expect(http.put(f"/api/handles/{handle}?index=abc", json=SIMPLE, auth=admin), 400, 4, handle)
    expect(http.delete(f"/api/handles/{handle}?index=abc", auth=admin), 400, 4, handle)
    expect(http.get(f"/api/handles/{handle}?index=abc"), 400, 4, handle)
    new = fresh("qindexnew")
    expect(http.put(f"/api/handles/{new}?index=x1", json=SIMPLE, auth=admin), 400, 4, new)
    assert stored(http, handle) == before
    expect(http.get(f"/api/handles/{new}"), 404, 100)


def _raw_put(node: NodeProcess, handle: str, head_lines: list[str], body: bytes) -> bytes:
    host, port = node.env["IDIS_HTTP"].rsplit(":", 1)
    credentials = f"{node.identity.replace(':', '%3A', 1)}:{node.secret}".encode()
    request = (
        f"PUT /api/handles/{handle} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
        + "".join(line + "\r\n" for line in head_lines)
        + "\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
                if length and len(rest) >= int(length.group(1)):
                    break
    return answer


def test_huge_content_length_small_body(node: NodeProcess, http: httpx.Client) -> None:
    handle = fresh("clen")
    body = json.dumps(SIMPLE).encode()
    answer = _raw_put(node, handle, ["Content-Length: 99999999999"], body)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert json.loads(payload)["responseCode"] == 4
    expect(http.get(f"/api/handles/{handle}?auth=true"), 404, 100)


def test_chunked_oversize_body(node: NodeProcess, http: httpx.Client) -> None:
    # No Content-Length at all: the limit holds while the body streams in.
    handle = fresh("chunked")
    piece = b"x" * 65536
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(MAX_BODY // len(piece) + 2)
    )
    answer = _raw_put(node, handle, ["Transfer-Encoding: chunked"], chunks + b"0\r\n\r\n")
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(payload)["responseCode"] == 4
    expect(http.get(f"/api/handles/{handle}?auth=true"), 404, 100)


# --- read after write ------------------------------------------------------------------------

READS = 60


def test_read_after_write(node: NodeProcess, http: httpx.Client, admin: httpx.BasicAuth) -> None:
    """Every read after an acknowledged write sees it, whichever worker answers.

    Each read is a new connection, so with two workers both answer, and both have the old
    answer in memory (and in Redis) when the write lands.
    """
    handle = fresh("raw")
    path = f"/api/handles/{handle}"
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=node.base_url, limits=no_keepalive, timeout=10) as reader:
        sources: list[str] = []

        def read_all() -> list[httpx.Response]:
            responses = [reader.get(path) for _ in range(READS)]
            sources.extend(r.headers.get("x-idis-source", "") for r in responses)
            return responses

        for round_ in range(3):
            url = f"https://example.com/v{round_}"
            expected = 201 if round_ == 0 else 200
            response = http.put(path, json=[{"index": 1, "type": "URL", "data": url}], auth=admin)
            expect(response, expected, 1, handle)
            seen = [url_value({v["index"]: v for v in r.json()["values"]}) for r in read_all()]
            assert seen == [url] * READS

        expect(http.delete(path, auth=admin), 200, 1, handle)
        assert {(r.status_code, r.json()["responseCode"]) for r in read_all()} == {(404, 100)}

        # The not-found answers are cached too; creating the handle again must end them.
        create(http, admin, handle, SIMPLE)
        assert {r.status_code for r in read_all()} == {200}

        # A partial update and a value deletion are writes like any other.
        response = http.put(
            f"{path}?index=2", json={"index": 2, "type": "N", "data": "n"}, auth=admin
        )
        expect(response, 200, 1, handle)
        assert all(2 in {v["index"] for v in r.json()["values"]} for r in read_all())
        expect(http.delete(f"{path}?index=2", auth=admin), 200, 1, handle)
        assert all(2 not in {v["index"] for v in r.json()["values"]} for r in read_all())

    if node.workers > 1:
        # A worker found in Redis what another had put there: both workers did answer.
        assert "redis" in sources, sources


# --- a Redis outage --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_redis_node(node_factory, pg_factory) -> Iterator[NodeProcess]:
    """Two workers configured with a Redis where nothing listens."""
    started = node_factory(
        database_url=pg_factory(),
        redis_url=f"redis://127.0.0.1:{free_ports(1)[0]}/0",
        workers=2,
    )
    yield started
    started.stop()


def test_redis_outage_is_only_less_cache(dead_redis_node: NodeProcess) -> None:
    node = dead_redis_node
    handle = fresh("noredis")
    path = f"/api/handles/{handle}"
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with (
        node.client() as http,
        httpx.Client(base_url=node.base_url, limits=no_keepalive, timeout=10) as reader,
    ):
        started = time.monotonic()
        create(http, node.auth, handle, SIMPLE)
        for _ in range(20):
            expect(reader.get(path), 200, 1, handle)
        changed = [{"index": 1, "type": "URL", "data": "https://example.com/changed"}]
        expect(http.put(path, json=changed, auth=node.auth), 200, 1, handle)
        for _ in range(20):
            assert url_value(values_of(reader, handle)) == "https://example.com/changed"
        expect(http.get(f"{path}?auth=true"), 200, 1, handle)
        expect(http.delete(path, auth=node.auth), 200, 1, handle)
        for _ in range(20):
            expect(reader.get(path), 404, 100, handle)
        # A dead Redis is skipped, not waited for on every request.
        assert time.monotonic() - started < 10
    assert "Redis cache unavailable" in node.log()
    assert "Traceback" not in node.log()
