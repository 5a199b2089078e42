"""``GET /api/handles/{handle}``: the resolution hot path, as a raw ASGI layer.

DESIGN.md section 4 measured a framework route at a fifth of what the server can do, so
resolution sits in front of the framework: an anonymous, unfiltered query for a cached handle
is one dict lookup, one shared-memory read and one ``send`` of bytes rendered when the entry
was cached.  Everything else (filters, credentials, misses) takes the general path below, and
every other route falls through to the application behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any
from urllib.parse import quote

from nodes.http.errors import error_status, http_status
from nodes.http.params import Query, client_address, path_text
from nodes.metrics import layer_of, status_class
from registry.authorization import Right, rights
from resolver import render
from resolver.answers import Answer, Outcome
from resolver.chain import reused_source
from resolver.errors import HandleError, HandleNotFound, PrefixNotHomed
from resolver.identifiers import Handle, fold

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Any, Send], Awaitable[None]]

API_PREFIX = "/api/handles/"
_SKIP = len(API_PREFIX)
JSON = b"application/json"
JAVASCRIPT = b"application/javascript"


def _has_credentials(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            return value
    return None


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    *,
    source: bytes = b"",
    content_type: bytes = JSON,
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if source:
        headers.append((b"x-idis-source", source))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def resolve(node: Any, handle: Handle, query: Query) -> Answer:
    """Resolve as the client asked: ``auth`` bypasses caches; ``recursive`` asks a node that
    allows recursion to follow a referral itself rather than return it."""
    fresh = query.flag("auth")
    answer: Answer = await node.resolve(handle.key, fresh)
    if answer.outcome.is_referral and node.walker is not None and query.flag("recursive"):
        answer = await node.walker(handle.key, fresh)
    return answer


def source_header(answer: Answer) -> bytes:
    # Header values must be ASCII; a walk's path may name non-ASCII handles.
    return quote(answer.source, safe=" :/->()").encode("ascii")


def answer_or_raise(answer: Answer, handle: str) -> Answer:
    """The answer if it found the handle, else the error the protocol names for it."""
    if answer.outcome is Outcome.NOT_FOUND:
        raise HandleNotFound("handle not found", handle=handle)
    if answer.outcome is Outcome.NOT_HOMED:
        raise PrefixNotHomed("prefix doesn't live here", handle=handle)
    if answer.outcome.is_referral:
        holder = answer.record.handle if answer.record else "another node"
        raise PrefixNotHomed(f"prefix is served elsewhere: see {holder}", handle=handle)
    return answer


_EMPTY_BODY = {"type": "http.response.body", "body": b""}
_HOT = ("rest", "resolve", "2xx", "memory")

Hot = tuple[str, int, float, dict[str, Any], dict[str, Any]]
"""A hot answer: ``(key, generation, expires, start message, body message)``."""

HOT_ENTRIES = 4096
"""How many hot answers a worker keeps.  Unlike the memory cache's entries (resolver/cache.py),
each is several objects the cycle collector tracks, so they are few: popular handles take
them, and one evicted is kept again on its next request, from the memory cache."""


class ResolutionFront:
    """Serves resolutions itself and passes every other request to ``app``.

    An anonymous query without parameters for a handle cached in memory is answered from
    ``_hot``: keyed by the raw request path, the two ASGI messages of its answer, built once,
    sent while the memory cache's entry would still be served (same generation of the key,
    not expired).  That is a dict lookup, a generation read and two ``send`` calls: the
    rest of the work (decoding the path, folding it, the cache's own checks, building the
    headers) cost as much again as uvicorn's own work for the request (loadtests/README.md).
    """

    def __init__(self, node: Any, app: ASGIApp) -> None:
        self._node = node
        self._app = app
        self._hot: dict[bytes, Hot] = {}
        self._current = node.generations.current
        self._quotas = node.quotas
        metrics = node.metrics
        self._counting = metrics.enabled
        self._requests = metrics.requests
        self._latency = metrics.histogram("rest", "resolve")
        self.hot_answers = 0
        """Answers sent from ``_hot``: one integer addition each, untimed (a pair of clock
        reads and a histogram update cost ten times as much, about 2% of such a request);
        the metrics count them at snapshot time (:meth:`nodes.metrics.Metrics.untimed`)."""
        if metrics.enabled:
            metrics.untimed("rest", "resolve", _HOT, lambda: self.hot_answers)

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self._app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        anonymous = not scope["query_string"] and not _has_credentials(scope["headers"])
        if anonymous:
            hot = self._hot.get(scope["raw_path"])
            if hot is not None:
                key, generation, expires, start, message = hot
                if generation == self._current(key) and expires > time.time():
                    # A refusal is noted (and answered) by the path below: not twice.
                    if self._quotas is None or self._quotas.admit(key, note=False):
                        await send(start)
                        await send(_EMPTY_BODY if head else message)
                        self.hot_answers += 1
                        return
                    # Refused by a quota: the path below says so.
                else:
                    del self._hot[scope["raw_path"]]
        started = perf_counter()
        status, layer = await self._answer(scope, send, head, anonymous)
        if self._counting:
            self._requests[("rest", "resolve", status_class(status), layer)] += 1
            self._latency.observe(perf_counter() - started)

    async def _answer(
        self, scope: Scope, send: Send, head: bool, anonymous: bool
    ) -> tuple[int, str]:
        """Answer a resolution the hot answers lack; return its status and the layer that
        answered (``none`` for an error before any did)."""
        text = ""
        try:
            text = path_text(scope, _SKIP)
            if anonymous:
                key = fold(text)
                if self._quotas is not None:
                    self._quotas.resolved(key)
                hit = self._node.cache.public_body(key, text)
                if hit is not None:
                    body, source, generation, expires = hit
                    served = reused_source(source, "memory").encode()
                    self._keep(scope["raw_path"], key, generation, expires, body, served)
                    await send_body(send, 200, body, source=served, head=head)
                    return 200, "memory"
            return await self._general(scope, send, text, head, counted=anonymous)
        except HandleError as error:
            body = render.error(error.code, error.message, error.handle or text or None)
            status, headers = error_status(error, resolving=True)
            extra = [(k.encode(), v.encode()) for k, v in headers.items()]
            await send_body(send, status, body, head=head, extra=extra)
            return status, "none"
        except Exception:
            log.exception("resolution of %r failed", text)
            await send_body(send, 500, render.error(2, "internal error", text or None), head=head)
            return 500, "none"

    def _keep(
        self, path: bytes, key: str, generation: int, expires: float, body: bytes, source: bytes
    ) -> None:
        hot = self._hot
        if path not in hot and len(hot) >= HOT_ENTRIES:
            del hot[next(iter(hot))]  # the oldest, as the memory cache evicts
        headers = [
            (b"content-type", JSON),
            (b"content-length", str(len(body)).encode()),
            (b"x-idis-source", source),
        ]
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        hot[path] = (key, generation, expires, start, {"type": "http.response.body", "body": body})

    async def _general(
        self, scope: Scope, send: Send, text: str, head: bool, *, counted: bool
    ) -> tuple[int, str]:
        """Any resolution; ``counted``: the quotas counted it already.  Its status and the
        layer that answered."""
        node = self._node
        handle = Handle.parse(text)
        query = Query(scope["query_string"])
        identity = await node.authenticator.identify(
            (_has_credentials(scope["headers"]) or b"").decode("latin-1") or None,
            client_address(scope),
        )
        if not counted and self._quotas is not None:
            self._quotas.resolved(handle.key, identity)
        answer = await resolve(node, handle, query)
        pretty = query.flag("pretty")
        if answer.outcome.is_referral:
            body = render.referral(handle.text, answer.outcome, answer.record, pretty=pretty)
            await send_body(send, 200, body, source=source_header(answer), head=head)
            return 200, layer_of(answer.source)
        record = answer_or_raise(answer, handle.text).record
        include_private = False
        if identity is not None and not query.flag("publicOnly"):
            granted = await rights(identity, record, node.fetch)
            include_private = bool(granted & Right.READ_VALUE)
        values = render.select(
            record.values,
            types=query.all("type"),
            indexes=query.ints("index"),
            include_private=include_private,
        )
        body = render.resolution(handle.text, values, pretty=pretty)
        content_type = JSON
        callback = query.callback()
        if callback:
            body = callback.encode() + b"(" + body + b");"
            content_type = JAVASCRIPT
        status = http_status(1 if values else 200, resolving=True)
        await send_body(
            send, status, body, source=source_header(answer), content_type=content_type, head=head
        )
        return status, layer_of(answer.source)
