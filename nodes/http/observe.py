"""Counting and logging the HTTP requests that the resolution front passes on.

:class:`Observed` counts the requests behind :class:`nodes.http.resolution.ResolutionFront`
(writes, listings, batches, the web proxy, GS1, the rest), which counts its own resolutions so
that its cached answers carry no wrapper.  :class:`AccessLog` is the outermost layer, installed
only with ``IDIS_ACCESS_LOG=true``: off, it costs nothing at all.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from time import perf_counter
from typing import Any

from nodes.handle.server import is_native
from nodes.http.params import client_address
from nodes.http.resolution import API_PREFIX, ASGIApp, Scope, Send
from nodes.metrics import DOOR, Metrics, status_class

access = logging.getLogger("idis.access")

NOT_HANDLES = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/console"}
)
"""Paths of GET routes that the web proxy's catch-all (``GET /{handle}``) does not take."""


def operation(method: str, path: str, door: str) -> str:
    """The ``operation`` label of a request: ``resolve``, ``write``, ``batch``, ``list`` or
    ``other`` (a bounded set, whatever the client sends)."""
    if door != "rest":
        return "resolve"
    if path.startswith(API_PREFIX):
        return "write" if method in ("PUT", "DELETE") else "other"
    if path == "/api/batch":
        return "batch"
    if path == "/api/handles":
        return "list"
    if method in ("GET", "HEAD") and not path.startswith("/api/") and path not in NOT_HANDLES:
        return "resolve"  # the web proxy
    return "other"


class Observed:
    """Counts each request of ``app``: door, operation, status class, and its duration."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] != "http" or not self._metrics.enabled:
            await self._app(scope, receive, send)
            return
        started = perf_counter()
        status = [500]

        async def seen(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, seen)
        finally:
            door = scope.get(DOOR, "rest")
            kind = operation(scope["method"], scope["path"], door)
            metrics = self._metrics
            metrics.requests[(door, kind, status_class(status[0]), "none")] += 1
            metrics.histogram(door, kind).observe(perf_counter() - started)


class AccessLog:
    """One ``idis.access`` line per HTTP request: method, path, status, duration, source and
    door.  Native Handle messages POSTed over HTTP are the ``native_http`` door."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = perf_counter()
        status = [0]

        async def seen(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, seen)
        finally:
            door = scope.get(DOOR, "rest")
            if scope["method"] == "POST" and is_native(scope):
                door = "native_http"
            path = scope["path"] + ("?" if scope["query_string"] else "")
            access.info(
                "%s %s%s %d %.3f ms from %s door %s",
                scope["method"],
                path,
                scope["query_string"].decode("latin-1"),
                status[0],
                (perf_counter() - started) * 1000,
                client_address(scope) or "-",
                door,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status[0],
                    "duration_seconds": round(perf_counter() - started, 6),
                    "source": client_address(scope),
                    "door": door,
                },
            )
