"""The SNMS data-template routes, over the registry's templates (the handles
``<prefix>/TEMPLATE.<version>``, :mod:`registry.templates`; bodies as
:mod:`nodes.snms.template_codec` translates them).

- ``POST /snms/api/v5/template`` ``{prefix, version, industryCategory, ..., items: [...]}``:
  create the template (its revision 1).  An existing one is -2 (code 101).
- ``PUT /snms/api/v5/template``, the same body: publish the next revision.  Items named by
  ``idIndex`` change (their ``idType`` must match), items without one are added, items left
  out stay as they are; ``state: 0`` disables an item; ``searchable`` (true/false or 1/0)
  puts an item's values in the search index (never taken back by a later revision).  Earlier
  revisions are kept, so records written under them still resolve.
- ``GET /snms/api/v5/template?prefix=&version=[&revision=]``: one revision, the latest by
  default.  ``GET /snms/api/v5/template/list?prefix=``: the prefix's templates, latest
  revisions.
- ``DELETE /snms/api/v5/template``: refused (-2): a template is never deleted, its items are
  disabled, so that the records naming it stay valid.

Writes go through the node's Registrar as a PUT of the template handle would: only who may
create handles under the prefix (its administrators, or a token with ``ADD_HANDLE``) creates
one, only who may add values to the template handle (``ADD_VALUE``) publishes a revision;
others get -3.  Reading needs no login: a template is a public handle, resolvable on every
door.  Create and change answer ``data: true`` as the deployed API does.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from nodes.http.access import require_identity
from nodes.http.bodies import read_json
from nodes.http.openapi import operation, param, ref
from nodes.http.params import Query
from nodes.http.resolution import answer_or_raise, resolve
from nodes.snms.codec import NOT_LOGGED_IN_MESSAGE, OK, answer, snms_route
from nodes.snms.template_codec import document, render, revisions, template_handle
from registry.templates import template_range
from resolver.codecs.json_api import parse_values
from resolver.errors import HandleNotFound, InvalidValue
from resolver.identifiers import Handle, fold
from resolver.templates import TEMPLATE_TYPE

PATH = "/snms/api/v5/template"
MAX_LISTED = 1000
"""Templates one list answers; a prefix with more is told so."""
_PAGE = 200


def _doc(summary: str, *, body: bool, auth: bool | None, params: list[Any] | None = None) -> Any:
    return operation(
        summary,
        params=params,
        body=ref("Object") if body else None,
        ok=(200, ref("Object")),
        auth=auth,
    )


def template_routes(router: APIRouter, node: Any) -> None:
    """Add the routes above to the SNMS ``router`` of ``node``."""
    registrar = node.registrar
    limit = node.settings.max_body_bytes

    async def current(handle: Handle, *, fresh: bool) -> tuple[dict[int, Any], Any]:
        """The revisions a template handle holds and its record (``fresh``: from the store,
        for a change; else through the caches, as any resolution)."""
        if fresh:
            record = await node.store.get(handle.key)
            if record is None:
                raise HandleNotFound(f"no template {handle.text}", handle=handle.text)
        else:
            record = answer_or_raise(await resolve(node, handle, Query(b"")), handle.text).record
        found = revisions(record.values)
        if not found:
            raise InvalidValue(f"{handle.text} holds no template", handle=handle.text)
        return found, record

    def template_value(index: int, doc: dict[str, Any]) -> Any:
        text = json.dumps(doc, ensure_ascii=False)
        raw = [{"index": index, "type": TEMPLATE_TYPE, "data": text}]
        return parse_values(raw, int(time.time()))[0]

    @router.post(PATH, openapi_extra=_doc("SNMS: create a data template", body=True, auth=True))
    @snms_route
    async def create(request: Request) -> Response:
        identity = await require_identity(node, request, NOT_LOGGED_IN_MESSAGE)
        body = await read_json(request, limit)
        handle = template_handle(*_named(body))
        value = template_value(1, document(body, revision=1))
        await registrar.put(handle, (value,), identity, overwrite=False)
        return answer(OK, "success", True)

    change_doc = _doc("SNMS: publish a template's next revision", body=True, auth=True)

    @router.put(PATH, openapi_extra=change_doc)
    @snms_route
    async def change(request: Request) -> Response:
        identity = await require_identity(node, request, NOT_LOGGED_IN_MESSAGE)
        body = await read_json(request, limit)
        handle = template_handle(*_named(body))
        found, record = await current(handle, fresh=True)
        latest = max(found)
        doc = document(body, revision=latest + 1, before=found[latest])
        if doc["items"] == found[latest]["items"] and doc["industry"] == found[latest].get(
            "industry", {}
        ):
            return answer(OK, "unchanged", True)
        index = max(v.index for v in record.values) + 1
        values = (*record.values, template_value(index, doc))
        await registrar.put(handle, values, identity, overwrite=True)
        return answer(OK, "success", True)

    name_params = [
        param("prefix", {"type": "string"}, required=True),
        param("version", {"type": "string"}, required=True),
        param("revision", {"type": "integer", "minimum": 1}),
    ]

    @router.get(
        PATH,
        openapi_extra=_doc("SNMS: one data template", body=False, auth=None, params=name_params),
    )
    @snms_route
    async def read(request: Request) -> Response:
        query = Query(request.scope["query_string"])
        handle = template_handle(query.get("prefix"), query.get("version"))
        found, _ = await current(handle, fresh=False)
        wanted = query.get("revision")
        if wanted is None:
            revision = max(found)
        elif wanted.isdigit() and int(wanted) in found:
            revision = int(wanted)
        else:
            raise InvalidValue(f"revision: {handle.text} has revisions {sorted(found)}")
        return answer(OK, "success", render(handle, found[revision], list(found)))

    list_params = [param("prefix", {"type": "string"}, required=True)]

    @router.get(
        f"{PATH}/list",
        openapi_extra=_doc(
            "SNMS: a prefix's data templates", body=False, auth=None, params=list_params
        ),
    )
    @snms_route
    async def listed(request: Request) -> Response:
        prefix = Query(request.scope["query_string"]).get("prefix")
        if not prefix or "/" in prefix:
            raise InvalidValue("prefix: a prefix such as 88.100.1 is required")
        low, high = template_range(fold(prefix))
        items: list[Any] = []
        after = low
        while len(items) < MAX_LISTED:
            page = await node.store.records_under(fold(prefix), _PAGE, after)
            keys = [key for key in page if key < high]
            for key in keys:
                found = revisions(page[key].values)
                if found:
                    handle = Handle.parse(page[key].handle)
                    items.append(render(handle, found[max(found)], list(found)))
            if len(keys) < _PAGE:
                break
            after = keys[-1]
        data = {"prefix": prefix, "total": len(items[:MAX_LISTED]), "items": items[:MAX_LISTED]}
        return answer(OK, "success", data)

    @router.delete(
        PATH, openapi_extra=_doc("SNMS: deleting a template is refused", body=True, auth=True)
    )
    @snms_route
    async def delete(request: Request) -> Response:
        await require_identity(node, request, NOT_LOGGED_IN_MESSAGE)
        raise InvalidValue(
            "templates are never deleted, so that the records naming them stay valid:"
            f" disable their items (PUT {PATH} with state 0)"
        )


def _named(body: object) -> tuple[object, object]:
    """The ``prefix`` and ``version`` of a body (refused by :func:`template_handle`)."""
    if not isinstance(body, dict):
        raise InvalidValue("body: a JSON object: {prefix, version, items, ...}")
    return body.get("prefix"), body.get("version")
