"""SNMS bodies to and from the core's values, and the one table of SNMS statuses.

A value is ``{index, type, auth, data: {format, value}}``: ``auth`` is the value's permission
bits as Handle writes them (``"1110"``: admin read, admin write, public read, public write),
the only per-value access the registry knows.  An identifier's template is its index 1001
value (type ``TEMPLATE``) naming the template's handle; ``templateVersion`` is the template's
version (its name, :mod:`nodes.snms.template_codec`): on a write without an index 1001 value it
becomes one naming ``<prefix>/TEMPLATE.<templateVersion>``, so the registry checks the record
against that template (and refuses it if there is none).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from nodes.snms.template_codec import named_template, version_named
from resolver.codecs.json_api import parse_values, render_data, value_permissions_text
from resolver.errors import (
    AuthenticationFailed,
    AuthenticationNeeded,
    HandleError,
    InsufficientPermissions,
    InvalidAdmin,
    InvalidValue,
    QuotaExceeded,
    ServerBusy,
    ServerError,
    Throttled,
)
from resolver.identifiers import Handle
from resolver.values import HandleValue

log = logging.getLogger(__name__)

OK, NOT_LOGGED_IN, FAILED, NO_PERMISSION, INTERNAL = 1, -1, -2, -3, -4
NOT_LOGGED_IN_MESSAGE = "not logged in: POST /identity/token, then send Bearer"
TEMPLATE_INDEX = 1001
TEMPLATE_TYPE = "TEMPLATE"


def answer(status: int, message: str, data: Any = None, http: int = 200) -> Response:
    body = {"status": status, "message": message, "data": data}
    return Response(orjson.dumps(body), http, media_type="application/json")


def status_of(code: int) -> tuple[int, int]:
    """The SNMS status and HTTP status of a Handle or IDIS code.  Business outcomes are HTTP
    200 as the deployed API answers them; quotas 429 (the code is in the body's ``code``), a
    dependency down 503, a bug 500."""
    if code == 1:
        return OK, 200
    if code in (AuthenticationNeeded.code, AuthenticationFailed.code):
        return NOT_LOGGED_IN, 200
    if code in (InsufficientPermissions.code, InvalidAdmin.code):
        return NO_PERMISSION, 200
    if code in (
        QuotaExceeded.DAILY_RESOLUTIONS,
        QuotaExceeded.REGISTRATIONS,
        QuotaExceeded.PREFIXES,
    ):
        return FAILED, 429
    if code == ServerBusy.code:
        return INTERNAL, 503
    if code == ServerError.code:
        return INTERNAL, 500
    return FAILED, 200


def error_answer(code: int, message: str, *, retry_after: int | None = None) -> Response:
    """An SNMS failure; ``retry_after`` (a throttled client) makes it 429 with Retry-After."""
    status, http = status_of(code)
    body = {"status": status, "code": code, "message": message, "data": None}
    response = Response(orjson.dumps(body), http, media_type="application/json")
    if retry_after is not None:
        response.status_code = 429
        response.headers["retry-after"] = str(retry_after)
    return response


def answer_error(error: HandleError) -> Response:
    retry_after = error.retry_after if isinstance(error, Throttled) else None
    return error_answer(error.code, error.message, retry_after=retry_after)


def snms_route(route: Callable[[Request], Awaitable[Response]]) -> Any:
    """Answers every error of ``route`` in SNMS terms, never with a framework page."""

    @functools.wraps(route)
    async def answered(request: Request) -> Response:
        try:
            return await route(request)
        except HandleError as error:
            return answer_error(error)
        except Exception:
            log.exception("SNMS %s %s failed", request.method, request.url.path)
            return answer(INTERNAL, "internal error", http=500)

    return answered


def render_value(value: HandleValue) -> dict[str, Any]:
    return {
        "index": value.index,
        "type": value.type,
        "auth": value_permissions_text(value.permissions),
        "data": render_data(value.data),
    }


def render_detail(handle: str, values: Sequence[HandleValue]) -> dict[str, Any]:
    template = next((v for v in values if v.index == TEMPLATE_INDEX), None)
    return {
        "prefix": handle.partition("/")[0],
        "handle": handle,
        "templateVersion": (
            version_named(handle.partition("/")[0], str(template.data.value))
            if template is not None
            else None
        ),
        "value": [render_value(v) for v in values],
    }


def _core_value(raw: object) -> object:
    """An SNMS value as the Handle JSON codec reads it (``auth`` is its ``permissions``)."""
    if not isinstance(raw, dict):
        raise InvalidValue("a value must be a JSON object")
    out = {k: v for k, v in raw.items() if k != "auth"}
    if raw.get("auth") not in (None, "") and "permissions" not in raw:
        out["permissions"] = raw["auth"]
    return out


def parse_item(raw: object, now: int) -> tuple[Handle, tuple[HandleValue, ...]]:
    """``{handle, templateVersion?, value: [...]}`` → the handle and its values."""
    if not isinstance(raw, dict) or not isinstance(raw.get("handle"), str):
        raise InvalidValue('an identifier is {"handle": ..., "value": [...]}')
    handle = Handle.parse(raw["handle"])
    items = raw.get("value", raw.get("values"))
    if not isinstance(items, list) or not items:
        raise InvalidValue("value must be a non-empty list", handle=handle.text)
    core = [_core_value(item) for item in items]
    template = raw.get("templateVersion")
    if template not in (None, "") and not any(
        isinstance(v, dict) and v.get("index") == TEMPLATE_INDEX for v in core
    ):
        data = {"format": "string", "value": named_template(handle.prefix, str(template))}
        core.append({"index": TEMPLATE_INDEX, "type": TEMPLATE_TYPE, "data": data})
    try:
        return handle, parse_values(core, now)
    except HandleError as error:
        error.handle = error.handle or handle.text
        raise
