"""The GS1-Conformant resolver (standard 1.2) as a raw ASGI layer in front of the HTTP API
(behind the REST resolution front, which passes it every path but ``/api/handles/``).

A GS1 key maps onto the idis identifier ``{IDIS_GS1__PREFIX}/{canonical Digital Link path}``
(``88.100.1/01/09506000134352/10/LOT1``); its links are values of that identifier
(:mod:`resolver.gs1.links`).  A key with no record of its own, at any level of its qualifiers,
may be delegated by its company prefix: ``{IDIS_GS1__PREFIX}/gcp/{company prefix}`` holding a
``GS1.handledBy`` link sends requests there (307, ``rel="gs1:handledBy"``), as does a GS1 prefix
that the registry refers to another site.  Records are read through ``node.resolve``, the same
chain and caches as REST, and what is answered is kept here as rendered bytes, valid while the
generations of every record it was made from stay the same (a write anywhere makes it stale,
as for the REST front's cache) and none of them has expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from nodes.http.errors import http_status
from nodes.metrics import DOOR
from resolver.answers import Answer, Outcome
from resolver.errors import HandleError
from resolver.gs1 import links as gs1links
from resolver.gs1.compressed import decompress, looks_compressed
from resolver.gs1.keys import DigitalLink, InvalidDigitalLink, is_digital_link_path, parse
from resolver.identifiers import fold
from resolver.sites import sites_of

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Any, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

WELL_KNOWN = "/.well-known/gs1resolver"
LINKSET = b"application/linkset+json"
JSON = b"application/json"
CORS: Headers = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
    (b"access-control-allow-headers", b"Accept, Accept-Language"),
    (b"access-control-expose-headers", b"Link, Location, Content-Type"),
]
VARY = (b"vary", b"Accept, Accept-Language")
LINKSET_TYPES = ("linkset", "all")
MAX_ENTRIES = 10_000
"""Rendered answers kept per worker: each is several objects the cycle collector tracks (see
resolver/cache.py for what many of those cost), so they are bounded well below the memory
cache; one evicted is rendered again from it."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Reading:
    """What an answer was made from: each identifier key read and its generation before the
    read, and when the soonest of them expires."""

    keys: tuple[tuple[str, int], ...]
    expires: float


Message = dict[str, Any]
Kept = tuple[tuple[tuple[str, int], ...], float, Message, Message]
"""A kept answer: the :class:`Reading`'s keys and expiry, then its two ASGI messages."""
_EMPTY_BODY: Message = {"type": "http.response.body", "body": b""}


def _messages(response: Response) -> tuple[Message, Message]:
    length = (b"content-length", str(len(response.body)).encode())
    start = {
        "type": "http.response.start",
        "status": response.status,
        "headers": [*response.headers, length],
    }
    return start, {"type": "http.response.body", "body": response.body}


def _header(headers: Headers, name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b""


def _error(status: int, message: str, code: int | None = None) -> Response:
    """An error answer; ``code`` is the Handle or IDIS code behind it, if any (603: the
    prefix's daily resolution quota is spent, answered 429 as on every HTTP door)."""
    fields: dict[str, Any] = {"status": status, "message": message}
    if code is not None:
        fields["code"] = code
    body = orjson.dumps(fields)
    return Response(status, [(b"content-type", JSON), *CORS], body)


class Gs1Front:
    """Answers Digital Link requests and ``/.well-known/gs1resolver``; passes the rest on."""

    def __init__(self, node: Any, app: ASGIApp) -> None:
        self._node = node
        self._app = app
        self._prefix: str = node.settings.gs1.prefix
        self._root: str | None = node.settings.gs1.root
        self._name: str = node.settings.gs1.name
        self._cache: dict[tuple[Any, ...], Kept] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        # The API's paths pass at the cost of one test.
        if scope["type"] != "http" or scope["path"].startswith("/api/"):
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        head = method == "HEAD"
        accept = languages = host = b""
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value
            elif name == b"accept-language":
                languages = value
            elif name == b"host":
                host = value
        # Raw: a value may hold an encoded slash (/10/AB%2FC).
        raw: bytes = scope["raw_path"]
        key = (raw, scope["query_string"], LINKSET in accept, languages, host)
        if head or method == "GET":
            entry = self._cache.get(key)
            if entry is not None:
                keys, expires, start, body = entry
                if expires > time.time() and self._unchanged(keys):
                    scope[DOOR] = "gs1"
                    if not self._admit(keys):
                        refused = self._node.quotas.refusal(keys[0][0])
                        start, body = _messages(_error(429, refused.message, refused.code))
                    await send(start)
                    await send(_EMPTY_BODY if head else body)
                    return
                else:
                    del self._cache[key]
        path = raw.decode("latin-1").split("?", 1)[0]
        ours = path == WELL_KNOWN or is_digital_link_path(path)
        if not ours and not (method in ("GET", "HEAD", "OPTIONS") and looks_compressed(path)):
            await self._app(scope, receive, send)
            return
        scope[DOOR] = "gs1"
        try:
            response = await self._answer(scope, method, path, key)
        except _NotOurs:
            scope[DOOR] = "rest"
            await self._app(scope, receive, send)
            return
        except HandleError as error:  # a quota spent (429), the registry unreachable (503)
            response = _error(http_status(error.code, resolving=True), error.message, error.code)
        except Exception:
            log.exception("GS1 resolution of %r failed", path)
            response = _error(500, "internal error")
        start, body = _messages(response)
        await send(start)
        await send(_EMPTY_BODY if head else body)

    def _admit(self, keys: tuple[tuple[str, int], ...]) -> bool:
        """Count a resolution against the quotas (by the first identifier it reads)."""
        quotas = self._node.quotas
        return quotas is None or not keys or quotas.admit(keys[0][0])

    def _unchanged(self, keys: tuple[tuple[str, int], ...]) -> bool:
        current = self._node.generations.current
        return all(current(k) == generation for k, generation in keys)

    def _keep(self, key: tuple[Any, ...], reading: Reading, response: Response) -> None:
        cache = self._cache
        if key not in cache and len(cache) >= MAX_ENTRIES:
            del cache[next(iter(cache))]
        cache[key] = (reading.keys, reading.expires, *_messages(response))

    # -- answering ----------------------------------------------------------------------------

    async def _answer(self, scope: Scope, method: str, path: str, key: tuple[Any, ...]) -> Response:
        if method not in ("GET", "HEAD", "OPTIONS"):
            response = _error(405, "a GS1 resolver answers GET, HEAD and OPTIONS")
            response.headers.append((b"allow", b"GET, HEAD, OPTIONS"))
            return response
        root = self._root or self._host_root(scope)
        query = scope["query_string"].decode("latin-1")
        extra: list[tuple[str, str]] = []
        compressed = path != WELL_KNOWN and not is_digital_link_path(path)
        if compressed:
            try:
                link = decompress(path, query)
            except InvalidDigitalLink:
                raise _NotOurs from None
            # The standard: expose the uncompressed URI, do not redirect to it.
            extra.append((root + link.path, "owl:sameAs"))
        if method == "OPTIONS":
            return Response(204, [*CORS, (b"allow", b"GET, HEAD, OPTIONS")], b"")
        if path == WELL_KNOWN:
            body = gs1links.description(root, self._name)
            return Response(200, [(b"content-type", JSON), *CORS], body)
        try:
            if not compressed:
                link = parse(path, query)
        except InvalidDigitalLink as error:
            return _error(400, str(error))
        reading, response = await self._resolve(link, root, key, extra)
        self._keep(key, reading, response)
        return response

    def _host_root(self, scope: Scope) -> str:
        host = _header(scope["headers"], b"host").decode("latin-1")
        if host:
            return f"{scope.get('scheme', 'http')}://{host}"
        return str(self._node.settings.site_url)

    async def _read(self, handle: str, keys: list[tuple[str, int]]) -> Answer:
        key = fold(handle)
        if not keys and self._node.quotas is not None:
            self._node.quotas.resolved(key)  # once per request, by its first identifier
        keys.append((key, self._node.generations.current(key)))
        answer: Answer = await self._node.resolve(key, False)
        return answer

    async def _resolve(
        self, link: DigitalLink, root: str, request: tuple[Any, ...], extra: list[tuple[str, str]]
    ) -> tuple[Reading, Response]:
        keys: list[tuple[str, int]] = []
        expires = time.time() + 86400.0
        for level in link.levels():
            answer = await self._read(self._prefix + level.path, keys)
            expires = min(expires, answer.expires)
            if answer.outcome is Outcome.FOUND and answer.record is not None:
                found = gs1links.links_of(answer.record.values)
                if found:
                    response = self._links_response(link, level, found, root, request, extra)
                    return Reading(tuple(keys), expires), response
            elif answer.outcome.is_referral and answer.record is not None:
                # The registry serves this GS1 prefix elsewhere: that resolver handles it.
                sites = sites_of(answer.record.values, derived=True) or sites_of(
                    answer.record.values
                )
                if sites and sites[0].urls:
                    target = sites[0].urls[0].rstrip("/") + link.path
                    return Reading(tuple(keys), expires), _handled_by(target, link, extra)
                break
            elif answer.outcome is Outcome.NOT_HOMED:
                break
        delegated = await self._delegation(link, keys)
        if delegated is not None:
            href, until = delegated
            target = href.rstrip("/") + link.path
            reading = Reading(tuple(keys), min(expires, until))
            return reading, _handled_by(target, link, extra)
        return Reading(tuple(keys), expires), _error(404, f"no links for {link.path}")

    async def _delegation(
        self, link: DigitalLink, keys: list[tuple[str, int]]
    ) -> tuple[str, float] | None:
        """The ``handledBy`` URL of the longest company prefix of the key that has one."""
        candidates = link.company_prefixes()
        answers = await asyncio.gather(
            *(self._read(f"{self._prefix}/gcp/{cp}", keys) for cp in candidates)
        )
        for answer in answers:
            if answer.outcome is Outcome.FOUND and answer.record is not None:
                for found in gs1links.links_of(answer.record.values):
                    if found.term == gs1links.HANDLED_BY:
                        return found.href, answer.expires
        return None

    def _links_response(
        self,
        link: DigitalLink,
        level: DigitalLink,
        found: list[gs1links.Link],
        root: str,
        request: tuple[Any, ...],
        extra: list[tuple[str, str]],
    ) -> Response:
        _, _, wants_linkset, languages, _ = request
        anchor = root + level.path
        params = dict(link.other)
        link_type = params.get("linkType")
        header = gs1links.link_header(found, extra)
        common: Headers = [(b"link", header), VARY, *CORS]
        if (link_type in LINKSET_TYPES) or (wants_linkset and link_type is None):
            body = gs1links.linkset(anchor, found)
            context = f'<{gs1links.JSONLD_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"'
            headers = [
                (b"content-type", LINKSET),
                (b"link", header + b", " + context.encode()),
                VARY,
                *CORS,
            ]
            return Response(200, headers, body)
        term = gs1links.link_type_term(link_type) if link_type else None
        choice = gs1links.choose(
            found,
            term,
            gs1links.accept_languages(languages.decode("latin-1")),
            params.get("context", ""),
        )
        if choice.verdict is gs1links.Verdict.REDIRECT and choice.link is not None:
            target = choice.link.target(link.query())
            location = [(b"location", gs1links.header_url(target).encode())]
            return Response(307, [*location, *common], b"")
        if choice.verdict is gs1links.Verdict.MISSING:
            return _error(404, f"{link.path} has no link of type gs1:{term}")
        body = gs1links.linkset(anchor, list(choice.candidates))
        return Response(300, [(b"content-type", LINKSET), *common], body)


def _handled_by(target: str, link: DigitalLink, extra: list[tuple[str, str]]) -> Response:
    query = link.query(drop=())
    if query:
        target += "?" + query
    header = gs1links.link_header([], [*extra, (target, "gs1:handledBy")])
    location = gs1links.header_url(target).encode()
    return Response(307, [(b"location", location), (b"link", header), VARY, *CORS], b"")


class _NotOurs(Exception):
    """A single path segment that does not decompress: the request belongs to the API."""
