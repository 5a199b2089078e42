"""A federation of real ``idis serve`` processes on loopback: delegation, referrals, recursive
resolution, failover, staleness bounds, coalescing, refused registrations, and the national
tier as one registry.

One federation is shared by the module (starting it is most of the cost): five top-level
nodes sharing one PostgreSQL database (the national tier's one registry; each follows its
change log to keep its caches current); the
secondary node 88.100 with two servers on one database (joined at Beijing; hosts the enterprise
prefix 88.100.1 and points the self-hosted 88.100.7 at the enterprise node); the secondary node
88.101 with one server (joined at Shanghai; hosts 88.101.5); the enterprise node 88.100.7; and a
recursive node on Redis whose roots are all five top-level nodes.

Tests work on identifiers of their own, so they do not depend on each other; the ones that stop
nodes come last (pytest runs a module's tests in file order) and each stops a different node.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import httpx
import pytest
from nodeproc import REPO, NodeProcess, basic_auth, start_node

from nodes.processes import free_ports, node_env, run_cli
from resolver.sites import site_data

T = TypeVar("T")

CITIES = ("Beijing", "Shanghai", "Guangzhou", "Wuhan", "Chongqing")
STALE_TTL = 3.0
"""The recursive node's stale bound (IDIS_FEDERATION__STALE_TTL), short so a test can pass it."""
VISIBLE_WITHIN = 1.0
"""A prefix allocated at one top-level node answers at the other four within this (seconds)."""
SETUP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0


# --- the federation ------------------------------------------------------------------------


@dataclass
class Federation:
    tops: dict[str, NodeProcess]
    secondary_a: NodeProcess
    """The first server of the secondary node 88.100 (the one that joined)."""
    secondary_b: NodeProcess
    """The second server of 88.100: same database, same data directory."""
    secondary_101: NodeProcess
    enterprise: NodeProcess
    recursive: NodeProcess
    secrets: dict[str, Path]
    workdir: Path
    nodes: list[NodeProcess] = field(default_factory=list)

    def top_urls(self) -> list[str]:
        return [self.tops[city].base_url for city in CITIES]

    def secret(self, name: str) -> str:
        return self.secrets[name].read_text(encoding="utf-8").strip()


def _parallel(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``tasks`` on threads (starting nodes is mostly waiting); their results, in order."""
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks]
    return [future.result() for future in futures]


def _put(url: str, values: Any, auth: httpx.BasicAuth, **params: Any) -> httpx.Response:
    return httpx.put(url, json=values, auth=auth, params=params, timeout=HTTP_TIMEOUT)


def _site_values(urls: Sequence[str], description: str) -> list[dict[str, Any]]:
    data = {"format": "site", "value": site_data(list(urls), description)}
    return [
        {"index": 1, "type": "HS_SITE", "data": data},
        {"index": 2, "type": "HS_SITE.PREFIX", "data": data},
    ]


def _wait_answer(url: str, code: int, timeout: float = SETUP_TIMEOUT) -> dict[str, Any]:
    """Poll ``url`` (with auth=true) until its responseCode is ``code``; the body."""
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(url, params={"auth": "true"}, timeout=HTTP_TIMEOUT).json()
        if body.get("responseCode") == code:
            return dict(body)
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still answers {body} after {timeout:g}s, not {code}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    pg_factory: Callable[[], str],
    redis_url: str,
) -> Iterator[Federation]:
    workdir = tmp_path_factory.mktemp("federation")
    secrets: dict[str, Path] = {}
    for name in ("88", "88.100", "88.101", "88.100.1", "88.101.5", "88.100.7", "federation"):
        path = workdir / f"secret-{name}"
        path.write_text(f"e2e-{uuid.uuid4().hex}\n", encoding="utf-8")
        secrets[name] = path
    started: list[NodeProcess] = []

    def start(name: str, **kwargs: Any) -> NodeProcess:
        node = start_node(workdir / name, **kwargs)
        started.append(node)
        return node

    try:
        ports = dict(zip(CITIES, free_ports(len(CITIES)), strict=True))
        urls = {city: f"http://127.0.0.1:{port}" for city, port in ports.items()}
        databases = {name: pg_factory() for name in ("national", "88.100", "88.101", "88.100.7")}
        federation_secret = secrets["federation"].read_text(encoding="utf-8").strip()

        def top(city: str) -> Callable[[], NodeProcess]:
            env = {
                "IDIS_ROLE": "top-level",
                "IDIS_NAME": city,
                "IDIS_HTTP": f"127.0.0.1:{ports[city]}",
                "IDIS_FEDERATION__SECRET": federation_secret,
            }
            return lambda: start(
                city,
                database_url=databases["national"],
                prefix="88",
                secret=secrets["88"].read_text(encoding="utf-8").strip(),
                init=city == CITIES[0],  # one registry: the first site homes 88 for all
                extra_env=env,
            )

        recursive_env = {
            "IDIS_ROLE": "recursive",
            "IDIS_FEDERATION__TOP_LEVEL": json.dumps([urls[c] for c in CITIES]),
            "IDIS_FEDERATION__STALE_TTL": str(STALE_TTL),
            # A recursive node homes no prefix: its /api/stats opens to the federation secret.
            "IDIS_FEDERATION__SECRET": federation_secret,
        }
        first_top = top(CITIES[0])()  # it migrates the shared database and homes 88
        *top_nodes, enterprise, recursive = _parallel(
            [
                *(top(city) for city in CITIES[1:]),
                lambda: start(
                    "enterprise",
                    database_url=databases["88.100.7"],
                    prefix="88.100.7",
                    secret=secrets["88.100.7"].read_text(encoding="utf-8").strip(),
                    extra_env={"IDIS_ROLE": "enterprise"},
                ),
                lambda: start(
                    "recursive", init=False, redis_url=redis_url, extra_env=recursive_env
                ),
            ]
        )
        tops = dict(zip(CITIES, [first_top, *top_nodes], strict=True))
        for city, node in tops.items():
            # A port lost to a race would leave the recursive node's roots pointing elsewhere.
            assert node.base_url == urls[city], f"{city} had to move to {node.base_url}"

        allocations = {"88.100": "Beijing", "88.101": "Shanghai"}

        def allocate(city: str, prefix: str) -> Callable[[], str]:
            args = ("prefix", "allocate", prefix, "--secret-file", str(secrets[prefix]))
            return lambda: run_cli(tops[city].env, *args)

        # Each prefix is allocated at one site; the other four read the same registry.
        _parallel([allocate(city, prefix) for prefix, city in allocations.items()])

        def secondary(
            name: str, prefix: str, top_city: str, **kwargs: Any
        ) -> Callable[[], NodeProcess]:
            env = {
                "IDIS_ROLE": "secondary",
                "IDIS_FEDERATION__TOP_LEVEL": json.dumps([urls[top_city]]),
                **kwargs.pop("extra_env", {}),
            }
            secret = secrets[prefix].read_text(encoding="utf-8").strip()
            return lambda: start(
                name, init=False, prefix=prefix, secret=secret, extra_env=env, **kwargs
            )

        secondary_a, secondary_101 = _parallel(
            [
                secondary("secondary-a", "88.100", "Beijing", database_url=databases["88.100"]),
                secondary("secondary-101", "88.101", "Shanghai", database_url=databases["88.101"]),
            ]
        )

        def join(node: NodeProcess, prefix: str, hosted: str) -> Callable[[], None]:
            def run() -> None:
                run_cli(
                    node.env, "federation", "join", prefix, "--secret-file", str(secrets[prefix])
                )
                run_cli(node.env, "prefix", "init", hosted, "--secret-file", str(secrets[hosted]))

            return run

        # The second server of 88.100 shares the first one's database and data directory
        # (and so its cache generations), as two hosts of one site would share a database.
        *_, secondary_b = _parallel(
            [
                join(secondary_a, "88.100", "88.100.1"),
                join(secondary_101, "88.101", "88.101.5"),
                secondary(
                    "secondary-b",
                    "88.100",
                    "Beijing",
                    database_url=databases["88.100"],
                    extra_env={"IDIS_DATA_DIR": str(secondary_a.data_dir)},
                ),
            ]
        )
        assert secondary_b is not None

        # 88.100's site has both servers; 88.101's has its one (as joining registered it).
        holder_100 = basic_auth("300:0.NA/88.100", secrets["88.100"].read_text().strip())
        site_100 = _site_values([secondary_a.base_url, secondary_b.base_url], "88.100")
        url = f"{tops['Beijing'].base_url}/api/handles/0.NA/88.100"
        assert _put(url, {"values": site_100}, holder_100, index=[1, 2]).status_code == 200

        # The self-hosted enterprise prefix: the secondary points 88.100.7 at its own node.
        response = _put(
            f"{secondary_a.base_url}/api/handles/0.NA/88.100.7",
            {"values": _site_values([enterprise.base_url], "enterprise 88.100.7")},
            basic_auth("300:88.100/ADMIN", secrets["88.100"].read_text().strip()),
        )
        assert response.status_code == 201, response.text

        # Every top-level node delegates both secondaries before any test runs.
        for city in CITIES:
            for prefix in ("88.100", "88.101"):
                _wait_answer(f"{tops[city].base_url}/api/handles/0.NA/{prefix}.1", 303)

        yield Federation(
            tops=tops,
            secondary_a=secondary_a,
            secondary_b=secondary_b,
            secondary_101=secondary_101,
            enterprise=enterprise,
            recursive=recursive,
            secrets=secrets,
            workdir=workdir,
            nodes=started,
        )
    finally:
        crashed = [
            f"idis node {n.base_url} exited early\n--- log\n{n.log()}"
            for n in started
            if not n.stopped and not n.alive()
        ]
        # Stopped together: stopping is mostly waiting.
        with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
            list(pool.map(NodeProcess.stop, started))
    if crashed:
        pytest.fail("\n".join(crashed), pytrace=False)


# --- helpers ---------------------------------------------------------------------------------


def unique(prefix: str, name: str) -> str:
    return f"{prefix}/{name}-{uuid.uuid4().hex[:8]}"


def register(
    node: NodeProcess, handle: str, url: str, auth: httpx.BasicAuth, ttl: int | None = None
) -> None:
    value: dict[str, Any] = {"index": 1, "type": "URL", "data": url}
    if ttl is not None:
        value["ttl"] = ttl
    response = _put(f"{node.base_url}/api/handles/{quote(handle)}", [value], auth)
    assert response.status_code in (200, 201), response.text


def admin(fed: Federation, prefix: str) -> httpx.BasicAuth:
    return basic_auth(f"300:{prefix}/ADMIN", fed.secret(prefix))


def get(node: NodeProcess, handle: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{node.base_url}/api/handles/{quote(handle)}", params=params, timeout=HTTP_TIMEOUT
    )


def url_of(response: httpx.Response) -> str | None:
    for value in response.json().get("values") or []:
        if value["type"] == "URL":
            return str(value["data"]["value"])
    return None


def site_urls(values: Sequence[dict[str, Any]], type_: str) -> list[str]:
    urls = []
    for value in values:
        if value["type"] != type_:
            continue
        for server in value["data"]["value"]["servers"]:
            for interface in server["interfaces"]:
                urls.append(f"http://{server['address']}:{interface['port']}")
    return urls


def hops(response: httpx.Response) -> list[str]:
    """The walk's steps from ``x-idis-source``: ``"URL HANDLE:CODE"`` or ``"URL unreachable"``."""
    return unquote(response.headers["x-idis-source"]).split(" -> ")


def stats(node: NodeProcess) -> dict[str, Any]:
    response = httpx.get(
        f"{node.base_url}/api/stats", auth=node.operator_auth, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- delegation and referrals --------------------------------------------------------------


def test_top_level_nodes_refer_to_the_secondary_sites(fed: Federation) -> None:
    site_100 = [fed.secondary_a.base_url, fed.secondary_b.base_url]
    for city, top in fed.tops.items():
        # A derived prefix of 88.100: a prefix referral (303) to who administers 88.100.x.
        response = get(top, "0.NA/88.100.1")
        assert response.status_code == 200, (city, response.text)
        body = response.json()
        assert body["responseCode"] == 303, (city, body)
        assert body["referral"] == "0.NA/88.100"
        assert site_urls(body["values"], "HS_SITE.PREFIX") == site_100, city

        # A handle under 88.100 itself: a service referral (302) to the site serving it.
        body = get(top, "88.100/ANY").json()
        assert body["responseCode"] == 302, (city, body)
        assert site_urls(body["values"], "HS_SITE") == site_100, city

        # The prefix record itself is answered, sites and all; its secret is not shown.
        body = get(top, "0.NA/88.101").json()
        assert body["responseCode"] == 1, (city, body)
        assert site_urls(body["values"], "HS_SITE") == [fed.secondary_101.base_url]
        assert not [v for v in body["values"] if v["type"] == "HS_SECKEY"]

        # An unallocated prefix under 88 is simply unknown here.
        response = get(top, "0.NA/88.999")
        assert (response.status_code, response.json()["responseCode"]) == (404, 100), city


def test_secondary_serves_hosted_and_refers_self_hosted_prefixes(fed: Federation) -> None:
    hosted = unique("88.100.1", "hosted")
    register(fed.secondary_a, hosted, "https://acme.example/hosted", admin(fed, "88.100.1"))
    for server in (fed.secondary_a, fed.secondary_b):
        response = get(server, hosted)
        assert response.status_code == 200, response.text
        assert url_of(response) == "https://acme.example/hosted"
        assert get(server, "0.NA/88.100.1").json()["responseCode"] == 1

        # 88.100.7 is self-hosted: its handles are referred (302) to the enterprise node ...
        body = get(server, "88.100.7/ANY").json()
        assert body["responseCode"] == 302, body
        assert body["referral"] == "0.NA/88.100.7"
        assert site_urls(body["values"], "HS_SITE") == [fed.enterprise.base_url]
        # ... and so are the prefixes derived from it (303).
        body = get(server, "0.NA/88.100.7.3").json()
        assert body["responseCode"] == 303, body
        assert site_urls(body["values"], "HS_SITE.PREFIX") == [fed.enterprise.base_url]

    self_hosted = unique("88.100.7", "self")
    register(fed.enterprise, self_hosted, "https://delta.example/self", admin(fed, "88.100.7"))
    response = get(fed.enterprise, self_hosted)
    assert url_of(response) == "https://delta.example/self"
    # The enterprise node is not the secondary: writing 88.100.1 there is refused.
    response = _put(
        f"{fed.enterprise.base_url}/api/handles/{quote(hosted)}",
        [{"index": 1, "type": "URL", "data": "https://intruder.example/"}],
        admin(fed, "88.100.7"),
    )
    assert response.status_code in (400, 401, 403), response.text


def test_recursive_node_walks_to_hosted_and_self_hosted_prefixes(fed: Federation) -> None:
    cases = [
        (fed.secondary_a, "88.100.1", {fed.secondary_a.base_url, fed.secondary_b.base_url}),
        (fed.secondary_101, "88.101.5", {fed.secondary_101.base_url}),
        (fed.enterprise, "88.100.7", {fed.enterprise.base_url}),
    ]
    tops = set(fed.top_urls())
    for host, prefix, serving in cases:
        handle = unique(prefix, "walk")
        register(host, handle, f"https://{prefix}.example/walk", admin(fed, prefix))
        response = get(fed.recursive, handle)
        assert response.status_code == 200, response.text
        assert url_of(response) == f"https://{prefix}.example/walk"
        path = hops(response)
        last_url, last_asked = path[-1].split(" ")
        assert last_url in serving and last_asked == f"{handle.upper()}:1", path
        # A walk that did not know the site yet started at a top-level node.
        if not path[0].endswith(" cached"):
            assert path[0].split(" ")[0] in tops, path
        # Asked again, the answer comes from the recursive node's memory.
        again = get(fed.recursive, handle)
        assert again.headers["x-idis-source"] == "memory"
        assert url_of(again) == url_of(response)


def test_a_new_prefix_of_a_known_industry_is_walked_from_its_secondary(fed: Federation) -> None:
    """Once a walk met 88.100's delegation (the top level's 303 referral), walks under other
    enterprise prefixes of 88.100 start at its secondary node: the top level is not asked."""
    handles = []
    for number in (41, 42):
        prefix = f"88.100.{number}"
        secret = fed.workdir / f"secret-{prefix}"
        secret.write_text(f"e2e-{uuid.uuid4().hex}\n", encoding="utf-8")
        fed.secrets[prefix] = secret
        run_cli(fed.secondary_a.env, "prefix", "init", prefix, "--secret-file", str(secret))
        handle = unique(prefix, "delegated")
        register(fed.secondary_a, handle, f"https://{prefix}.example/", admin(fed, prefix))
        handles.append(handle)
    secondary = {fed.secondary_a.base_url, fed.secondary_b.base_url}

    first = get(fed.recursive, handles[0])  # meets the delegation, unless a test before did
    second = get(fed.recursive, handles[1])

    assert url_of(first) == "https://88.100.41.example/"
    assert url_of(second) == "https://88.100.42.example/"
    path = hops(second)
    assert path[0] == "0.NA/88.100 delegation cached", path
    assert {step.split(" ")[0] for step in path[1:]} <= secondary, path
    assert path[-1].endswith(f"{handles[1].upper()}:1"), path


def test_unknown_identifiers_are_not_found_through_the_recursive_node(fed: Federation) -> None:
    response = get(fed.recursive, unique("88.100.1", "missing"))
    assert (response.status_code, response.json()["responseCode"]) == (404, 100)
    response = get(fed.recursive, unique("88.555", "missing"))
    assert response.status_code == 404, response.text


# --- caching bounds --------------------------------------------------------------------------


def test_recursive_answers_are_bounded_by_the_ttl(fed: Federation) -> None:
    """With ttl=2 the recursive node may serve the old value until the TTL, and must serve the
    new one after it; ``auth=true`` gets the new one at once."""
    ttl = 2.0
    handle = unique("88.100.1", "ttl")
    auth = admin(fed, "88.100.1")
    register(fed.secondary_a, handle, "https://acme.example/v1", auth, ttl=int(ttl))

    asked = time.monotonic()
    assert url_of(get(fed.recursive, handle)) == "https://acme.example/v1"
    cached_at = time.monotonic()  # the recursive node cached v1 between asked and cached_at
    register(fed.secondary_a, handle, "https://acme.example/v2", auth, ttl=int(ttl))

    seen = url_of(get(fed.recursive, handle))
    if time.monotonic() - cached_at < ttl / 2:
        assert seen == "https://acme.example/v1", "the cached value is served within its TTL"
    # Within the TTL (plus polling slack) after v1 was cached, v2 must be served.
    deadline = cached_at + ttl + 0.5
    while seen != "https://acme.example/v2":
        assert time.monotonic() < deadline, f"v1 still served {time.monotonic() - asked:.2f}s on"
        time.sleep(0.05)
        seen = url_of(get(fed.recursive, handle))

    register(fed.secondary_a, handle, "https://acme.example/v3", auth, ttl=int(ttl))
    fresh = get(fed.recursive, handle, auth="true")
    assert url_of(fresh) == "https://acme.example/v3"
    assert fresh.headers["x-idis-source"] != "memory"
    assert url_of(get(fed.recursive, handle)) == "https://acme.example/v3"


def _raw_get_all(base_url: str, path: str, count: int) -> list[tuple[int, str, bytes]]:
    """``count`` GETs of ``path`` sent at once on connections opened beforehand, so that they
    reach the server together; (status, x-idis-source, body) of each."""
    host, port = base_url.removeprefix("http://").split(":")
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n").encode()
    sockets = [
        socket.create_connection((host, int(port)), timeout=HTTP_TIMEOUT) for _ in range(count)
    ]
    try:
        for sock in sockets:
            sock.sendall(request)
        answers = []
        for sock in sockets:
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:])
            headers = {k.lower(): v for k, v in headers.items()}
            answers.append((int(lines[0].split(" ")[1]), headers.get("x-idis-source", ""), body))
        return answers
    finally:
        for sock in sockets:
            sock.close()


def test_concurrent_first_requests_share_one_walk(fed: Federation) -> None:
    handle = unique("88.101.5", "coalesce")
    register(fed.secondary_101, handle, "https://star.example/c", admin(fed, "88.101.5"))
    before = stats(fed.recursive)
    secondary_before = stats(fed.secondary_101)

    answers = _raw_get_all(fed.recursive.base_url, f"/api/handles/{quote(handle)}", 20)

    after = stats(fed.recursive)
    secondary_after = stats(fed.secondary_101)
    for status, _source, body in answers:
        assert status == 200, body
        assert json.loads(body)["values"][0]["data"]["value"] == "https://star.example/c"
    assert after["walks"] - before["walks"] == 1
    # One walk's worth of upstream requests (site lookup and the handle) for 20 clients ...
    assert after["upstream_requests"] - before["upstream_requests"] <= 3
    # ... of which the secondary saw at most the prefix record and the handle once each.
    assert secondary_after["walks"] - secondary_before["walks"] <= 2
    # The requests did overlap: more than one client got the walk's own answer (the others
    # would have found it in memory).
    walked = [source for _status, source, _body in answers if source != "memory"]
    assert len(walked) >= 2, [source for _status, source, _body in answers]


# --- registration with the top level ---------------------------------------------------------


def test_joining_with_the_wrong_secret_is_refused(fed: Federation, tmp_path: Path) -> None:
    beijing = fed.tops["Beijing"]
    before = {city: get(top, "0.NA/88.100", auth="true").json() for city, top in fed.tops.items()}
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n", encoding="utf-8")
    env = node_env(
        tmp_path / "intruder",
        free_ports(1)[0],
        name="e2e-intruder",
        extra={"IDIS_FEDERATION__TOP_LEVEL": json.dumps([beijing.base_url])},
    )
    for prefix, secret_file in (("88.100", wrong), ("88.100", fed.secrets["88.101"])):
        join = ["federation", "join", prefix, "--secret-file", str(secret_file)]
        done = subprocess.run(
            [sys.executable, "-m", "nodes.cli", *join],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, done.stdout
        assert "response code 40" in done.stderr, done.stderr
    after = {city: get(top, "0.NA/88.100", auth="true").json() for city, top in fed.tops.items()}
    assert after == before
    assert site_urls(after["Beijing"]["values"], "HS_SITE") == [
        fed.secondary_a.base_url,
        fed.secondary_b.base_url,
    ]


def test_a_new_prefix_is_visible_at_all_five_within_a_second(fed: Federation) -> None:
    prefix = f"88.{200 + uuid.uuid4().int % 700}"
    secret_file = fed.workdir / f"secret-{prefix}"
    secret_file.write_text("e2e-new-prefix\n", encoding="utf-8")
    guangzhou = fed.tops["Guangzhou"]
    run_cli(guangzhou.env, "prefix", "allocate", prefix, "--secret-file", str(secret_file))
    allocated = time.monotonic()
    waiting = {city for city in CITIES if city != "Guangzhou"}
    while waiting:
        for city in sorted(waiting):
            if get(fed.tops[city], f"0.NA/{prefix}").json()["responseCode"] == 1:
                waiting.discard(city)
        elapsed = time.monotonic() - allocated
        assert not waiting or elapsed < VISIBLE_WITHIN, f"{prefix} not yet at {waiting}"
        time.sleep(0.02)


# --- failures (these stop nodes: keep them last) ---------------------------------------------


def test_resolution_survives_a_stopped_top_level_node(fed: Federation) -> None:
    beijing = fed.tops["Beijing"]
    handle = unique("88.100.1", "failover")
    register(fed.secondary_a, handle, "https://acme.example/failover", admin(fed, "88.100.1"))
    assert url_of(get(fed.recursive, handle)) == "https://acme.example/failover"

    beijing.stop()
    # A fresh walk starts at the roots: Beijing is down, the next root answers.
    response = get(fed.recursive, handle, auth="true")
    assert response.status_code == 200, response.text
    assert url_of(response) == "https://acme.example/failover"
    path = hops(response)
    assert path[0] == f"{beijing.base_url} unreachable", path
    assert path[1] == f"{fed.tops['Shanghai'].base_url} 0.NA/88.100.1:303", path

    # So does an identifier the recursive node never saw, under a prefix it never walked.
    handle = unique("88.101.5", "failover")
    register(fed.secondary_101, handle, "https://star.example/failover", admin(fed, "88.101.5"))
    response = get(fed.recursive, handle, auth="true")
    assert url_of(response) == "https://star.example/failover", response.text


def test_resolution_survives_a_stopped_server_of_a_secondary_site(fed: Federation) -> None:
    handle = unique("88.100.1", "second-server")
    register(fed.secondary_a, handle, "https://acme.example/b", admin(fed, "88.100.1"))
    assert url_of(get(fed.recursive, handle)) == "https://acme.example/b"

    fed.secondary_a.stop()
    response = get(fed.recursive, handle, auth="true")
    assert response.status_code == 200, response.text
    assert url_of(response) == "https://acme.example/b"
    path = hops(response)
    assert f"{fed.secondary_a.base_url} unreachable" in path, path
    assert path[-1] == f"{fed.secondary_b.base_url} {handle.upper()}:1", path

    # Writes go on at the other server, and resolve through the recursive node.
    fresh = unique("88.100.1", "after-stop")
    register(fed.secondary_b, fresh, "https://acme.example/after", admin(fed, "88.100.1"))
    assert url_of(get(fed.recursive, fresh)) == "https://acme.example/after"


def test_an_unreachable_site_is_served_stale_within_the_bound(fed: Federation) -> None:
    """88.101 has one server and no alternative: once it is down, the recursive node serves
    the last answer past its TTL for at most STALE_TTL seconds, saying so, then fails."""
    ttl = 2.0
    handle = unique("88.101.5", "stale")
    register(fed.secondary_101, handle, "https://star.example/s", admin(fed, "88.101.5"), int(ttl))
    asked = time.monotonic()
    first = get(fed.recursive, handle)
    answered = time.monotonic()
    assert url_of(first) == "https://star.example/s"
    assert not first.headers["x-idis-source"].startswith("stale")

    fed.secondary_101.stop()
    expired = answered + ttl  # the answer expires between asked + ttl and this
    time.sleep(max(0.0, expired + 0.3 - time.monotonic()))
    stale_until = asked + ttl + STALE_TTL
    served_stale = 0
    while time.monotonic() < stale_until - 0.3:
        response = get(fed.recursive, handle)
        assert response.status_code == 200, response.text
        assert url_of(response) == "https://star.example/s"
        assert unquote(response.headers["x-idis-source"]).startswith("stale ("), response.headers
        served_stale += 1
        time.sleep(0.2)
    assert served_stale >= 2

    deadline = expired + STALE_TTL + 3.0
    time.sleep(max(0.0, answered + ttl + STALE_TTL + 0.1 - time.monotonic()))
    while True:
        response = get(fed.recursive, handle)
        if response.status_code != 200:
            break
        assert time.monotonic() < deadline, "still served stale past the bound"
        time.sleep(0.1)
    assert response.status_code == 503, response.text
    assert response.json()["responseCode"] == 3
