"""``/console`` (the page and its assets) and ``GET /api/console`` (what the page shows);
both answer ``HEAD`` too.

The page is static: HTML, CSS and one small script shipped in this package
(``nodes/console/static/``), served by the node itself, with no CDN and no build step.  The
script polls ``/api/console`` every ``refresh`` seconds, derives request rates from the
counters between two polls, and fetches ``/api/national/stats`` where the node serves it.

``GET /api/console`` answers from memory: the node's counters summed over its workers (the
snapshots ``/metrics`` reads) and what the worker's :class:`nodes.console.watch.Watch` last saw.
Both are read-only; with ``IDIS_CONSOLE__AUTH=true`` both need an operator's credentials
(nodes/http/access.py), otherwise they are as open as ``/metrics``.
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from nodes.bootstrap import NATIONAL_ROLES
from nodes.console.watch import Watch, iso
from nodes.http.access import require_operator
from nodes.http.bodies import json_response
from nodes.http.openapi import operation, ref
from nodes.metrics import REQUESTS, totals

STATIC = files("nodes.console") / "static"
ASSETS = "/console/assets"
NATIONAL_STATS = "/api/national/stats"

PAGE_OPERATION = {
    "summary": "The federation console: a live page of this node and what it knows",
    "responses": {
        "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}
    },
    "security": [{}, {"basic": []}],
}
"""``/console``'s OpenAPI (HTML, not the JSON :func:`operation` describes)."""
STATE_OPERATION = operation(
    "What the console shows: this node, its traffic and caches, its upstreams, and on "
    "the national tier its sites, leader, takeovers and delegated prefixes",
    ok=(200, ref("Object")),
    failures=(401, 403),
    auth=None,
)
"""``/api/console``'s OpenAPI."""


def traffic(sums: dict[str, dict[tuple[str, ...], float]]) -> dict[str, Any]:
    """Request counters, for rates between polls: totals by door, layer and outcome."""

    def total(name: str) -> int:
        return int(sum(sums.get(name, {}).values()))

    by: dict[str, dict[str, int]] = {"door": {}, "layer": {}, "outcome": {}, "answered": {}}
    for (door, kind_of, outcome, layer), count in sums.get(REQUESTS, {}).items():
        labels = [("door", door), ("layer", layer), ("outcome", outcome)]
        if kind_of == "resolve" and layer != "none":
            labels.append(("answered", layer))
        for kind, label in labels:
            by[kind][label] = by[kind].get(label, 0) + int(count)
    return {
        "requests": total(REQUESTS),
        "byDoor": by["door"],
        "byLayer": by["layer"],
        "byOutcome": by["outcome"],
        # Resolutions by the layer that answered them, on every door: the hot answers of the
        # REST front count as memory, though the chain's own counters (caches) never see them.
        "resolvedBy": by["answered"],
        "walks": total("idis_walks"),
        "upstreamRequests": total("idis_upstream_requests"),
        "upstreamFailures": total("idis_upstream_failures"),
        "authenticationFailures": total("idis_authentication_failures"),
        "throttled": total("idis_throttle_refused"),
        "quotaRefusals": total("idis_quota_refusals"),
    }


def caches(sums: dict[str, dict[tuple[str, ...], float]]) -> list[dict[str, Any]]:
    """Hits, misses, hit ratio (None before any lookup) and entries of each cache layer of the
    resolution chain (lookups that got past the REST front's hot answers)."""
    hits, misses = sums.get("idis_cache_hits", {}), sums.get("idis_cache_misses", {})
    entries = sums.get("idis_cache_entries", {})
    found = []
    for (layer,) in sorted({*hits, *misses, *entries}):
        hit, miss = int(hits.get((layer,), 0)), int(misses.get((layer,), 0))
        count = entries.get((layer,))
        found.append(
            {
                "layer": layer,
                "hits": hit,
                "misses": miss,
                "ratio": round(hit / (hit + miss), 4) if hit + miss else None,
                "entries": None if count is None else int(count),
            }
        )
    return found


def console_state(node: Any, watch: Watch, started: float) -> dict[str, Any]:
    """The body of ``GET /api/console`` (its keys are listed in the README's console section)."""
    settings = node.settings
    sums = totals(node.metrics.snapshots())
    health = watch.health or {"ready": None, "database": None, "checked": None}
    redis = "off" if node.shared is None else ("down" if node.shared.down else "up")
    probes = watch.probes
    upstreams = [
        {"kind": "mirror" if url == (settings.mirror.source or "").rstrip("/") else "top-level"}
        | probes.get(url, {"url": url, "state": "unknown"})
        for url in watch.upstream_urls
    ]
    delegations = None
    if watch.delegations is not None:
        delegations = [
            d | {"sites": [probes.get(u, {"url": u, "state": "unknown"}) for u in d["urls"]]}
            for d in watch.delegations
        ]
    now = time.time()
    return {
        "responseCode": 1,
        "now": round(now, 3),
        "time": iso(now),
        "refresh": watch.refresh,
        "node": {
            "name": settings.name,
            "role": settings.role,
            "siteUrl": settings.site_url,
            "uptime": round(time.monotonic() - started, 1),
            "workers": int(sum(sums.get("idis_workers", {}).values())),
            "redis": redis,
            "homed": watch.homed,
            "status": {True: "ready", False: "unavailable", None: "unknown"}[health["ready"]],
            "database": health["database"],
            "checked": health["checked"],
        },
        "traffic": traffic(sums),
        "caches": caches(sums),
        "upstreams": upstreams,
        "sites": [probes.get(url, {"url": url, "state": "unknown"}) for url in watch.site_urls],
        "national": watch.tier,
        "delegations": delegations,
        "nationalStats": NATIONAL_STATS if settings.role in NATIONAL_ROLES else None,
    }


def console_router(node: Any, app: FastAPI) -> APIRouter:
    """The console's routes on ``app`` (its assets are mounted on ``app`` itself)."""
    router = APIRouter()
    started = time.monotonic()
    page = (STATIC / "console.html").read_bytes()
    app.mount(ASSETS, StaticFiles(directory=str(STATIC)), name="console")

    async def guard(request: Request) -> None:
        if node.settings.console.auth:
            await require_operator(node, request)

    @router.get("/console", openapi_extra=PAGE_OPERATION, response_class=HTMLResponse)
    async def console_page(request: Request) -> Response:
        await guard(request)
        # The page's script and style are the node's own: nothing else may run or load.
        headers = {
            "content-security-policy": "default-src 'self'; img-src 'self' data:;"
            " frame-ancestors 'none'",
            "cache-control": "no-cache",
        }
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    @router.get("/api/console", openapi_extra=STATE_OPERATION)
    async def console_json(request: Request) -> Response:
        await guard(request)
        watch: Watch = request.app.state.console
        await watch.watched()
        return json_response(console_state(node, watch, started))

    # HEAD as the resolution doors and the assets answer it (monitors and link checkers probe
    # pages with it): the GET's status and headers, the server drops the body.  Routes of their
    # own, so that each method has an operation id of its own in the OpenAPI.
    router.add_api_route(
        "/console",
        console_page,
        methods=["HEAD"],
        name="console_page_head",
        openapi_extra=PAGE_OPERATION,
        response_class=HTMLResponse,
    )
    router.add_api_route(
        "/api/console",
        console_json,
        methods=["HEAD"],
        name="console_json_head",
        openapi_extra=STATE_OPERATION,
    )
    return router
