"""``GET /identityv2/data/search``: the REST search (``GET /api/search``, registry/search.py)
in SNMS terms.

The deployed SNMS API has no search (DESIGN.md section 2.3); this route takes the REST
route's parameters (``prefix``, ``type``, ``value`` | ``startsWith`` | ``min``/``max``,
``subtree``, ``pageSize``, ``after``) and answers as the other SNMS routes do:
``{"status": 1, "message": "success", "data": {"prefix", "pageSize", "handles": [...],
"next"?}}``; bad parameters are status -2 naming them, a database down status -4 with HTTP
503.  Like every SNMS route but the logins it needs a login (Bearer, or Basic); what a caller
may read decides which values match, as on REST; only templated records' values of items
declared ``searchable`` are indexed, as on REST (a search by another type finds nothing).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from nodes.http.access import require_identity
from nodes.http.openapi import operation, ref
from nodes.http.params import Query
from nodes.http.search_api import SEARCH_PARAMS
from nodes.snms.codec import INTERNAL, OK, answer, answer_error
from registry.search import Searcher
from resolver.errors import HandleError

log = logging.getLogger(__name__)


def snms_search_router(node: Any) -> APIRouter:
    router = APIRouter(tags=["SNMS"])
    searcher = Searcher(node.store, node.fetch)

    @router.get(
        "/identityv2/data/search",
        openapi_extra=operation(
            "SNMS: find the identifiers of a prefix by an attribute's value",
            params=SEARCH_PARAMS,
            ok=(200, ref("Object")),
            auth=True,
        ),
    )
    async def search(request: Request) -> Response:
        try:
            missing = "not logged in: POST /identity/token, then send Bearer"
            identity = await require_identity(node, request, missing)
            query = Query(request.scope["query_string"])
            page = await searcher.search(query.get, identity)
        except HandleError as error:
            return answer_error(error)
        except Exception:
            log.exception("SNMS search failed")
            return answer(INTERNAL, "internal error", http=500)
        data: dict[str, Any] = {
            "prefix": page.prefix,
            "pageSize": page.page_size,
            "handles": page.handles,
        }
        if page.next is not None:
            data["next"] = page.next
        return answer(OK, "success", data)

    return router
