"""Using ``idis demo``'s federation once it is built (see nodes/demo.py): identifiers
registered over the REST API, resolved through the recursive node (each answer and its path
checked), and a walk that goes on when Beijing, one of its roots, is stopped.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

import httpx

from nodes.demo_build import expect
from nodes.demo_cluster import ENTERPRISES, HTTP_TIMEOUT, TOP_LEVEL_CITIES, Demo, Enterprise
from nodes.demo_output import Hop, StepFailed, parse_path, print_path
from nodes.federation import basic_auth


def register(demo: Demo) -> None:
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
                expect(response, {201}, f"PUT {handle} at {host.name}")
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
    body = expect(response, {200}, f"resolving {handle} through the recursive node")
    urls = [v["data"]["value"] for v in body.get("values") or [] if v.get("type") == "URL"]
    if body.get("responseCode") != 1 or urls != [enterprise.location(suffix)]:
        raise StepFailed(f"{handle}: unexpected answer {body}")
    source = response.headers.get("x-idis-source", "")
    return source, parse_path(source, demo.names())


def resolve_all(demo: Demo) -> None:
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


def failover(demo: Demo) -> None:
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
