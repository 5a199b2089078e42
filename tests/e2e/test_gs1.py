"""The GS1-Conformant resolver of a real ``idis serve`` (two workers, PostgreSQL and Redis):
every conformance rule the resolver claims, and one record read through REST, the web proxy
and GS1, updated everywhere after a write.

GS1 links are values of ``88.100.1/{Digital Link path}`` (``IDIS_GS1__PREFIX=88.100.1``)
written through the REST API, the batch endpoint and ``idis import`` like any other record.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from gs1 import compress_gs1_digital_link
from nodeproc import PREFIX, NodeProcess, stop_checked

from nodes.processes import run_cli
from resolver.sites import site_data

GTIN = "09506000134352"  # GS1's own example: a valid check digit
BRAND = "https://brand.example"


def gs1_check(digits: str) -> str:
    """The mod-10 check digit, written out here so the test does not trust the code it tests."""
    odd = sum(int(d) for d in digits[::-1][0::2])
    even = sum(int(d) for d in digits[::-1][1::2])
    return str((10 - (3 * odd + even) % 10) % 10)


def new_gtin(company: str = "952") -> str:
    """A fresh GTIN-14: indicator 0, ``company``, random item digits, the check digit."""
    body = "0" + company + "".join(random.choices("0123456789", k=12 - len(company)))
    return body + gs1_check(body)


def link(term: str, href: str, index: int, **attrs: object) -> dict:
    data = json.dumps({"href": href, **attrs}) if attrs else href
    return {"index": index, "type": f"GS1.{term}", "data": data}


@pytest.fixture(scope="module")
def node(node_factory, pg_factory, redis_url) -> Iterator[NodeProcess]:
    started = node_factory(
        database_url=pg_factory(),
        redis_url=redis_url,
        workers=2,
        extra_env={"IDIS_GS1__PREFIX": PREFIX},
    )
    yield started
    stop_checked(started)


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with node.client(follow_redirects=False) as client:
        yield client


def put(http: httpx.Client, node: NodeProcess, path: str, values: list[dict]) -> None:
    response = http.put(f"/api/handles/{PREFIX}{path}", json=values, auth=node.auth)
    assert response.status_code in (200, 201), response.text


def product(http: httpx.Client, node: NodeProcess, path: str | None = None) -> str:
    """A GTIN-level record: a default link, an English and a French product page, a leaflet."""
    path = path or f"/01/{new_gtin()}"
    put(
        http,
        node,
        path,
        [
            link("defaultLink", f"{BRAND}/default", 1, title="Product"),
            link("pip", f"{BRAND}/en", 2, title="Product page", hreflang="en", type="text/html"),
            link("pip", f"{BRAND}/fr", 3, title="Page produit", hreflang=["fr"]),
            link("epil", f"{BRAND}/leaflet?v=1", 4, title="Leaflet"),
        ],
    )
    return path


def location(response: httpx.Response, status: int = 307) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    return response.headers["location"]


def assert_cors(response: httpx.Response) -> None:
    assert response.headers["access-control-allow-origin"] == "*"
    methods = response.headers["access-control-allow-methods"]
    assert {"GET", "HEAD", "OPTIONS"} <= {m.strip() for m in methods.split(",")}


# --- the description file and syntax -------------------------------------------------------


def test_description_file(http: httpx.Client, node: NodeProcess) -> None:
    response = http.get("/.well-known/gs1resolver")
    assert response.status_code == 200
    body = response.json()
    assert body["resolverRoot"] == node.base_url
    assert body["supportedPrimaryKeys"] == ["all"]
    assert {"namespace": "https://gs1.org/voc/", "prefix": "gs1:"} in body["supportedLinkType"]
    assert_cors(response)


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/01/09506000134353", "check digit"),  # last digit off by one
        ("/01/0950600013435X", "digits"),
        ("/01/95060001343", "14 characters"),  # 11 digits: no GTIN
        ("/00/095060001343528901", "check digit"),
        ("/414/9506000134377", "check digit"),
        ("/8017/095060001343528901", "check digit"),
        (f"/01/{GTIN}/21/S1/10/L1", "in that order"),
        (f"/01/{GTIN}/254/X", "in that order"),
        ("/00/095060001343528907/10/L1", "no key qualifiers"),
        (f"/01/{GTIN}/10/{'L' * 21}", "1 to 20"),
        (f"/01/{GTIN}/10/a%20b", "characters"),  # a space is not in GS1's character set
        (f"/01/{GTIN}/10/%FF", "UTF-8"),
        (f"/01/{GTIN}/10", "pairs"),
        (f"/01/{GTIN}?17=2601", "6 characters"),
        (f"/01/{GTIN}?10=L1", "path"),
        (f"/01/{GTIN}?01={GTIN}", "path"),
    ],
)
def test_syntax_errors_are_400(http: httpx.Client, path: str, says: str) -> None:
    response = http.get(path)
    assert response.status_code == 400, response.text
    assert says in response.json()["message"], response.text
    assert_cors(response)


def test_valid_keys_of_every_kind_pass_syntax(http: httpx.Client) -> None:
    """Keys with right check digits and qualifiers are not 400 (404: nothing recorded)."""
    for path in (
        f"/01/{GTIN}/22/CPV1/10/L1/21/S1",
        f"/01/{GTIN}/235/TPX-1",
        f"/gtin/{GTIN}/lot/L1",  # the deprecated convenience names
        "/01/9506000134352",  # GTIN-13, padded to 14 digits
        "/00/095060001343528907",
        "/414/9506000134376/254/A1",
        "/417/9506000134376",
        "/8017/095060001343528907/8019/12",
        "/8003/09506000134352SER1",
        "/8004/9506000ABC-1",
        "/8006/095060001343520102/10/L1",
        "/8010/9506000A-1/8011/12",
        "/253/9506000134376ABC",
        "/255/9506000134376123",
        "/401/9506000ABC",
        "/402/95060001343530009",
    ):
        response = http.get(path + "?17=260101&3103=000125")
        assert response.status_code == 404, (path, response.text)


# --- choosing a link ---------------------------------------------------------------------


def test_default_link_redirect_with_links_and_cors(http: httpx.Client, node: NodeProcess) -> None:
    path = product(http, node)
    response = http.get(path)
    assert location(response) == f"{BRAND}/default"
    assert_cors(response)
    header = response.headers["link"]
    for rel, href in (
        ("gs1:defaultLink", "/default"),
        ("gs1:pip", "/en"),
        ("gs1:pip", "/fr"),
        ("gs1:epil", "/leaflet"),
    ):
        assert f"<{BRAND}{href}" in header and f'rel="{rel}"' in header
    assert 'title="Page produit"' in header and 'hreflang="fr"' in header


def test_link_type_redirects_or_404(http: httpx.Client, node: NodeProcess) -> None:
    path = product(http, node)
    for form in ("gs1:epil", "https://gs1.org/voc/epil", "https://ref.gs1.org/voc/epil"):
        response = http.get(path, params={"linkType": form})
        assert location(response) == f"{BRAND}/leaflet?v=1"
    missing = http.get(path, params={"linkType": "gs1:recipeInfo"})
    assert missing.status_code == 404
    assert "recipeInfo" in missing.json()["message"]


def test_language_negotiation_and_300(http: httpx.Client, node: NodeProcess) -> None:
    path = product(http, node)
    pip = {"linkType": "gs1:pip"}
    french = http.get(path, params=pip, headers={"Accept-Language": "fr-CA, en;q=0.5"})
    assert location(french) == f"{BRAND}/fr"
    english = http.get(path, params=pip, headers={"Accept-Language": "de, en-GB;q=0.8"})
    assert location(english) == f"{BRAND}/en"
    # Neither language asked for: two pages, no way to choose.
    undecided = http.get(path, params=pip, headers={"Accept-Language": "de"})
    assert undecided.status_code == 300, undecided.text
    assert undecided.headers["content-type"] == "application/linkset+json"
    pages = undecided.json()["linkset"][0]["https://gs1.org/voc/pip"]
    assert {p["href"] for p in pages} == {f"{BRAND}/en", f"{BRAND}/fr"}
    assert "Accept-Language" in undecided.headers["vary"]


def test_300_without_a_default(http: httpx.Client, node: NodeProcess) -> None:
    path = f"/01/{new_gtin()}"
    put(http, node, path, [link("pip", f"{BRAND}/a", 1), link("epil", f"{BRAND}/b", 2)])
    assert http.get(path).status_code == 300
    # One link alone is the default.
    put(http, node, path, [link("pip", f"{BRAND}/a", 1)])
    assert location(http.get(path)) == f"{BRAND}/a"


def test_exactly_one_default_link(http: httpx.Client, node: NodeProcess) -> None:
    path = f"/01/{new_gtin()}"
    put(
        http,
        node,
        path,
        [link("defaultLink", f"{BRAND}/second", 7), link("defaultLink", f"{BRAND}/first", 3)],
    )
    assert location(http.get(path)) == f"{BRAND}/first"
    context = http.get(path, params={"linkType": "linkset"}).json()["linkset"][0]
    assert context["https://gs1.org/voc/defaultLink"] == [
        {"href": f"{BRAND}/first", "title": "defaultLink"}
    ]


def test_linkset(http: httpx.Client, node: NodeProcess) -> None:
    path = product(http, node)
    asked = [
        http.get(path, headers={"Accept": "application/linkset+json"}),
        http.get(path, params={"linkType": "linkset"}),
        http.get(path, params={"linkType": "all"}),
    ]
    for response in asked:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/linkset+json"
        assert "location" not in response.headers
        assert 'rel="http://www.w3.org/ns/json-ld#context"' in response.headers["link"]
        assert_cors(response)
        (context,) = response.json()["linkset"]
        assert context["anchor"] == node.base_url + path
        assert context["https://gs1.org/voc/pip"] == [
            {
                "href": f"{BRAND}/en",
                "title": "Product page",
                "hreflang": ["en"],
                "type": "text/html",
            },
            {"href": f"{BRAND}/fr", "title": "Page produit", "hreflang": ["fr"]},
        ]
        assert context["https://gs1.org/voc/defaultLink"][0]["href"] == f"{BRAND}/default"


def test_query_string_passed_on(http: httpx.Client, node: NodeProcess) -> None:
    path = product(http, node)
    response = http.get(f"{path}?17=260101&utm=qr&linkType=gs1:epil")
    assert location(response) == f"{BRAND}/leaflet?v=1&17=260101&utm=qr"
    assert location(http.get(f"{path}?utm=a%20b")) == f"{BRAND}/default?utm=a%20b"


def test_head_and_options(http: httpx.Client, node: NodeProcess) -> None:
    path = product(http, node)
    head = http.head(path)
    assert location(head) == f"{BRAND}/default"
    assert head.content == b""
    options = http.options(path)
    assert options.status_code == 204
    assert_cors(options)
    assert http.options("/.well-known/gs1resolver").status_code == 204
    refused = http.post(path)
    assert refused.status_code == 405 and "OPTIONS" in refused.headers["allow"]


# --- qualifiers, delegation, compression ---------------------------------------------------


def test_qualifiers_walk_up_and_writes_show(http: httpx.Client, node: NodeProcess) -> None:
    gtin_path = product(http, node)
    serial = f"{gtin_path}/10/LOT-1/21/S1"
    # No lot or serial record: the GTIN's answer (many times: both workers cache it).
    for _ in range(6):
        assert location(http.get(serial)) == f"{BRAND}/default"
    put(http, node, f"{gtin_path}/10/LOT-1", [link("defaultLink", f"{BRAND}/lot", 1)])
    for _ in range(6):
        assert location(http.get(serial)) == f"{BRAND}/lot"
    put(http, node, serial, [link("defaultLink", f"{BRAND}/serial", 1)])
    for _ in range(6):
        assert location(http.get(serial)) == f"{BRAND}/serial"
    assert location(http.get(f"{gtin_path}/10/LOT-2")) == f"{BRAND}/default"
    # A lot record answers for its level: its linkset names it.
    anchor = http.get(f"{gtin_path}/10/LOT-1/21/S9", params={"linkType": "linkset"})
    assert anchor.json()["linkset"][0]["anchor"] == f"{node.base_url}{gtin_path}/10/LOT-1"


def test_handled_by_a_delegated_company_prefix(http: httpx.Client, node: NodeProcess) -> None:
    company = str(random.randint(9530000, 9539999))
    other = "https://resolver.other.example/gs1"
    gtin = new_gtin(company)
    assert http.get(f"/01/{gtin}").status_code == 404
    put(http, node, f"/gcp/{company}", [link("handledBy", other, 1)])
    for _ in range(4):
        response = http.get(f"/01/{gtin}/10/L1?17=260101")
        assert location(response) == f"{other}/01/{gtin}/10/L1?17=260101"
        assert (
            f'<{other}/01/{gtin}/10/L1?17=260101>; rel="gs1:handledBy"' in response.headers["link"]
        )
    # A key of the company with links of its own is answered here.
    put(http, node, f"/01/{gtin}", [link("defaultLink", f"{BRAND}/own", 1)])
    assert location(http.get(f"/01/{gtin}/10/L1")) == f"{BRAND}/own"


def test_compressed_uri(http: httpx.Client, node: NodeProcess) -> None:
    gtin = new_gtin()
    product(http, node, f"/01/{gtin}")
    full = f"{node.base_url}/01/{gtin}/10/LOT9"
    compressed = compress_gs1_digital_link(full)
    assert compressed.startswith(node.base_url + "/") and "/01/" not in compressed
    short = compressed[len(node.base_url) :]
    response = http.get(short + "?utm=x")
    assert location(response) == f"{BRAND}/default?utm=x"  # not to the uncompressed URI
    assert f'<{full}>; rel="owl:sameAs"' in response.headers["link"]
    linkset = http.get(short, params={"linkType": "linkset"}).json()
    assert linkset["linkset"][0]["anchor"] == f"{node.base_url}/01/{gtin}"
    # What does not decompress is no GS1 request: the API answers it as before.
    api = http.get("/notcompressedatall")
    assert "responseCode" in api.json() and "status" not in api.json(), api.text
    assert http.options("/notcompressedatall").status_code != 204
    assert http.options(short).status_code == 204
    assert http.get("/healthz").status_code == 200


# --- one registry, every door ------------------------------------------------------------


def doors(http: httpx.Client, handle: str, path: str) -> tuple[str, str, str]:
    """What REST, the web proxy and GS1 say the record points at."""
    values = http.get(f"/api/handles/{handle}").json()["values"]
    url = next(v["data"]["value"] for v in values if v["type"] == "URL")
    proxy = location(http.get(f"/{quote(handle)}"), 302)
    return url, proxy, location(http.get(path))


def test_one_record_every_door(http: httpx.Client, node: NodeProcess) -> None:
    path = f"/01/{new_gtin()}"
    handle = PREFIX + path
    for version in ("v1", "v2", "v3"):
        target = f"{BRAND}/{version}"
        put(
            http,
            node,
            path,
            [{"index": 1, "type": "URL", "data": target}, link("defaultLink", target, 2)],
        )
        # Two workers, each with its caches: every read after the write sees it.
        for _ in range(6):
            assert doors(http, handle, path) == (target, target, target)


def test_batch_and_import_write_links(http: httpx.Client, node: NodeProcess, tmp_path) -> None:
    batched, imported = f"/01/{new_gtin()}", f"/01/{new_gtin()}"
    items = [{"handle": PREFIX + batched, "values": [link("pip", f"{BRAND}/batch", 1)]}]
    response = http.post("/api/batch", json={"handles": items}, auth=node.auth)
    assert response.status_code == 200, response.text
    assert location(http.get(batched)) == f"{BRAND}/batch"

    lines = tmp_path / "gs1.jsonl"
    record = {"handle": PREFIX + imported, "values": [link("defaultLink", f"{BRAND}/imp", 1)]}
    lines.write_text(json.dumps(record) + "\n")
    run_cli(node.env, "import", str(lines))
    assert location(http.get(imported)) == f"{BRAND}/imp"


def test_handled_by_where_the_registry_refers(node_factory, pg_factory) -> None:
    """A top-level node whose GS1 prefix is delegated to another site sends GS1 requests
    there: the registry's referral, as a GS1 ``handledBy``."""
    top = node_factory(
        database_url=pg_factory(),
        prefix="88",
        extra_env={"IDIS_ROLE": "top-level", "IDIS_GS1__PREFIX": "88.100"},
    )
    elsewhere = "http://127.0.0.1:9"
    site = {"format": "site", "value": site_data([elsewhere], "the GS1 prefix's home")}
    values = [{"index": 1, "type": "HS_SITE", "data": site}]
    with top.client(follow_redirects=False) as http:
        written = http.put("/api/handles/0.NA/88.100", json=values, auth=top.auth)
        assert written.status_code in (200, 201), written.text
        gtin = new_gtin()
        response = http.get(f"/01/{gtin}/10/L1?17=260101")
        assert location(response) == f"{elsewhere}/01/{gtin}/10/L1?17=260101"
        assert 'rel="gs1:handledBy"' in response.headers["link"]
    stop_checked(top)
