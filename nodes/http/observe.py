"""Counting and logging the HTTP requests that the resolution front passes on.

:class:`Observed` counts the requests behind :class:`nodes.http.resolution.ResolutionFront`
(writes, listings, batches, the web proxy, GS1, the rest), which counts its own resolutions so
that its cached answers carry no wrapper.  :func:`access_log` is the outermost layer, installed
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
    if (
        method in ("GET", "HEAD")
        and not path.startswith(("/api/", "/console/"))
        and path not in NOT_HANDLES
    ):
        return "resolve"  # the web proxy
    return "other"


class StatusOf:
    """Passes an application's messages on to ``send``, keeping the status it answered
    (500 until it answers: what the client gets if it fails first)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class Observed:
    """Counts each HTTP request of ``app`` in ``metrics`` (door, operation, status class,
    duration), or with ``metrics`` None logs it as :func:`access_log` says."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        metrics = self._metrics
        if scope["type"] != "http" or (metrics is not None and not metrics.enabled):
            await self._app(scope, receive, send)
            return
        started = perf_counter()
        seen = StatusOf(send)
        try:
            await self._app(scope, receive, seen)
        finally:
            elapsed = perf_counter() - started
            if metrics is None:
                _log_access(scope, seen.status, elapsed)
            else:
                door = scope.get(DOOR, "rest")
                kind = operation(scope["method"], scope["path"], door)
                metrics.requests[(door, kind, status_class(seen.status), "none")] += 1
                metrics.histogram(door, kind).observe(elapsed)


def access_log(app: ASGIApp) -> ASGIApp:
    """One ``idis.access`` line per HTTP request: method, path, status, duration, source and
    door (native Handle messages POSTed over HTTP are the ``native_http`` door)."""
    return Observed(app, None)


def _log_access(scope: Scope, status: int, elapsed: float) -> None:
    door = scope.get(DOOR, "rest")
    if scope["method"] == "POST" and is_native(scope):
        door = "native_http"
    query = scope["query_string"].decode("latin-1")
    source = client_address(scope)
    access.info(
        "%s %s%s %d %.3f ms from %s door %s",
        scope["method"],
        scope["path"],
        "?" + query if query else "",
        status,
        elapsed * 1000,
        source or "-",
        door,
        extra={
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_seconds": round(elapsed, 6),
            "source": source,
            "door": door,
        },
    )
