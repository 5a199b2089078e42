"""The federation console (``/console``) in headless Chromium, against real nodes.

- A small federation of real ``idis serve`` processes on PostgreSQL: two top-level sites of one
  registry (Beijing and Shanghai), the secondary nodes 88.100 and 88.101 joined at Beijing and
  reporting their national statistics to it (helpers in ``reporting.py``, shared with
  ``test_national_stats.py``), and a recursive node whose roots are both sites.  Beijing's
  console lists its tier's other site, the delegated prefixes and their nodes, and draws the
  real ``/api/national/stats`` after both secondaries registered and resolved identifiers; the
  recursive node's lists its upstreams; the request rate follows traffic sent meanwhile; every
  request the pages make stays on 127.0.0.1.
- The national tier as ``test_national_failover.py`` runs it (etcd, a Patroni member and an
  idis per site): the console of a surviving site follows the leader site's SIGKILL, showing
  the new leader and the takeover, while the killed site's own console turns stale.

Chromium is Debian's (``scripts/test-deps.sh``), driven by Playwright without its own browser.
Every stage is screenshotted into ``$IDIS_TEST_ARTIFACTS/console`` (default
``test-artifacts/console`` in the repository).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import StartNode
from nodeproc import REPO, NodeProcess
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright
from reporting import (
    all_counts,
    counts,
    industry_nodes,
    join,
    register,
    resolve,
    secondary_env,
    secret,
    secret_files,
    wait_stats,
)

from nodes.national.binaries import MissingBinaries
from nodes.national.tier import NationalTier
from nodes.processes import HOST, free_ports, run_cli

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOWN_WITHIN = 20.0
"""Seconds for the page to show what its node knows (it polls every 2 s)."""
TAKEOVER_SHOWN_WITHIN = 60.0
"""Seconds from the leader site's SIGKILL until the console shows the new leader: Patroni's
leader lock expires after its ttl (20 s) and a standby is promoted; the console looks every
2 s."""
TIER_SITES = {"beijing": False, "nanjing": True, "guiyang": True}


def artifacts() -> Path:
    root = os.environ.get("IDIS_TEST_ARTIFACTS")
    folder = (Path(root) if root else REPO / "test-artifacts") / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Page, name: str) -> Path:
    path = artifacts() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_until(
    what: str, check: Callable[[], bool], timeout: float = SHOWN_WITHIN, page: Page | None = None
) -> float:
    """Poll ``check`` until true; the seconds it took.  Fails naming ``what`` after ``timeout``.
    With ``page``, waits on it: Playwright's sync API delivers events (requests) only then."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"the console did not show {what} within {timeout:g}s")
        if page is not None:
            page.wait_for_timeout(250)
        else:
            time.sleep(0.25)
    return time.monotonic() - started


# --- the browser ---------------------------------------------------------------------------


@dataclass
class Browsing:
    context: BrowserContext
    requests: list[str]
    """Every URL any page of the context asked for."""

    def open(self, url: str, *, width: int = 1400, height: int = 900) -> Page:
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.goto(url)
        return page


@pytest.fixture
def browser() -> Iterator[Browsing]:
    """A fresh headless Chromium for one test.  Not shared by the module: Playwright's sync API
    holds an event loop in this thread while it runs, and fixtures that set up nodes and
    databases run ``asyncio.run`` (a launch takes about 2 s)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test-deps.sh (Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="idis-chromium-")
    playwright: Playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        browsing = Browsing(context, [])
        context.on("request", lambda request: browsing.requests.append(request.url))
        try:
            yield browsing
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


# --- a small federation --------------------------------------------------------------------


@dataclass
class Federation:
    beijing: NodeProcess
    shanghai: NodeProcess
    secondary: NodeProcess
    """The secondary node 88.100 (and the enterprise prefix 88.100.1 it hosts)."""
    other: NodeProcess
    """The secondary node 88.101."""
    recursive: NodeProcess
    secrets: dict[str, Path]


@pytest.fixture(scope="module")
def fed(
    node_factory: StartNode, pg_factory: Callable[[], str], tmp_path_factory: Any
) -> Federation:
    workdir = tmp_path_factory.mktemp("console")
    secrets = secret_files(workdir, ("88", "88.100", "88.101", "88.100.1"))
    ports = dict(zip(("Beijing", "Shanghai"), free_ports(2), strict=True))
    urls = {city: f"http://{HOST}:{port}" for city, port in ports.items()}
    national = pg_factory()

    def top(city: str, other: str) -> NodeProcess:
        env = {
            "IDIS_ROLE": "top-level",
            "IDIS_NAME": city,
            "IDIS_HTTP": f"{HOST}:{ports[city]}",
            "IDIS_CONSOLE__SITES": json.dumps([urls[other]]),
        }
        return node_factory(
            database_url=national,
            prefix="88",
            secret=secret(secrets, "88"),
            init=city == "Beijing",  # one registry: the first site homes 88 for both
            extra_env=env,
        )

    beijing = top("Beijing", "Shanghai")  # it migrates the shared database and homes 88

    def secondary(prefix: str) -> Callable[[], NodeProcess]:
        # Each reports its figures to Beijing every half second (reporting.secondary_env).
        env = secondary_env([urls["Beijing"]], secrets[prefix])
        return lambda: node_factory(
            database_url=pg_factory(),
            prefix=prefix,
            secret=secret(secrets, prefix),
            init=False,
            extra_env={**env, "IDIS_NAME": f"industry-{prefix}"},
        )

    def recursive() -> NodeProcess:
        return node_factory(
            init=False,
            extra_env={
                "IDIS_ROLE": "recursive",
                "IDIS_NAME": "recursive",
                "IDIS_FEDERATION__TOP_LEVEL": json.dumps(list(urls.values())),
            },
        )

    def allocate() -> None:
        for prefix in ("88.100", "88.101"):
            path = str(secrets[prefix])
            run_cli(beijing.env, "prefix", "allocate", prefix, "--secret-file", path)

    # Starting a node is mostly waiting: the others start together.
    starts: list[Callable[[], NodeProcess]] = [
        lambda: top("Shanghai", "Beijing"),
        secondary("88.100"),
        secondary("88.101"),
        recursive,
    ]
    with ThreadPoolExecutor(max_workers=len(starts) + 1) as pool:
        allocated = pool.submit(allocate)
        started = [pool.submit(start) for start in starts]
    allocated.result()
    shanghai, industry, other, resolver = (future.result() for future in started)
    for node, city in ((beijing, "Beijing"), (shanghai, "Shanghai")):
        assert node.base_url == urls[city], f"{city} had to move to {node.base_url}"
    join(industry, "88.100", secrets["88.100"])
    join(other, "88.101", secrets["88.101"])
    run_cli(industry.env, "prefix", "init", "88.100.1", "--secret-file", str(secrets["88.100.1"]))
    return Federation(beijing, shanghai, industry, other, resolver, secrets)


def _text(page: Page, selector: str) -> str:
    found = page.locator(selector)
    return found.first.inner_text() if found.count() else ""


def test_the_top_level_console_lists_the_federation(fed: Federation, browser: Browsing) -> None:
    page = browser.open(f"{fed.beijing.base_url}/console")
    wait_until("the node's name", lambda: _text(page, "#node-name") == "Beijing")
    assert _text(page, "#node-role") == "top-level"
    wait_until("the node ready", lambda: _text(page, "#node-status") == "ready")
    shanghai = '#peer-sites tr[data-site="Shanghai"]'
    wait_until("Shanghai ready", lambda: "ready" in _text(page, shanghai))
    assert fed.shanghai.base_url in _text(page, shanghai)
    delegated = '#delegations tr[data-prefix="88.100"]'
    wait_until("88.100 delegated and ready", lambda: "ready" in _text(page, delegated))
    assert fed.secondary.base_url in _text(page, delegated)
    assert _text(page, "#freshness") == "live"

    # Traffic while the page watches: its request rate leaves zero.
    with httpx.Client(base_url=fed.beijing.base_url, timeout=10) as client:
        deadline = time.monotonic() + SHOWN_WITHIN
        for _ in range(2000):
            client.get("/api/handles/0.NA/88.100")
            if _text(page, "#request-rate") not in ("…", "0") or time.monotonic() > deadline:
                break
    assert _text(page, "#request-rate") not in ("…", "0")
    assert "memory" in _text(page, '[data-layer="memory"]')
    screenshot(page, "1-top-level")
    wall = browser.open(f"{fed.beijing.base_url}/console?wall=1", width=1920, height=1080)
    wait_until("the wall screen", lambda: "ready" in _text(wall, shanghai))
    assert wall.evaluate("document.documentElement.classList.contains('wall')")
    sizes = [
        p.evaluate("getComputedStyle(document.documentElement).fontSize") for p in (page, wall)
    ]
    assert float(sizes[1].removesuffix("px")) > float(sizes[0].removesuffix("px")), sizes
    screenshot(wall, "1-top-level-wall")


def _cells(page: Page, row: str) -> list[str]:
    return [cell.inner_text() for cell in page.locator(f"{row} td").all()]


def _shows(page: Page, row: str, first: int, cells: list[str]) -> Callable[[], bool]:
    """Whether ``row``'s cells from the ``first`` on are ``cells``, for :func:`wait_until`."""
    return lambda: _cells(page, row)[first : first + len(cells)] == cells


def test_the_national_figures_are_drawn(fed: Federation, browser: Browsing) -> None:
    """Both secondary nodes register and resolve, and report upward; Beijing's console draws
    its ``GET /api/national/stats`` as it answers: each industry node's counts, identifiers
    against 2 billion, resolutions per day against 150 million, and each delegated prefix's
    identifier count."""
    a100 = register(fed.secondary, "88.100", secret(fed.secrets, "88.100"), 3)
    a1001 = register(fed.secondary, "88.100.1", secret(fed.secrets, "88.100.1"), 2)
    resolve(fed.secondary, a100[0], 4)
    resolve(fed.secondary, a1001[1], 1)
    b101 = register(fed.other, "88.101", secret(fed.secrets, "88.101"), 4)
    resolve(fed.other, b101[2], 2)
    # Identifiers: those registered plus the administrator that homing each prefix made.
    expected = {"88.100": (2 + 5, 5, 5), "88.101": (1 + 4, 4, 2)}
    stats = wait_stats(fed.beijing.base_url, lambda s: all_counts(s) == expected, days=None)
    nodes = industry_nodes(stats)
    totals, target = stats["totals"], stats["target"]

    page = browser.open(f"{fed.beijing.base_url}/console")
    wait_until("the figures", lambda: page.locator("#figures").is_visible())
    for prefix, node in nodes.items():
        figures = [f"{n:,}" for n in counts(node)]
        # The industry table as the JSON says; the delegations carry the same counts.
        industry = f'#industry tr[data-prefix="{prefix}"]'
        row = [prefix, node["node"], *figures]
        wait_until(f"{prefix}'s figures", _shows(page, industry, 0, row))
        delegated = f'#delegations tr[data-prefix="{prefix}"]'
        wait_until(f"{prefix}'s count among the delegations", _shows(page, delegated, 3, figures))
    assert page.locator("#industry tbody tr").count() == len(nodes) == 2
    assert {node["node"] for node in nodes.values()} == {"industry-88.100", "industry-88.101"}

    share = float(page.locator(".progress").get_attribute("aria-valuenow") or "nan")
    assert abs(share - 100 * totals["identifiers"] / target["identifiers"]) < 1e-3
    assert f"{totals['identifiers']:,} of 2.00 billion" in _text(page, "#identifiers-text")
    bars = page.locator("#resolutions-chart rect.bar-fill")
    assert bars.count() == len(stats["days"]) == 30
    today = stats["days"][-1]
    assert today["resolved"] == totals["resolvedToday"] == 7
    assert bars.last.locator("title").text_content() == f"{today['day']}: {today['resolved']:,}"
    assert page.locator("#resolutions-chart line.target").count() == 1
    screenshot(page, "1-top-level-figures")


def test_the_other_nodes_show_their_upstreams(fed: Federation, browser: Browsing) -> None:
    page = browser.open(f"{fed.recursive.base_url}/console")
    wait_until("the recursive node", lambda: _text(page, "#node-role") == "recursive")
    for top in (fed.beijing, fed.shanghai):
        row = f'#upstreams tr[data-url="{top.base_url}"]'
        wait_until(f"upstream {top.base_url} ready", lambda row=row: "ready" in _text(page, row))
    assert page.locator("#tier").is_hidden() and page.locator("#delegations").is_hidden()
    screenshot(page, "2-recursive")

    page = browser.open(f"{fed.secondary.base_url}/console", width=900, height=900)
    wait_until("the secondary node", lambda: _text(page, "#node-name") == "industry-88.100")
    row = f'#upstreams tr[data-url="{fed.beijing.base_url}"]'
    wait_until("its top level", lambda: "Beijing" in _text(page, row))
    screenshot(page, "3-secondary")


def test_the_console_loads_nothing_from_elsewhere(fed: Federation, browser: Browsing) -> None:
    """Every request of the pages (the page, its assets, its polls, the national figures'
    attempt on a top-level node) goes to the node itself."""
    for node in (fed.beijing, fed.secondary):
        page = browser.open(f"{node.base_url}/console?wall=1")
        wait_until("a poll", lambda page=page: _text(page, "#freshness") == "live")
        poll = f"{node.base_url}/api/console"
        wait_until("three polls", lambda poll=poll: browser.requests.count(poll) >= 3, page=page)
    assets = [url for url in browser.requests if "/console/assets/" in url]
    assert any(url.endswith("console.js") for url in assets)
    assert any(url.endswith("console.css") for url in assets)
    assert f"{fed.beijing.base_url}/api/national/stats" in browser.requests
    elsewhere = [url for url in browser.requests if urlsplit(url).hostname != HOST]
    assert elsewhere == [], elsewhere


ODD_NAME = '<img src=x onerror="document.title=`pwned`">'


@pytest.fixture
def odd_node(node_factory: StartNode, pg_factory: Callable[[], str]) -> NodeProcess:
    """A node whose name is markup (set up before the browser: see :func:`browser`)."""
    return node_factory(database_url=pg_factory(), extra_env={"IDIS_NAME": ODD_NAME})


def test_the_page_escapes_what_it_shows(odd_node: NodeProcess, browser: Browsing) -> None:
    """A node name with markup in it is shown as text, and runs nothing."""
    page = browser.open(f"{odd_node.base_url}/console")
    wait_until("the odd name", lambda: _text(page, "#node-name") == ODD_NAME)
    assert page.locator("#identity img").count() == 0
    assert page.title() != "pwned"


def test_the_endpoint_answers_from_what_the_node_knows(fed: Federation) -> None:
    """``GET /api/console`` of the secondary node: itself, its counters, its upstream, and the
    enterprise prefix it homes; a bare page and its assets from the package."""
    with fed.secondary.client() as client:
        body = client.get("/api/console").json()
        page = client.get("/console")
        script = client.get("/console/assets/console.js")
    assert body["responseCode"] == 1 and body["refresh"] == 2.0
    assert body["node"]["name"] == "industry-88.100" and body["node"]["role"] == "secondary"
    assert body["node"]["status"] == "ready" and body["node"]["homed"] == ["88.100", "88.100.1"]
    assert body["traffic"]["requests"] >= 0 and {"memory"} <= {c["layer"] for c in body["caches"]}
    assert [u["url"] for u in body["upstreams"]] == [fed.beijing.base_url]
    assert body["national"] is None and body["nationalStats"] is None
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200 and "textContent" in script.text
    assert "innerHTML" not in script.text  # what the node sends never becomes markup
    # HEAD answers as GET does, without the body, on the page, the endpoint and the assets.
    with fed.secondary.client() as client:
        for path, got in (("/console", page), ("/console/assets/console.js", script)):
            head = client.head(path)
            assert head.status_code == 200 and head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
        head = client.head("/api/console")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"].startswith("application/json")
        operations = client.get("/openapi.json").json()["paths"]
    for path in ("/console", "/api/console"):
        assert {"get", "head"} <= set(operations[path]), path


@pytest.fixture
def guarded(node_factory: StartNode, pg_factory: Callable[[], str]) -> NodeProcess:
    return node_factory(database_url=pg_factory(), extra_env={"IDIS_CONSOLE__AUTH": "true"})


def test_the_console_can_require_an_operator(guarded: NodeProcess) -> None:
    with guarded.client() as client:
        for path in ("/console", "/api/console"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic")
            assert client.get(path, auth=guarded.auth).status_code == 200, path
            assert client.head(path).status_code == 401, path
            assert client.head(path, auth=guarded.auth).status_code == 200, path
        wrong = httpx.BasicAuth(guarded.identity.replace(":", "%3A", 1), "not-the-secret")
        assert client.get("/api/console", auth=wrong).status_code in (401, 403)


# --- the national tier ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tier() -> Iterator[NationalTier]:
    try:
        national = NationalTier(TIER_SITES)
    except MissingBinaries as error:
        pytest.fail(str(error))
    try:
        national.start()
        yield national
    finally:
        national.stop()


def _leader_shown(page: Page) -> str:
    return _text(page, "#leader")


def test_the_console_follows_a_takeover(tier: NationalTier, browser: Browsing) -> None:
    leader = tier.cluster.wait_streaming(60)
    survivor = next(name for name in TIER_SITES if name != leader)
    watching = browser.open(f"{tier.nodes[survivor].url}/console")
    doomed = browser.open(f"{tier.nodes[leader].url}/console")
    wait_until(f"{leader} leading", lambda: _leader_shown(watching) == leader)
    for name in TIER_SITES:
        row = f'#sites tr[data-site="{name}"]'
        wait_until(f"{name}'s member", lambda row=row: watching.locator(row).count() == 1)
    assert watching.locator(f'#sites tr[data-site="{leader}"]').get_attribute("data-role") == (
        "leader"
    )
    wait_until("the doomed site live", lambda: _text(doomed, "#freshness") == "live")
    screenshot(watching, "4-tier-before")

    killed = tier.kill_site(leader)
    took = wait_until(
        "a new leader",
        lambda: _leader_shown(watching) not in ("", leader, "none"),
        TAKEOVER_SHOWN_WITHIN,
    )
    new_leader = _leader_shown(watching)
    assert new_leader in TIER_SITES and new_leader != leader
    takeover = f'#takeovers li[data-from="{leader}"][data-to="{new_leader}"]'
    wait_until("the takeover", lambda: watching.locator(takeover).count() == 1)
    assert f"{leader} → {new_leader}" in _text(watching, takeover)
    assert tier.cluster.wait_leader(10) == new_leader
    # The killed site's own console says its numbers are stale.
    wait_until("the killed site stale", lambda: "stale" in _text(doomed, "#freshness"))
    screenshot(watching, "5-tier-after-takeover")
    screenshot(doomed, "6-killed-site-stale")
    print(f"takeover shown {time.monotonic() - killed:.1f}s after the kill ({took:.1f}s waited)")
