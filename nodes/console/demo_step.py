"""The demo's console step (``idis demo``, nodes/demo.py).

Every top-level node of the demo serves the federation console (nodes/console/) and is told the
other four sites (:func:`console_env`).  The step asks Beijing's console what it shows, as the
page would, until it lists the tier's other sites ready and the delegated prefixes 88.100 and
88.101, and until the national figures it points the page at answer with both industry nodes;
then it prints the console's URL for a browser (and for a wall screen).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from nodes.demo_cluster import HTTP_TIMEOUT, Demo
from nodes.demo_output import StepFailed

TIMEOUT = 15.0
"""Seconds for the console to see every site ready (its look runs at the first request)."""
DELEGATED = ("88.100", "88.101")


def console_env(city: str, urls: Mapping[str, str]) -> dict[str, str]:
    """The console settings of the top-level node ``city``: the other sites of the tier
    (``urls``: city → URL), shown with their readiness on its console."""
    others = [url for name, url in urls.items() if name != city]
    return {"IDIS_CONSOLE__SITES": json.dumps(others)}


def console_url(demo: Demo, top: str = "Beijing") -> str:
    return f"{demo.member(top).url}/console"


def _missing(body: dict[str, Any], sites: set[str]) -> list[str]:
    """What the console's answer lacks yet, in words (nothing when it shows it all)."""
    ready = {s.get("name") for s in body.get("sites") or [] if s.get("state") == "ready"}
    delegated = {d.get("prefix") for d in body.get("delegations") or []}
    missing = [f"site {name} ready" for name in sorted(sites - ready)]
    missing += [f"delegation {p}" for p in DELEGATED if p not in delegated]
    if not body.get("nationalStats"):
        missing.append("the national figures")
    return missing


def federation_console(demo: Demo, top: str = "Beijing") -> None:
    """The step (see the module docstring) at the top-level node ``top``."""
    url = demo.member(top).url
    sites = {m.name for m in demo.members.values() if m.role == "top-level"} - {top}
    with (
        demo.steps.step(f"{top}'s console shows the federation and the national figures") as notes,
        httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as client,
    ):
        page = client.get("/console")
        if page.status_code != 200 or "text/html" not in page.headers.get("content-type", ""):
            raise StepFailed(f"GET /console: HTTP {page.status_code} {page.text[:200]}")
        deadline = time.monotonic() + TIMEOUT
        while True:
            body = client.get("/api/console").json()
            missing = _missing(body, sites)
            if not missing:
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"{top}'s console does not show {', '.join(missing)}")
            time.sleep(0.2)
        figures = client.get(body["nationalStats"])
        shown = {node.get("prefix") for node in figures.json().get("nodes") or []}
        if figures.status_code != 200 or not set(DELEGATED) <= shown:
            raise StepFailed(f"the console's {body['nationalStats']} answers {figures.text[:300]}")
        notes.append(
            f"GET /api/console: {len(sites)} other sites ready, 88.100 and 88.101 delegated"
        )
        notes.append(f"the page draws {body['nationalStats']}: both industry nodes' counts")
    demo.console.print(
        f"[bold]The federation console[/] of {top}: [cyan]{url}/console[/] "
        f"[dim](a wall screen: {url}/console?wall=1)[/]"
    )
