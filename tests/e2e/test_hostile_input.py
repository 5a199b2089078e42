"""Bad input against a real node on PostgreSQL: every bad item gets its own Handle code, good
items beside it are written, redirects go only where the stored value says, and numbers in
query strings are bounded.  Nothing answers 500 (the node's log must hold no traceback)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from typing import Any

import httpx
import pytest
from nodeproc import PREFIX, NodeProcess

from resolver.values import MAX_DATA_DEPTH, MAX_SECRET_KEYS


@pytest.fixture(scope="module")
def node(node_factory: Callable[..., NodeProcess], pg_factory: Callable[[], str]) -> NodeProcess:
    schemes = '["mailto", "ftp"]'
    return node_factory(database_url=pg_factory(), extra_env={"IDIS_REDIRECT_SCHEMES": schemes})


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    """The administrator's client; afterwards, the node's log must show no crash (no 500)."""
    with node.client(auth=node.auth) as client:
        yield client
    assert "Traceback" not in node.log(), node.log()


def fresh(name: str) -> str:
    return f"{PREFIX}/{name}-{uuid.uuid4().hex[:8]}"


def nested(levels: int) -> Any:
    inner: Any = "leaf"
    for _ in range(levels):
        inner = {"a": inner}
    return inner


def key(payload: Any) -> list[dict[str, Any]]:
    return [{"index": 300, "type": "HS_PUBKEY", "data": {"format": "key", "value": payload}}]


def url(data: str, type_: str = "URL", index: int = 1) -> dict[str, Any]:
    return {"index": index, "type": type_, "data": data}


def code(response: httpx.Response) -> tuple[int, int]:
    return response.status_code, response.json()["responseCode"]


BAD_VALUES: dict[str, list[dict[str, Any]]] = {
    "deep-254": key(nested(254)),
    "deep-300": key({"servers": [nested(300)]}),
    "just-too-deep": key(nested(MAX_DATA_DEPTH + 1)),
    "nul-type": [url("https://example.com/", "URL\x00")],
    "escape-type": [url("https://example.com/", "\x1b[2JURL")],
    "nul-data": [url("https://example.com/\x00")],
    "c1-data": [url("https://example.com/\x85")],
    "too-many-secrets": [
        {"index": 300 + n, "type": "HS_SECKEY", "data": f"s-{n}"}
        for n in range(MAX_SECRET_KEYS + 1)
    ],
}


def test_a_batch_with_bad_items_writes_the_good_ones(http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    good = [
        {"handle": f"{PREFIX}/g{tag}-{n}", "values": [url(f"https://example.com/{n}")]}
        for n in range(999)
    ]
    bad = [{"handle": fresh(name), "values": values} for name, values in BAD_VALUES.items()]
    items = good[:500] + bad + good[500:]
    body = http.post("/api/batch", json={"handles": items})
    assert body.status_code == 200, body.text
    results = {r["handle"]: r for r in body.json()["results"]}
    assert len(results) == len(items)
    for item in bad:
        result = results[item["handle"]]
        assert (result["responseCode"], result["status"]) == (202, "error"), result
        assert result["message"]
        assert http.get(f"/api/handles/{item['handle']}").status_code == 404
    assert {
        (results[i["handle"]]["responseCode"], results[i["handle"]]["status"]) for i in good
    } == {(1, "created")}
    for n in (0, 500, 998):
        answer = http.get(f"/api/handles/{good[n]['handle']}").json()
        assert answer["values"][0]["data"]["value"] == f"https://example.com/{n}"
    # A client retrying the whole batch no longer fails forever.
    again = http.post("/api/batch", json={"handles": items}).json()["results"]
    assert {r["status"] for r in again if r["responseCode"] == 1} == {"unchanged"}
    assert sum(r["responseCode"] == 1 for r in again) == len(good)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_put_is_refused_with_a_handle_code(http: httpx.Client, name: str) -> None:
    handle = fresh(name)
    response = http.put(f"/api/handles/{handle}", json=BAD_VALUES[name])
    assert code(response) == (400, 202), response.text
    assert http.get(f"/api/handles/{handle}").status_code == 404


def test_as_deep_as_allowed_is_written_and_answered(http: httpx.Client) -> None:
    handle = fresh("deep-ok")
    payload = nested(MAX_DATA_DEPTH - 1)
    assert http.put(f"/api/handles/{handle}", json=key(payload)).status_code == 201
    answer = http.get(f"/api/handles/{handle}", params={"index": "300"}).json()
    assert answer["values"][0]["data"]["value"] == payload


# --- the web proxy ---------------------------------------------------------------------------


def location(node: NodeProcess, path: str) -> tuple[int, str | None]:
    """Status and Location of ``GET path`` (http.client: httpx cannot hold every Location)."""
    conn = HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("location")
    finally:
        conn.close()


def test_urlappend_cannot_change_the_host(node: NodeProcess, http: httpx.Client) -> None:
    bare = fresh("bare")
    assert http.put(f"/api/handles/{bare}", json=[url("https://example.com")]).status_code == 201
    with_path = fresh("path")
    assert (
        http.put(f"/api/handles/{with_path}", json=[url("https://example.com/p")]).status_code
        == 201
    )
    for tail, expected in (
        ("%40evil.example", "https://example.com/@evil.example"),
        (".evil.example", "https://example.com/.evil.example"),
        ("%3A443%40evil.example", "https://example.com/:443@evil.example"),
        ("/page%3Fq%3D1", "https://example.com/page?q=1"),
        ("%3Fq%3D1", "https://example.com?q=1"),
    ):
        status, where = location(node, f"/{bare}?urlappend={tail}")
        assert (status, where) == (302, expected), tail
        assert httpx.URL(where).host == "example.com"
    status, where = location(node, f"/{with_path}?urlappend=%40evil.example")
    assert (status, where) == (302, "https://example.com/p@evil.example")
    for tail in ("%0d%0aSet-Cookie:%20x=1", "%20x", "%09"):
        status, _ = location(node, f"/{with_path}?urlappend={tail}")
        assert status == 400, tail


def test_redirects_go_only_to_allowed_schemes(node: NodeProcess, http: httpx.Client) -> None:
    cases = {
        "javascript:alert(document.cookie)": None,
        "JavaScript:alert(1)": None,
        "java\tscript:alert(1)": None,
        " javascript:alert(1)": None,
        "data:text/html,<script>alert(1)</script>": None,
        "vbscript:msgbox(1)": None,
        "//evil.example/x": None,
        "/relative/path": None,
        "https:evil.example": None,
        "https:///no-host": None,
        "gopher://example.com/": None,
        "ftp://files.example.com/a": "ftp://files.example.com/a",  # configured
        "HTTPS://example.com/up": "HTTPS://example.com/up",
    }
    for stored, expected in cases.items():
        handle = fresh("scheme")
        assert http.put(f"/api/handles/{handle}", json=[url(stored)]).status_code == 201, stored
        status, where = location(node, f"/{handle}")
        if expected is None:
            # No location: the values are shown, as for a handle without a URL.
            assert (status, where) == (200, None), stored
        else:
            assert (status, where) == (302, expected), stored
    # An unsafe URL is passed over for the next candidate.
    handle = fresh("fallback")
    values = [url("javascript:alert(1)"), url("https://example.com/safe", "URL.mirror", 2)]
    assert http.put(f"/api/handles/{handle}", json=values).status_code == 201
    assert location(node, f"/{handle}") == (302, "https://example.com/safe")
    loc = fresh("loc")
    xml = '<locations><location href="javascript:alert(1)" weight="1"/></locations>'
    values = [url(xml, "10320/LOC"), url("https://example.com/loc", "URL", 2)]
    assert http.put(f"/api/handles/{loc}", json=values).status_code == 201
    assert location(node, f"/{loc}") == (302, "https://example.com/loc")


# --- numbers in query strings ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"/api/handles?prefix={PREFIX}&page={10**30}",
        f"/api/handles?prefix={PREFIX}&page=-1",
        f"/api/handles?prefix={PREFIX}&pageSize={10**30}",
        f"/api/handles?prefix={PREFIX}&page={'9' * 5000}",
        f"/api/handles/{PREFIX}/x?index={10**30}",
        f"/{PREFIX}/x?index={2**32}",
        f"/api/prefix-applications?limit={10**30}",
    ],
)
def test_numbers_out_of_range_are_400(http: httpx.Client, path: str) -> None:
    http.put(f"/api/handles/{PREFIX}/x", json=[url("https://example.com/x")])
    response = http.get(path)
    assert code(response) == (400, 4), response.text
