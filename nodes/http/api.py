"""The Handle REST API's writes and listings, the batch endpoint and the web proxy (FastAPI).

Resolution (``GET /api/handles/{handle}``) is served in front of this application by
:class:`nodes.http.resolution.ResolutionFront`.  Bodies are read raw and parsed by the core, so
that every malformed input gets a Handle response code rather than a framework's 422.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from nodes.bootstrap import NATIONAL_ROLES
from nodes.changefeed import following
from nodes.console.routes import console_router
from nodes.console.watch import watching
from nodes.dns.server import serving_dns
from nodes.http.access import require_operator
from nodes.http.bodies import json_response, read_json
from nodes.http.enterprise_api import enterprise_router
from nodes.http.errors import error_status
from nodes.http.health import health_router, observe_member
from nodes.http.openapi import (
    FLAG,
    HANDLE,
    INDEXES,
    LISTING_PARAMS,
    TYPES,
    operation,
    operators_operation,
    param,
    ref,
)
from nodes.http.openapi import install as install_docs
from nodes.http.params import Query, client_address, path_text
from nodes.http.proxy import alias_target, append_to, choose_location
from nodes.http.replication_api import replication_router
from nodes.http.resolution import answer_or_raise, resolve
from nodes.http.search_api import search_router
from nodes.http.tokens_api import tokens_router
from nodes.metrics import NodeCollector, count_batch, registry
from nodes.mirror import mirroring
from nodes.snms.api import snms_router
from nodes.snms.search import snms_search_router
from nodes.stats.national import national_router
from nodes.stats.reporter import reporting
from registry.authentication import sealed_secret
from registry.service import BatchItem
from registry.stores.feed import SqlFeed
from registry.stores.outage import Outage, unavailable
from registry.stores.usage import SqlNational
from resolver import render
from resolver.codecs.json_api import parse_values
from resolver.errors import (
    AuthenticationNeeded,
    HandleError,
    InvalidHandle,
    InvalidValue,
    ProtocolError,
    RecursionTooDeep,
)
from resolver.identifiers import Handle
from resolver.values import Ref

log = logging.getLogger(__name__)

MAX_ALIAS_HOPS = 5
UNGUARDED = Outage("a database")
"""Outages met by stores that do not guard themselves (see registry/stores/outage.py)."""


def _batch_items(raw: Any, now: int) -> list[BatchItem]:
    if isinstance(raw, dict):
        raw = raw.get("handles")
    if not isinstance(raw, list):
        raise InvalidValue('a batch is {"handles": [{"handle": ..., "values": [...]}, ...]}')
    items = []
    for entry in raw:
        text = entry.get("handle") if isinstance(entry, dict) else None
        try:
            if not isinstance(text, str):
                raise InvalidHandle("item has no handle")
            handle = Handle.parse(text)
            values = parse_values(entry.get("values"), now)
            items.append(BatchItem(handle, values, text=text))
        except HandleError as error:
            items.append(BatchItem(None, (), error, text if isinstance(text, str) else ""))
    return items


def create_api(node: Any) -> FastAPI:
    """The FastAPI application of one node (``node`` is a :class:`nodes.bootstrap.Node`)."""

    feed = SqlFeed(node.store)
    national = None
    if node.settings.role in NATIONAL_ROLES:
        national = SqlNational(node.settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The change-log follower, the mirror and the DNS front end stop before the node closes.
        async with (
            following(node, app),
            mirroring(node, feed, app),
            serving_dns(node),
            reporting(node),
            watching(node, app),
        ):
            yield
        if national is not None:
            await national.close()
        await node.close()

    app = FastAPI(title="idis", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    install_docs(app)
    registrar = node.registrar
    limit = node.settings.max_body_bytes

    async def identify(request: Request, required: bool = True) -> Ref | None:
        identity: Ref | None = await node.authenticator.identify(
            request.headers.get("authorization"), client_address(request.scope)
        )
        if required and identity is None:
            raise AuthenticationNeeded("this operation needs authentication")
        return identity

    @app.exception_handler(HandleError)
    async def handle_error(request: Request, error: HandleError) -> Response:
        handle = error.handle
        if handle is None and request.scope["path"].startswith("/api/handles/"):
            # Every answer about a handle names it, errors included: pyhandle's delete_handle
            # reads "handle" before it looks at the status (a 403 would be a KeyError there).
            with contextlib.suppress(HandleError):
                handle = path_text(request.scope, len("/api/handles/")) or None
        body = render.error(error.code, error.message, handle)
        status, headers = error_status(error)
        return Response(body, status, headers, "application/json")

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, error: ClientDisconnect) -> Response:
        # The client left, or the server refused its body (nodes/http/limits.py) and answered
        # already: nothing to answer, nothing went wrong here.
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        if unavailable(error):  # a store not guarded itself: still code 3, logged once
            return await handle_error(request, UNGUARDED.failed(error))
        log.exception("%s %s failed", request.method, request.url.path)
        return Response(render.error(2, "internal error"), 500, media_type="application/json")

    app.include_router(health_router(node))

    @app.put(
        "/api/handles/{handle:path}",
        openapi_extra=operation(
            "Create or replace a handle's values, or mint a suffix",
            params=[
                HANDLE,
                param("overwrite", FLAG),
                INDEXES,
                param("mintNewSuffix", FLAG, description="the handle ends in '/'"),
            ],
            body=ref("Values"),
            ok=(200, ref("Written")),
            failures=(400, 401, 403, 404, 409, 413),
            auth=True,
        ),
    )
    async def put_handle(request: Request) -> Response:
        identity = await identify(request)
        text = path_text(request.scope, len("/api/handles/"))
        query = Query(request.scope["query_string"])
        values = parse_values(await read_json(request, limit), int(time.time()))
        if query.flag("mintNewSuffix"):
            if not text.endswith("/"):
                raise InvalidHandle("mintNewSuffix needs a handle ending in '/'", handle=text)
            prefix = Handle.parse(text, allow_empty_suffix=True)
            result = await registrar.mint(prefix, values, identity)
        else:
            result = await registrar.put(
                Handle.parse(text),
                values,
                identity,
                overwrite=query.flag("overwrite", True),
                indexes=query.indexes(),
            )
        return json_response(
            {"responseCode": 1, "handle": result.handle}, 201 if result.created else 200
        )

    @app.delete(
        "/api/handles/{handle:path}",
        openapi_extra=operation(
            "Delete a handle, or some of its values (?index=)",
            params=[HANDLE, INDEXES],
            ok=(200, ref("Written")),
            failures=(400, 401, 403, 404),
            auth=True,
        ),
    )
    async def delete_handle(request: Request) -> Response:
        identity = await identify(request)
        handle = Handle.parse(path_text(request.scope, len("/api/handles/")))
        await registrar.delete(handle, identity, Query(request.scope["query_string"]).indexes())
        return json_response({"responseCode": 1, "handle": handle.text})

    @app.get(
        "/api/handles",
        openapi_extra=operation(
            "List the handles under a prefix",
            params=LISTING_PARAMS,
            ok=(200, ref("Listing")),
            failures=(400, 401, 403),
            auth=True,
        ),
    )
    async def list_handles(request: Request) -> Response:
        query = Query(request.scope["query_string"])
        prefix = query.get("prefix")
        if not prefix:
            raise ProtocolError("listing needs ?prefix=")
        identity = await identify(request)
        page, size = query.int("page", 0, high=2**31 - 1), query.int("pageSize", 1000)
        total, handles = await registrar.list_handles(prefix, identity, page, size)
        return json_response(
            {
                "responseCode": 1,
                "prefix": prefix,
                # Handle.Net writes the count as a string; clients written for it expect that.
                "totalCount": str(total),
                "page": page,
                "pageSize": size,
                "handles": handles,
            }
        )

    @app.get(
        "/api/prefixes",
        openapi_extra=operation("The prefixes homed here", ok=(200, ref("Object")), auth=False),
    )
    async def prefixes() -> Response:
        return json_response({"responseCode": 1, "prefixes": await registrar.homed_prefixes()})

    @app.post(
        "/api/batch",
        openapi_extra=operation(
            "Write up to 2000 handles, one result each",
            params=[param("overwrite", FLAG)],
            body=ref("Batch"),
            ok=(200, ref("BatchResults")),
            failures=(400, 401, 403, 413),
            auth=True,
        ),
    )
    async def batch(request: Request) -> Response:
        """Up to 2000 handles: ``{"handles": [{"handle", "values"}]}``; one result each."""
        identity = await identify(request)
        query = Query(request.scope["query_string"])
        items = _batch_items(await read_json(request, limit), int(time.time()))
        results = await registrar.batch(items, identity, overwrite=query.flag("overwrite", True))
        out = []
        count_batch(node.metrics, (r.code for r in results))
        for r in results:
            item: dict[str, Any] = {"handle": r.handle, "responseCode": r.code, "status": r.status}
            if r.message:
                item["message"] = r.message
            out.append(item)
        return json_response({"responseCode": 1, "results": out})

    async def operator(request: Request) -> None:
        await require_operator(node, request)

    @app.get(
        "/api/stats",
        openapi_extra=operators_operation(
            "The node's counters, summed over its workers (operators: an administrator here or "
            "the federation secret)"
        ),
    )
    async def stats(request: Request) -> Response:
        """The node's counters summed over its workers, from the snapshots ``/metrics`` shows
        (caches, coalesced walks, upstream requests, throttling); for operators only
        (nodes/http/access.py)."""
        await operator(request)
        await observe_member(node)  # as /metrics does: the two show the same
        return json_response({"responseCode": 1, **node.stats()})

    app.include_router(
        replication_router(
            feed,
            name=node.settings.name,
            secret=node.settings.federation.secret,
            throttle=node.throttle,
            guard=operator,
        )
    )

    scrape = registry(NodeCollector(node.metrics))

    @app.get(
        "/metrics",
        openapi_extra=operation(
            "Prometheus metrics of the node, summed over its workers",
            ok=(200, {"type": "string"}),
            auth=False,
        ),
    )
    async def metrics() -> Response:
        """Prometheus text format (nodes/metrics.py); served before the web proxy's route."""
        await observe_member(node)
        return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", openapi_extra=operation("This node", ok=(200, ref("Object")), auth=False))
    async def about() -> Response:
        settings = node.settings
        return json_response({"name": settings.name, "role": settings.role, "api": "/api/handles/"})

    # Routers go before the web proxy, whose route catches every GET.
    app.include_router(enterprise_router(node))
    app.include_router(tokens_router(node))
    if national is not None:
        app.include_router(national_router(node, national))
    if node.settings.console.enabled:
        app.include_router(console_router(node, app))
    app.include_router(search_router(node))
    app.include_router(snms_search_router(node))
    # The /v1 login checks a digest of the identity's secret: the sealed secret is opened.
    app.include_router(snms_router(node, partial(sealed_secret, node.fetch)))

    @app.get(
        "/{handle:path}",
        openapi_extra=operation(
            "The web proxy: a redirect to the handle's URL, or its values",
            params=[
                HANDLE,
                TYPES,
                INDEXES,
                param("noredirect", FLAG),
                param("urlappend", {"type": "string"}, description="appended to the location"),
                param("auth", FLAG),
            ],
            ok=(200, ref("Resolution")),
            failures=(400, 404),
            auth=False,
        ),
        responses={302: {"description": "to the handle's URL"}},
    )
    async def proxy(request: Request) -> Response:
        """The web proxy: 302 to the handle's location, or its values with ``noredirect``."""
        query = Query(request.scope["query_string"])
        handle = Handle.parse(path_text(request.scope, 1))
        if node.quotas is not None:  # a resolution like any other door's (once per request)
            node.quotas.resolved(handle.key)
        answer = answer_or_raise(await resolve(node, handle, query), handle.text)
        for _ in range(MAX_ALIAS_HOPS + 1):
            target = alias_target(answer.record.values)
            if target is None:
                break
            handle = Handle.parse(target)
            answer = answer_or_raise(await resolve(node, handle, query), handle.text)
        else:
            raise RecursionTooDeep(f"more than {MAX_ALIAS_HOPS} HS_ALIAS hops", handle=handle.text)
        values = render.select(
            answer.record.values, types=query.all("type"), indexes=query.ints("index")
        )
        schemes = node.settings.redirect_schemes
        location = None if query.get("noredirect") is not None else choose_location(values, schemes)
        if location is None:
            body = render.resolution(handle.text, values, pretty=True)
            return Response(body, 200, media_type="application/json")
        location = append_to(location, query.get("urlappend") or "", schemes)
        return RedirectResponse(location, status_code=302)

    return app
