"""The node's OpenAPI document and its interactive docs, served offline.

Routes read their requests raw (so that bad input gets a Handle code, not a framework 422),
so the framework cannot infer their parameters and bodies: each route states them with
``openapi_extra=operation(...)`` from here, and :func:`install` adds what no route declares:
resolution (``GET``/``HEAD /api/handles/{handle}``, served by the raw ASGI front in
:mod:`nodes.http.resolution`), the shared schemas and the Basic security scheme.

``/api/docs`` is Swagger UI from the ``swagger-ui-py`` package's own assets, served by the
node under ``/api/docs/assets``: the docs work with no internet access.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from registry.service import MAX_BATCH, MAX_PAGE_SIZE

Schema = dict[str, Any]

DOCS = "/api/docs"
ASSETS = f"{DOCS}/assets"
UINT32 = 2**32 - 1
MAX_PAGE = 2**31 - 1


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": "Every error: a Handle response code and what went wrong.",
        "required": ["responseCode", "message"],
        "properties": {
            "responseCode": {"type": "integer", "examples": [100]},
            "handle": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "Data": {
        "description": "A plain string, or a typed value (format string, base64, hex, admin, "
        "vlist, site, key).",
        "oneOf": [
            {"type": "string"},
            {
                "type": "object",
                "required": ["format", "value"],
                "properties": {
                    "format": {
                        "type": "string",
                        "enum": ["string", "base64", "hex", "admin", "vlist", "site", "key"],
                    },
                    "value": {},
                },
            },
        ],
    },
    "HandleValue": {
        "type": "object",
        "required": ["index", "type", "data"],
        "properties": {
            "index": {"type": "integer", "minimum": 0, "maximum": UINT32},
            "type": {"type": "string", "examples": ["URL"]},
            "data": ref("Data"),
            "ttl": {"type": "integer", "minimum": 0, "maximum": UINT32},
            "timestamp": {"type": "string", "format": "date-time"},
            "permissions": {"type": "string", "pattern": "^[01]{4}$"},
            "references": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Values": {
        "description": 'The values to write: {"values": [...]}, an array, or one value.',
        "oneOf": [
            {
                "type": "object",
                "required": ["values"],
                "properties": {"values": {"type": "array", "items": ref("HandleValue")}},
            },
            {"type": "array", "items": ref("HandleValue")},
            ref("HandleValue"),
        ],
    },
    "Resolution": {
        "type": "object",
        "required": ["responseCode", "handle", "values"],
        "properties": {
            "responseCode": {"type": "integer", "examples": [1]},
            "handle": {"type": "string"},
            "values": {"type": "array", "items": ref("HandleValue")},
        },
    },
    "Written": {
        "type": "object",
        "required": ["responseCode", "handle"],
        "properties": {"responseCode": {"type": "integer"}, "handle": {"type": "string"}},
    },
    "Listing": {
        "type": "object",
        "properties": {
            "responseCode": {"type": "integer"},
            "prefix": {"type": "string"},
            "totalCount": {"type": "string", "description": "a decimal, as Handle.Net writes it"},
            "page": {"type": "integer"},
            "pageSize": {"type": "integer"},
            "handles": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Batch": {
        "type": "object",
        "required": ["handles"],
        "properties": {
            "handles": {
                "type": "array",
                "maxItems": MAX_BATCH,
                "items": {
                    "type": "object",
                    "required": ["handle", "values"],
                    "properties": {
                        "handle": {"type": "string"},
                        "values": {"type": "array", "items": ref("HandleValue")},
                    },
                },
            }
        },
    },
    "BatchResults": {
        "type": "object",
        "properties": {
            "responseCode": {"type": "integer"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "handle": {"type": "string"},
                        "responseCode": {"type": "integer"},
                        "status": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
    "PrefixApplicationRequest": {
        "type": "object",
        "required": ["prefix", "name"],
        "additionalProperties": False,
        "properties": {
            "prefix": {"type": "string", "examples": ["88.100.7"]},
            "name": {"type": "string", "maxLength": 200},
            "contact": {"type": "string", "maxLength": 200},
            "hosting": {"type": "string", "enum": ["hosted", "self-hosted"]},
            "siteUrl": {"type": "string", "format": "uri"},
            "secret": {
                "type": "string",
                "minLength": 12,
                "maxLength": 1024,
                "description": "the administrator's secret (hosted): at least 12 characters, "
                "6 of them different",
            },
        },
    },
    "PrefixApplication": {
        "type": "object",
        "properties": {
            "responseCode": {"type": "integer"},
            "application": {"type": "object"},
            "applications": {"type": "array", "items": {"type": "object"}},
            "admin": {"type": "string"},
            "secret": {"type": "string", "description": "generated, shown once"},
        },
    },
    "Rejection": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {"type": "string", "maxLength": 2000}},
    },
    "Object": {"type": "object", "description": "A JSON object (see the operation)."},
    "SearchPage": {
        "type": "object",
        "required": ["responseCode", "prefix", "handles"],
        "properties": {
            "responseCode": {"type": "integer", "examples": [1]},
            "prefix": {"type": "string"},
            "pageSize": {"type": "integer", "description": "handles in this page"},
            "handles": {"type": "array", "items": {"type": "string"}},
            "next": {"type": "string", "description": "cursor of the next page (after=)"},
        },
    },
}

_REASONS = {
    400: "bad input (Handle codes 4, 102, 202, 301)",
    401: "authentication needed (402)",
    403: "authentication failed or not allowed (400-406)",
    404: "handle not found (100)",
    409: "handle or value exists (101, 201)",
    410: "the change log no longer covers this cursor: re-synchronise from the snapshot",
    413: "request body too large",
    429: "too many failed attempts or anonymous requests: see Retry-After",
    503: "a dependency is down (3): see Retry-After",
}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def errors(*statuses: int) -> dict[str, Schema]:
    """Error responses (Handle error bodies) for ``statuses``; 429 and 503 always."""
    answers: dict[str, Schema] = {}
    for status in sorted({*statuses, 429, 503}):
        answer: Schema = {"description": _REASONS[status], "content": _json(ref("Error"))}
        if status in (429, 503):
            answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        answers[str(status)] = answer
    return answers


def param(name: str, schema: Schema, where: str = "query", **extra: Any) -> Schema:
    return {"name": name, "in": where, "schema": schema, **extra}


HANDLE = param(
    "handle",
    {"type": "string", "minLength": 1},
    "path",
    required=True,
    description="prefix/suffix, e.g. 88.100.1/ABC123 (the slash may stay unencoded)",
)
FLAG = {"type": "boolean"}
INDEXES = param(
    "index",
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": UINT32}},
    explode=True,
)
TYPES = param("type", {"type": "array", "items": {"type": "string"}}, explode=True)
BASIC: list[Schema] = [{"basic": []}]


def operation(
    summary: str,
    *,
    params: list[Schema] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
    ok: tuple[int, Schema] | None = None,
    failures: tuple[int, ...] = (),
    auth: bool | None = None,
) -> Schema:
    """The OpenAPI of one operation, for ``openapi_extra``: ``auth`` True needs Basic
    credentials, None takes them optionally, False ignores them."""
    spec: Schema = {"summary": summary, "responses": errors(*failures)}
    if params:
        spec["parameters"] = params
    if body is not None:
        spec["requestBody"] = {"required": body_required, "content": _json(body)}
    if ok is not None:
        status, schema = ok
        spec["responses"][str(status)] = {"description": "done", "content": _json(schema)}
    if auth:
        spec["security"] = BASIC
    elif auth is None:
        spec["security"] = [{}, *BASIC]
    return spec


def operators_operation(summary: str) -> Schema:
    """A route for operators only (nodes/http/access.py) answering a JSON object."""
    return operation(summary, ok=(200, ref("Object")), failures=(401, 403), auth=True)


RESOLUTION_PARAMS = [
    HANDLE,
    TYPES,
    INDEXES,
    param("auth", FLAG, description="bypass caches"),
    param("publicOnly", FLAG),
    param("pretty", FLAG),
    param("recursive", FLAG, description="follow referrals (nodes that allow recursion)"),
    param("callback", {"type": "string", "pattern": "^[A-Za-z_$][\\w$.]{0,99}$"}),
]
RESOLUTION = operation(
    "Resolve a handle (served by the resolution front, outside the framework)",
    params=RESOLUTION_PARAMS,
    ok=(200, ref("Resolution")),
    failures=(400, 403, 404),
    auth=None,
)
RESOLUTION["responses"]["200"]["description"] = (
    "the values; a referral (responseCode 301) when the prefix lives elsewhere"
)


def install(app: FastAPI) -> None:
    """Serve the OpenAPI document and offline Swagger UI on ``app``."""

    def openapi() -> Schema:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description="The Handle REST API of an idis node, its enterprise prefix "
                "workflow and its operators' routes.  Errors are Handle error bodies.",
                routes=app.routes,
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(SCHEMAS)
            components["securitySchemes"] = {"basic": {"type": "http", "scheme": "basic"}}
            path = schema["paths"].setdefault("/api/handles/{handle}", {})
            path["get"] = RESOLUTION | {"operationId": "resolve_handle"}
            path["head"] = RESOLUTION | {"operationId": "resolve_handle_head"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=str(files("swagger_ui") / "static")), name="docs")

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )


LISTING_PARAMS = [
    param("prefix", {"type": "string", "minLength": 1}, required=True),
    param("page", {"type": "integer", "minimum": 0, "maximum": MAX_PAGE}),
    param("pageSize", {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_SIZE}),
]
