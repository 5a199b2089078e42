"""``idis demo``: a whole federation on this machine, built step by step and queried.

:func:`run_demo` starts, each as an ``idis serve`` process of its own on a loopback port the
operating system picks, with a temporary data directory of its own (the embedded default:
SQLite, in-process cache; no PostgreSQL or Redis), except that the top-level nodes share their
registry:

- the five top-level nodes Beijing, Shanghai, Guangzhou, Wuhan and Chongqing, the sites of the
  national tier: like the real one (one PostgreSQL registry under Patroni, nodes/national/) they
  share ONE registry homing the national prefix ``88``, here one SQLite file, and one secret
  sealing key; each follows the registry's change log to drop what it cached;
- the secondary (industry) nodes 88.100, which joins at Beijing, and 88.101, which joins at
  Shanghai;
- one enterprise node serving its own prefix 88.100.7;
- one recursive node whose roots are all five top-level nodes.

It then allocates 88.100 (at Beijing) and 88.101 (at Shanghai), once each, and measures how soon
every top-level node answers both; has the secondary nodes join (``idis federation join``, which
writes each site once, at Beijing or Shanghai) and measures the same; allocates the enterprise
prefixes through the enterprise workflow (``idis enterprise apply`` at the secondary
node, ``idis enterprise approve`` by its operator): 88.100.1 hosted by the secondary 88.100,
88.101.5 hosted by the secondary 88.101, and 88.100.7 self-hosted on the enterprise node (in a
build without that workflow, it homes the hosted prefixes and writes the self-hosted prefix
record by hand); registers identifiers under each over the REST API; resolves every one through
the recursive node, checking the answer and the node that gave it, and prints the path the walk
took (``x-idis-source``); and stops Beijing to show that a walk goes on through another root.

Output: a line per step, ✓ or ✗ with what it did and how long it took, a table of the nodes,
and the path of each resolution.  With ``once`` the nodes are then stopped; without it Beijing
is restarted and the federation keeps serving, with curl commands to query it, until Ctrl-C.

Every node is driven through the ``idis`` command line (``sys.executable -m nodes.cli``) and the
HTTP API, exactly as an operator would drive it.  Nothing is written outside a temporary
directory, which is removed afterwards (kept, and named, when a step failed: it holds the logs).
Every child process runs in a session of its own and is stopped on every way out: the end of
the run, a failed step, Ctrl-C, SIGTERM/SIGHUP, and interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, unquote

import httpx
from rich.console import Console
from rich.table import Table

from nodes.demo_cluster import ENTERPRISES, Cluster, Demo, Enterprise, Member
from nodes.demo_output import Hop, StepFailed, Steps, parse_path, print_path
from nodes.federation import basic_auth, site_values
from nodes.processes import (
    PortTaken,
    free_ports,
    wait_ready,
)
from nodes.stats.demo_step import DEMO_ENV as STATS_ENV
from nodes.stats.demo_step import national_statistics

TOP_LEVEL_CITIES = ("Beijing", "Shanghai", "Guangzhou", "Wuhan", "Chongqing")
NATIONAL_PREFIX = "88"
READY_TIMEOUT = 30.0
"""Seconds every node gets to answer ``/healthz`` (the first start compiles bytecode)."""
VISIBLE_TIMEOUT = 3.0
"""Seconds a write at one top-level node gets to be answered by all five: the change log's
poller makes it well under one; less than the 5 s a cached miss would otherwise last."""
HTTP_TIMEOUT = 10.0
PORT_ATTEMPTS = 2


def _plan(demo: Demo) -> None:
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
        cluster.add(city, "top-level", port, serves, national)
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


def _parallel(tasks: Sequence[Callable[[], None]]) -> None:
    """Run ``tasks`` on threads; re-raise the first failure once all have ended."""
    if not tasks:
        return
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks]
    for future in futures:
        future.result()


def _start_nodes(demo: Demo) -> None:
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
        _parallel([top_level, enterprise, lambda: cluster.launch(cluster.members["recursive"])])
        wait_ready([cluster.members[name] for name in first], READY_TIMEOUT)
        notes.append("idis prefix init 88 once (at Beijing), then idis serve at each of the five")
        notes.append("the five share national.db and national.key under the demo directory")


def _allocate(demo: Demo) -> None:
    cluster = demo.cluster
    s100, s101 = demo.secret_paths["0.NA/88.100"], demo.secret_paths["0.NA/88.101"]
    handles = ["0.NA/88.100", "0.NA/88.101"]
    with demo.steps.step("Beijing allocates 88.100, Shanghai allocates 88.101") as notes:
        # Asked before the allocation, each node may cache the "not found": then only its
        # change-log poller makes the new prefix visible there (what the next step measures).
        _ask_everywhere(demo, handles)
        notes.append("asked at all five first: not found (each node remembers that for 5 s)")
        _parallel(
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


def _start_secondaries(demo: Demo) -> None:
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
        _parallel([secondary(name) for name in names])
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


def _enterprise_prefixes(demo: Demo) -> None:
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
        _parallel([apply(e) for e in ENTERPRISES])
        notes.append("idis enterprise apply --node URL PREFIX --name NAME [--self-hosted URL]")
        for e in ENTERPRISES:
            how = f"self-hosted on {e.host}" if e.self_hosted else f"hosted by {e.secondary}"
            notes.append(f"{e.prefix} for {e.name}, {how}: application {ids[e.prefix]}")
    with demo.steps.step("the secondary nodes approve them") as notes:
        _parallel([approve(e) for e in ENTERPRISES])
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
        _parallel([_homing(demo, e) for e in hosted])
        notes.append("no enterprise workflow in this build: idis prefix init 88.100.1")
    title = "the secondary 88.100 points 88.100.7 at the enterprise's own node"
    with demo.steps.step(title) as notes, httpx.Client(timeout=HTTP_TIMEOUT) as client:
        values = site_values(enterprise.url, "enterprise node of 88.100.7")
        response = client.put(
            f"{secondary.url}/api/handles/0.NA/88.100.7",
            json={"values": values},
            auth=basic_auth("300:88.100/ADMIN", demo.secrets["0.NA/88.100"]),
        )
        _expect(response, {200, 201}, "writing 0.NA/88.100.7 at the secondary")
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


def _expect(response: httpx.Response, statuses: set[int], doing: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code not in statuses:
        raise StepFailed(f"{doing}: HTTP {response.status_code} {response.text[:300]}")
    return body


def _register(demo: Demo) -> None:
    count = sum(len(e.suffixes) for e in ENTERPRISES)
    with (
        demo.steps.step(f"register {count} identifiers over the REST API") as notes,
        httpx.Client(timeout=HTTP_TIMEOUT) as client,
    ):
        for enterprise in ENTERPRISES:
            host = demo.member(enterprise.host)
            auth = basic_auth(f"300:{enterprise.prefix}/ADMIN", demo.secrets[enterprise.prefix])
            for suffix in enterprise.suffixes:
                handle = f"{enterprise.prefix}/{suffix}"
                value = {"index": 1, "type": "URL", "data": enterprise.location(suffix)}
                response = client.put(
                    f"{host.url}/api/handles/{quote(handle)}", json=[value], auth=auth
                )
                _expect(response, {201}, f"PUT {handle} at {host.name}")
            notes.append(
                f"{enterprise.prefix}/{{{','.join(enterprise.suffixes)}}} at {host.name} "
                f"as 300:{enterprise.prefix}/ADMIN"
            )


def _resolve(
    demo: Demo,
    client: httpx.Client,
    enterprise: Enterprise,
    suffix: str,
    *,
    fresh: bool = False,
) -> tuple[str, list[Hop]]:
    """Resolve through the recursive node; the raw source and the hops. Checks the answer."""
    handle = f"{enterprise.prefix}/{suffix}"
    recursive = demo.member("recursive")
    response = client.get(
        f"{recursive.url}/api/handles/{quote(handle)}", params={"auth": "true"} if fresh else None
    )
    body = _expect(response, {200}, f"resolving {handle} through the recursive node")
    urls = [v["data"]["value"] for v in body.get("values") or [] if v.get("type") == "URL"]
    if body.get("responseCode") != 1 or urls != [enterprise.location(suffix)]:
        raise StepFailed(f"{handle}: unexpected answer {body}")
    source = response.headers.get("x-idis-source", "")
    return source, parse_path(source, demo.names())


def _resolve_all(demo: Demo) -> None:
    shown: list[tuple[str, str, list[Hop]]] = []
    with (
        demo.steps.step("resolve every identifier through the recursive node") as notes,
        httpx.Client(timeout=HTTP_TIMEOUT) as client,
    ):
        for enterprise in ENTERPRISES:
            for suffix in enterprise.suffixes:
                _source, hops = _resolve(demo, client, enterprise, suffix)
                handle = f"{enterprise.prefix}/{suffix}"
                if hops[-1].node != enterprise.host or hops[-1].handle.upper() != handle.upper():
                    raise StepFailed(f"{handle} was not answered by {enterprise.host}: {hops}")
                shown.append((handle, enterprise.location(suffix), hops))
        notes.append("each answer checked; the last hop is the node serving the prefix")
    demo.console.print(
        "\n[bold]The path each resolution took[/] (x-idis-source of the recursive node):"
    )
    for handle, answer, hops in shown:
        print_path(demo.console, handle, answer, hops)
    demo.console.print()

    with (
        demo.steps.step("ask again: the recursive node answers from memory") as notes,
        httpx.Client(timeout=HTTP_TIMEOUT) as client,
    ):
        first = ENTERPRISES[0]
        source, _hops = _resolve(demo, client, first, first.suffixes[0])
        if unquote(source) != "memory":
            raise StepFailed(f"x-idis-source is {source!r}, expected 'memory'")
        notes.append(f"{first.prefix}/{first.suffixes[0]}: x-idis-source: memory")


def _failover(demo: Demo) -> None:
    beijing = demo.member("Beijing")
    enterprise = ENTERPRISES[0]
    suffix = enterprise.suffixes[1]
    with (
        demo.steps.step("stop Beijing; a fresh walk (auth=true) still resolves") as notes,
        httpx.Client(timeout=HTTP_TIMEOUT) as client,
    ):
        demo.cluster.stop(beijing)
        if beijing.alive():
            raise StepFailed("Beijing did not stop")
        _source, hops = _resolve(demo, client, enterprise, suffix, fresh=True)
        if hops[0] != Hop("Beijing", "", "unreachable") or hops[1].node not in TOP_LEVEL_CITIES:
            raise StepFailed(f"the walk did not move on from Beijing to another root: {hops}")
        notes.append(f"Beijing unreachable, {hops[1].node} answered for 0.NA/{enterprise.prefix}")
    demo.console.print("\n[bold]With Beijing stopped[/], a fresh walk (auth=true):")
    print_path(demo.console, f"{enterprise.prefix}/{suffix}", enterprise.location(suffix), hops)
    demo.console.print()


def _node_table(demo: Demo) -> Table:
    table = Table(title="the demo federation (each node a process of its own)")
    table.add_column("node", style="bold")
    table.add_column("role")
    table.add_column("URL", style="cyan")
    table.add_column("pid", justify="right")
    table.add_column("serves")
    for member in demo.members.values():
        pid = str(member.process.pid) if member.process else "-"
        if member.process is not None and not member.alive():
            pid = "stopped"
        table.add_row(member.name, member.role, member.url, pid, member.serves)
    return table


def _how_to_query(demo: Demo) -> None:
    recursive = demo.member("recursive").url
    top = demo.member("Shanghai").url
    secondary = demo.member("secondary-88.100").url
    demo.console.print(
        "\n[bold]The federation keeps serving. Try:[/]\n"
        f"  curl -D - {recursive}/api/handles/88.100.1/PUMP-0001   "
        "# through the recursive node; see x-idis-source\n"
        f"  curl '{recursive}/api/handles/88.100.7/COIL-002?auth=true&pretty'   "
        "# a fresh walk\n"
        f"  curl {top}/api/handles/0.NA/88.100.1   # a top-level node's 303 referral\n"
        f"  curl {secondary}/api/handles/88.100.7/COIL-002   "
        "# the secondary's 302 referral to the enterprise node\n"
        f"  curl -u federation:{demo.federation_secret} {recursive}/api/stats   "
        "# walks, upstream requests, throttling\n"
        f"  curl {top}/api/national/stats   # national statistics per industry node\n"
        "Press Ctrl-C to stop every node."
    )


def _serve_until_interrupted(demo: Demo) -> None:
    beijing = demo.member("Beijing")
    with demo.steps.step("restart Beijing"):
        demo.cluster.launch(beijing)
        wait_ready([beijing], READY_TIMEOUT)
    demo.serving = True
    demo.console.print(_node_table(demo))
    _how_to_query(demo)
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        for member in demo.members.values():
            if member.process is not None and not member.alive() and member.name not in reported:
                reported.add(member.name)
                demo.console.print(f"[yellow]{member.name} exited:[/]\n{member.log_tail()}")


def _run_steps(demo: Demo, once: bool) -> None:
    _plan(demo)
    _start_nodes(demo)
    _allocate(demo)
    _start_secondaries(demo)
    _enterprise_prefixes(demo)
    demo.console.print(_node_table(demo))
    _register(demo)
    _resolve_all(demo)
    national_statistics(demo)
    _failover(demo)
    if not once:
        _serve_until_interrupted(demo)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(once: bool, console: Console | None = None) -> int:
    """Run the demo (see the module docstring); the process exit code.

    With ``once`` the steps run, the results are printed, every node stops, and the code is 0
    exactly when every step worked (1 otherwise).  Without it, after the steps the federation
    keeps serving until Ctrl-C (or SIGTERM), then stops; 0 then, 1 if a step failed (nothing is
    left serving), 130 if interrupted before the steps finished.
    """
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=120)
    previous = {
        sig: signal.signal(sig, _raise_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    started = time.monotonic()
    try:
        for attempt in range(PORT_ATTEMPTS):
            root = Path(tempfile.mkdtemp(prefix="idis-demo-"))
            cluster = Cluster(root)
            demo = Demo(cluster, Steps(console), console)
            keep = False
            try:
                if attempt == 0:
                    console.print(
                        "[bold]idis demo[/]: a federation of 10 nodes on this machine "
                        f"[dim](files under {root})[/]"
                    )
                _run_steps(demo, once)
            except PortTaken as taken:
                console.print(f"[yellow]{taken}; starting again on other ports[/]")
                continue
            except StepFailed:
                keep = True
                _report_failure(demo)
                return 1
            except KeyboardInterrupt:
                console.print("\n[bold]interrupted[/]: stopping every node")
                return 0 if demo.serving else 130
            finally:
                cluster.close()
                atexit.unregister(cluster.close)
                if not keep:
                    shutil.rmtree(root, ignore_errors=True)
            elapsed = time.monotonic() - started
            console.print(
                f"[bold green]all {demo.steps.passed} steps worked[/] in {elapsed:.1f}s; "
                "every node stopped"
            )
            return 0
        console.print("[red]could not find free ports[/]")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report_failure(demo: Demo) -> None:
    """Say what went wrong: the log of every node that exited, and the last error each node
    still running logged; then where the logs are kept."""
    console = demo.console
    for member in demo.members.values():
        if member.process is None:
            continue
        if not member.alive() and member.name != "Beijing":
            console.print(f"[red]{member.name} exited; its log ends:[/]")
            console.print(member.log_tail(), markup=False, highlight=False)
            continue
        error = _last_traceback(member)
        if error:
            console.print(f"[red]{member.name} logged an error:[/]")
            console.print(error, markup=False, highlight=False)
    console.print(
        f"[bold red]{demo.steps.failed} step failed[/] ({demo.steps.passed} passed); "
        f"logs kept under {demo.cluster.root}"
    )


def _last_traceback(member: Member, lines: int = 12) -> str:
    """The end of the last traceback in ``member``'s log, or ``""``."""
    try:
        text = member.log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    start = text.rfind("Traceback (most recent call last)")
    if start < 0:
        return ""
    return "\n".join(text[start:].splitlines()[-lines:])
