"""Building ``idis demo``'s federation, step by step (see nodes/demo.py): the plan of its
members, starting them, allocating the industry prefixes at the top level, the secondary nodes
joining, and the enterprise prefixes (through the application workflow where the build has it).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from nodes.console.demo_step import console_env
from nodes.demo_cluster import (
    ENTERPRISES,
    HTTP_TIMEOUT,
    NATIONAL_PREFIX,
    READY_TIMEOUT,
    TOP_LEVEL_CITIES,
    Cluster,
    Demo,
    Enterprise,
)
from nodes.demo_output import StepFailed
from nodes.federation import basic_auth, site_values
from nodes.processes import free_ports, wait_ready
from nodes.stats.demo_step import DEMO_ENV as STATS_ENV

VISIBLE_TIMEOUT = 3.0
"""Seconds a write at one top-level node gets to be answered by all five: the change log's
poller makes it well under one; less than the 5 s a cached miss would otherwise last."""


def plan(demo: Demo) -> None:
    """Make the secrets and every member with its settings (ports picked together, so all
    distinct)."""
    cluster = demo.cluster
    for name in (NATIONAL_PREFIX, "0.NA/88.100", "0.NA/88.101", *(e.prefix for e in ENTERPRISES)):
        demo.secret_file(name)
    ports = iter(free_ports(len(TOP_LEVEL_CITIES) + 4))
    top_ports = {city: next(ports) for city in TOP_LEVEL_CITIES}
    top_urls = [f"http://127.0.0.1:{p}" for p in top_ports.values()]
    federation_secret = demo.federation_secret = secrets.token_urlsafe(24)
    allocations = {"Beijing": "allocates 88.100", "Shanghai": "allocates 88.101"}
    # The national tier is one registry: all five sites read and write the same database
    # (SQLite allows several processes on one file) and open secrets with the same key.
    national = {
        "IDIS_DATABASE_URL": f"sqlite:///{cluster.root / 'national.db'}",
        "IDIS_SECRET_KEY_FILE": str(cluster.root / "national.key"),
        "IDIS_FEDERATION__SECRET": federation_secret,
    }
    for city, port in top_ports.items():
        serves = "88 (the one national registry)"
        serves += f"; {allocations[city]}" if city in allocations else ""
        # Each site's console lists the other four with their readiness.
        sites = console_env(city, dict(zip(top_ports, top_urls, strict=True)))
        cluster.add(city, "top-level", port, serves, {**national, **sites})
    joins = {"secondary-88.100": "Beijing", "secondary-88.101": "Shanghai"}
    for name, top in joins.items():
        prefix = name.removeprefix("secondary-")
        hosted = ", ".join(e.prefix for e in ENTERPRISES if e.host == name)
        cluster.add(
            name,
            "secondary",
            next(ports),
            f"{prefix} (joined at {top}); hosts {hosted}",
            {
                "IDIS_FEDERATION__TOP_LEVEL": json.dumps([cluster.members[top].url]),
                # Approving an enterprise prefix writes it at the top level as 0.NA/PREFIX's
                # holder.
                "IDIS_FEDERATION__HOLDER_SECRET_FILE": demo.secret_paths[f"0.NA/{prefix}"],
                **STATS_ENV,  # and reports its national statistics as that holder
            },
        )
    cluster.add("enterprise-88.100.7", "enterprise", next(ports), "88.100.7 (self-hosted)", {})
    cluster.add(
        "recursive",
        "recursive",
        next(ports),
        "walks from all five top-level nodes",
        # The federation secret opens its /api/stats (a recursive node homes no prefix).
        {
            "IDIS_FEDERATION__TOP_LEVEL": json.dumps(top_urls),
            "IDIS_FEDERATION__SECRET": federation_secret,
        },
    )


def parallel(tasks: Sequence[Callable[[], None]]) -> None:
    """Run ``tasks`` on threads; re-raise the first failure once all have ended."""
    if not tasks:
        return
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks]
    for future in futures:
        future.result()


def start_nodes(demo: Demo) -> None:
    cluster = demo.cluster

    def top_level() -> None:
        # One registry: homing 88 once (at Beijing) homes it at all five.
        beijing = cluster.members["Beijing"]
        cluster.cli(beijing, "prefix", "init", NATIONAL_PREFIX, "--secret-file", top_secret)
        for city in TOP_LEVEL_CITIES:
            cluster.launch(cluster.members[city])

    def enterprise() -> None:
        member = cluster.members["enterprise-88.100.7"]
        cluster.cli(member, "prefix", "init", "88.100.7", "--secret-file", enterprise_secret)
        cluster.launch(member)

    top_secret = demo.secret_paths[NATIONAL_PREFIX]
    enterprise_secret = demo.secret_paths["88.100.7"]
    first = [*TOP_LEVEL_CITIES, "enterprise-88.100.7", "recursive"]
    with demo.steps.step(
        "start the five top-level nodes (one registry homing 88), the enterprise node and the "
        "recursive node"
    ) as notes:
        parallel([top_level, enterprise, lambda: cluster.launch(cluster.members["recursive"])])
        wait_ready([cluster.members[name] for name in first], READY_TIMEOUT)
        notes.append("idis prefix init 88 once (at Beijing), then idis serve at each of the five")
        notes.append("the five share national.db and national.key under the demo directory")


def allocate(demo: Demo) -> None:
    cluster = demo.cluster
    s100, s101 = demo.secret_paths["0.NA/88.100"], demo.secret_paths["0.NA/88.101"]
    handles = ["0.NA/88.100", "0.NA/88.101"]
    with demo.steps.step("Beijing allocates 88.100, Shanghai allocates 88.101") as notes:
        # Asked before the allocation, each node may cache the "not found": then only its
        # change-log poller makes the new prefix visible there (what the next step measures).
        _ask_everywhere(demo, handles)
        notes.append("asked at all five first: not found (each node remembers that for 5 s)")
        parallel(
            [
                lambda: _allocate_at(cluster, "Beijing", "88.100", s100),
                lambda: _allocate_at(cluster, "Shanghai", "88.101", s101),
            ]
        )
        notes.append("idis prefix allocate 88.100 (the holder authenticates as 300:0.NA/88.100)")
        notes.append("each allocation written once, to the one national registry")

    title = "both prefixes are visible at all five top-level nodes"
    with demo.steps.step(title) as notes:
        took = _wait_visible(demo, handles, VISIBLE_TIMEOUT)
        notes.append(f"0.NA/88.100 and 0.NA/88.101 answered everywhere after {took:.2f}s")
        notes.append("each node drops stale cached answers as its change-log poller sees a write")


def _ask_everywhere(demo: Demo, handles: Sequence[str]) -> None:
    """Ask every top-level node for each of ``handles`` (which must not exist yet) as a client
    would, so that each caches the miss (``IDIS_CACHE__NEGATIVE_TTL``, 5 s by default)."""
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        for city in TOP_LEVEL_CITIES:
            for handle in handles:
                response = client.get(f"{demo.member(city).url}/api/handles/{handle}")
                if response.status_code != 404:
                    raise StepFailed(f"{city} answers {handle} before its allocation: {response}")


def _allocate_at(cluster: Cluster, city: str, prefix: str, secret_file: str) -> None:
    cluster.cli(cluster.members[city], "prefix", "allocate", prefix, "--secret-file", secret_file)


def _wait_visible(demo: Demo, handles: Sequence[str], timeout: float) -> float:
    """Seconds until every top-level node resolves every handle in ``handles``, asked as a
    client would (caches allowed)."""
    started = time.monotonic()
    missing = {(city, h) for city in TOP_LEVEL_CITIES for h in handles}
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        while missing:
            for city, handle in sorted(missing):
                url = f"{demo.member(city).url}/api/handles/{handle}"
                response = client.get(url)
                if response.status_code == 200 and response.json().get("responseCode") == 1:
                    missing.discard((city, handle))
            if missing and time.monotonic() - started > timeout:
                where = ", ".join(f"{h} at {c}" for c, h in sorted(missing))
                raise StepFailed(f"not visible within {timeout:g}s: {where}")
            if missing:
                time.sleep(0.05)
    return time.monotonic() - started


def start_secondaries(demo: Demo) -> None:
    cluster = demo.cluster

    def secondary(name: str) -> Callable[[], None]:
        prefix = name.removeprefix("secondary-")
        holder_secret = demo.secret_paths[f"0.NA/{prefix}"]

        def run() -> None:
            member = cluster.members[name]
            cluster.cli(member, "federation", "join", prefix, "--secret-file", holder_secret)
            cluster.launch(member)

        return run

    names = ["secondary-88.100", "secondary-88.101"]
    with demo.steps.step(
        "start the secondary nodes: 88.100 joins at Beijing, 88.101 at Shanghai"
    ) as notes:
        parallel([secondary(name) for name in names])
        wait_ready([cluster.members[name] for name in names], READY_TIMEOUT)
        notes.append("idis federation join 88.100 --secret-file …: HS_SITE and HS_SITE.PREFIX")

    with demo.steps.step("every top-level node delegates 88.100 and 88.101 to them") as notes:
        # Each join wrote its site once, at the node it joined, into the one national registry.
        took = _wait_sites(
            demo, {f"0.NA/{name.removeprefix('secondary-')}": (1, name) for name in names}
        )
        notes.append(f"0.NA/88.100 names secondary-88.100's site everywhere after {took:.2f}s")
        notes.append("each site written once (the join at Beijing or Shanghai), read at all five")


def _wait_sites(demo: Demo, expected: Mapping[str, tuple[int, str]]) -> float:
    """Seconds until every top-level node answers each handle of ``expected`` with its code
    (1: the record, 303: a prefix referral) and site values naming its member's URL."""
    started = time.monotonic()
    deadline = started + VISIBLE_TIMEOUT
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        for city in TOP_LEVEL_CITIES:
            for handle, (code, name) in expected.items():
                want = demo.member(name).url
                while True:
                    response = client.get(
                        f"{demo.member(city).url}/api/handles/{handle}", params={"auth": "true"}
                    )
                    body = response.json()
                    urls = _site_urls(body.get("values") or [])
                    if body.get("responseCode") == code and want in urls:
                        break
                    if time.monotonic() > deadline:
                        raise StepFailed(
                            f"{city} answers {handle} with {body.get('responseCode')} "
                            f"(sites {urls or 'none'}), not {code} naming {name} ({want})"
                        )
                    time.sleep(0.05)
    return time.monotonic() - started


def _workflow_available(demo: Demo) -> bool:
    """Whether the secondary nodes take enterprise prefix applications."""
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        response = client.get(f"{demo.member('secondary-88.100').url}/api/prefix-applications")
    return response.status_code != 404


def enterprise_prefixes(demo: Demo) -> None:
    if _workflow_available(demo):
        _apply_and_approve(demo)
    else:
        _home_enterprise_prefixes(demo)
    enterprise = demo.member("enterprise-88.100.7")
    with demo.steps.step("the top level knows where each enterprise prefix is served") as notes:
        expected: dict[str, tuple[int, str]] = {}
        for e in ENTERPRISES:
            # Either the top level holds the enterprise's prefix record itself (the approval
            # wrote it there), or it refers to the secondary that allocated it.
            expected[f"0.NA/{e.prefix}"] = (1, e.host) if demo.workflow else (303, e.secondary)
        took = _wait_sites(demo, expected)
        notes.append(f"0.NA/88.100.1, 0.NA/88.101.5, 0.NA/88.100.7 at all five after {took:.2f}s")
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:
            secondary = demo.member("secondary-88.100")
            referral = client.get(f"{secondary.url}/api/handles/88.100.7/ANY").json()
        if referral.get("responseCode") != 302 or enterprise.url not in _site_urls(
            referral.get("values") or []
        ):
            raise StepFailed(f"the secondary answers 88.100.7/ANY with {referral}, not a 302")
        notes.append(
            "GET 88.100.7/… at the secondary 88.100 → 302 service referral to the enterprise"
        )


def _apply_and_approve(demo: Demo) -> None:
    """The enterprise prefix workflow: each enterprise applies at the secondary node, whose
    operator approves (``idis enterprise apply`` / ``approve``, over HTTP)."""
    cluster = demo.cluster
    demo.workflow = True
    ids: dict[str, str] = {}

    def apply(e: Enterprise) -> Callable[[], None]:
        def run() -> None:
            node = demo.member(e.secondary).url
            args = ["enterprise", "apply", "--node", node, e.prefix, "--name", e.name]
            if e.self_hosted:
                args += ["--self-hosted", demo.member(e.host).url]
            else:
                args += ["--secret-file", demo.secret_paths[e.prefix]]
            out = cluster.cli(demo.member(e.host), *args)
            match = re.search(r"application (\S+) submitted", out)
            if match is None:
                raise StepFailed(f"idis enterprise apply said:\n{out}")
            ids[e.prefix] = match.group(1)

        return run

    def approve(e: Enterprise) -> Callable[[], None]:
        def run() -> None:
            node = demo.member(e.secondary)
            cluster.cli(
                node,
                *("enterprise", "approve", "--node", node.url, ids[e.prefix]),
                *("--identity", f"300:{e.parent}/ADMIN"),
                *("--secret-file", demo.secret_paths[f"0.NA/{e.parent}"]),
            )

        return run

    with demo.steps.step("three enterprises apply for prefixes at their secondary nodes") as notes:
        parallel([apply(e) for e in ENTERPRISES])
        notes.append("idis enterprise apply --node URL PREFIX --name NAME [--self-hosted URL]")
        for e in ENTERPRISES:
            how = f"self-hosted on {e.host}" if e.self_hosted else f"hosted by {e.secondary}"
            notes.append(f"{e.prefix} for {e.name}, {how}: application {ids[e.prefix]}")
    with demo.steps.step("the secondary nodes approve them") as notes:
        parallel([approve(e) for e in ENTERPRISES])
        notes.append("idis enterprise approve --node URL ID --identity 300:88.100/ADMIN …")
        notes.append("each wrote 0.NA/PREFIX at its secondary and at the top level")


def _homing(demo: Demo, enterprise: Enterprise) -> Callable[[], None]:
    """A task homing ``enterprise``'s prefix on its host (``idis prefix init``)."""
    secret_file = demo.secret_paths[enterprise.prefix]

    def run() -> None:
        host = demo.member(enterprise.host)
        demo.cluster.cli(host, "prefix", "init", enterprise.prefix, "--secret-file", secret_file)

    return run


def _home_enterprise_prefixes(demo: Demo) -> None:
    """Without the enterprise workflow: home the hosted prefixes on their secondary nodes and
    point the self-hosted one at the enterprise node by hand."""
    secondary = demo.member("secondary-88.100")
    enterprise = demo.member("enterprise-88.100.7")
    hosted = [e for e in ENTERPRISES if not e.self_hosted]
    with demo.steps.step("the secondary nodes home 88.100.1 and 88.101.5") as notes:
        parallel([_homing(demo, e) for e in hosted])
        notes.append("no enterprise workflow in this build: idis prefix init 88.100.1")
    title = "the secondary 88.100 points 88.100.7 at the enterprise's own node"
    with demo.steps.step(title) as notes, httpx.Client(timeout=HTTP_TIMEOUT) as client:
        values = site_values(enterprise.url, "enterprise node of 88.100.7")
        response = client.put(
            f"{secondary.url}/api/handles/0.NA/88.100.7",
            json={"values": values},
            auth=basic_auth("300:88.100/ADMIN", demo.secrets["0.NA/88.100"]),
        )
        expect(response, {200, 201}, "writing 0.NA/88.100.7 at the secondary")
        notes.append("PUT 0.NA/88.100.7 (HS_SITE → enterprise node) as 300:88.100/ADMIN")


def _site_urls(values: Sequence[Mapping[str, Any]]) -> list[str]:
    urls = []
    for value in values:
        data = value.get("data") or {}
        if data.get("format") != "site":
            continue
        for server in (data.get("value") or {}).get("servers") or []:
            for interface in server.get("interfaces") or []:
                protocol = str(interface.get("protocol", "")).lower()
                urls.append(f"{protocol}://{server.get('address')}:{interface.get('port')}")
    return urls


def expect(response: httpx.Response, statuses: set[int], doing: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code not in statuses:
        raise StepFailed(f"{doing}: HTTP {response.status_code} {response.text[:300]}")
    return body
