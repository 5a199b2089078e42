"""``GET /api/search``: the identifiers of a prefix found by what they carry (registry/search.py).

Parameters: ``prefix`` and ``type`` (required), then exactly one of ``value`` (exact),
``startsWith`` (the value's beginning) or ``min``/``max`` (inclusive; numbers, dates
``YYYY-MM-DD`` or date-times with a time zone); ``subtree=true`` to include derived prefixes
(``P.X``, public values only); ``pageSize`` (1-1000, default 100) and ``after`` (the ``next``
cursor of the page before).  Credentials (Basic or Bearer) are optional: without them only
publicly readable values match.  Only what data templates declare searchable is searchable:
the values of records naming a template (index 1001) at its enabled items flagged
``"searchable": true``; values of other items and of untemplated records, at 2000 and above or
not, are never found: a search by such a type answers an empty page, not 400 (telling the two
apart would read the prefix's templates on every search).

Answer, in the style of the Handle REST API's listing:
``{"responseCode": 1, "prefix": "88.100.1", "pageSize": 100, "handles": [...], "next": "..."}``
(``next`` only when another page follows).  Bad parameters: 400 with responseCode 4 and a
message; the database down: 503 with responseCode 3.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from nodes.http.bodies import json_response
from nodes.http.openapi import FLAG, operation, param, ref
from nodes.http.params import Query, client_address
from registry.search import Searcher
from resolver.search import MAX_INDEXED_CHARS, MAX_PAGE_SIZE

_TEXT = {"type": "string", "minLength": 1}
SEARCH_PARAMS = [
    param("prefix", _TEXT, required=True, description="e.g. 88.100.1 (handles 88.100.1/...)"),
    param(
        "type",
        _TEXT,
        required=True,
        description="the English key of a template item declared searchable (only those"
        " are indexed: other values are never found)",
    ),
    param("value", {"type": "string", "maxLength": MAX_INDEXED_CHARS}, description="exact"),
    param("startsWith", {"type": "string", "maxLength": MAX_INDEXED_CHARS}),
    param("min", {"type": "string"}, description="number, YYYY-MM-DD or date-time; inclusive"),
    param("max", {"type": "string"}, description="number, YYYY-MM-DD or date-time; inclusive"),
    param("subtree", FLAG, description="also the prefixes derived from it (public values)"),
    param("pageSize", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}),
    param("after", {"type": "string"}, description="the next cursor of the page before"),
]


def search_router(node: Any) -> APIRouter:
    router = APIRouter()
    searcher = Searcher(node.store, node.fetch)

    @router.get(
        "/api/search",
        openapi_extra=operation(
            "Find the handles of a prefix by an attribute's value (exact, prefix or range)",
            params=SEARCH_PARAMS,
            ok=(200, ref("SearchPage")),
            failures=(400,),
            auth=None,
        ),
    )
    async def search(request: Request) -> Response:
        query = Query(request.scope["query_string"])
        identity = None
        if request.headers.get("authorization"):
            identity = await node.authenticator.identify(
                request.headers.get("authorization"), client_address(request.scope)
            )
        page = await searcher.search(query.get, identity)
        body: dict[str, Any] = {
            "responseCode": 1,
            "prefix": page.prefix,
            "pageSize": page.page_size,
            "handles": page.handles,
        }
        if page.next is not None:
            body["next"] = page.next
        return json_response(body)

    return router
