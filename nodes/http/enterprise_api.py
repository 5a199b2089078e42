"""The enterprise prefix workflow over HTTP (see :mod:`registry.enterprise`).

- ``POST /api/prefix-applications``: apply, anonymously (an enterprise has no identity yet):
  ``{"prefix", "name", "contact"?, "hosting"?: "hosted"|"self-hosted", "siteUrl"?, "secret"?}``;
  ``hosting`` defaults to self-hosted when a ``siteUrl`` is given.  201 with the application.
  Rationed (``IDIS_THROTTLE__APPLY_*``): attempts per client address, applications per parent
  prefix, and at most ``IDIS_THROTTLE__PENDING_APPLICATIONS`` pending per parent; beyond them
  429 with ``Retry-After``, before any work (a ``secret`` is hashed only within the limits).
- ``GET /api/prefix-applications?status=&limit=``: the applications the caller may decide on.
- ``GET /api/prefix-applications/{id}``: one application.  Anonymous, so that an applicant can
  follow its own: the id is a random 64-bit token, known only to the applicant and operators.
- ``POST /api/prefix-applications/{id}/approve``: allocate the prefix; for a hosted prefix the
  answer names its administrator, and a generated ``secret`` the one time it is created.
- ``POST /api/prefix-applications/{id}/reject``: optional body ``{"reason": ...}``.

Deciding needs add-derived-prefix on ``0.NA/PARENT`` (HTTP Basic, as every write).  Errors are
Handle error bodies with the usual statuses (the application's exception handler maps them).
The applicant's secret is never shown back; applications are rendered without it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from nodes.bootstrap import Node, build_enterprise_prefixes
from nodes.http.bodies import json_response, read_json
from nodes.http.openapi import operation, param, ref
from nodes.http.params import Query, client_address
from registry.enterprise import MAX_LIST, Application
from resolver.codecs.timefmt import iso
from resolver.errors import AuthenticationNeeded, InvalidValue
from resolver.identifiers import fold
from resolver.values import Ref

MAX_BODY = 64 * 1024
"""An application is a few short fields; nothing bigger is read, whatever the node allows."""
APPLY_FIELDS = frozenset({"prefix", "name", "contact", "hosting", "siteUrl", "secret"})


def render_application(application: Application) -> dict[str, Any]:
    """The JSON of an application (camelCase, ISO-8601 UTC times, never the secret's hash)."""
    return {
        "id": application.id,
        "prefix": application.prefix,
        "name": application.name,
        "contact": application.contact,
        "hosting": application.hosting,
        "siteUrl": application.site_url,
        "secretProvided": application.secret_hash is not None,
        "status": application.status,
        "createdAt": iso(int(application.created_at.timestamp())),
        "decidedAt": iso(int(application.decided_at.timestamp()))
        if application.decided_at
        else None,
        "decidedBy": application.decided_by,
        "reason": application.reason,
    }


def enterprise_router(node: Node) -> APIRouter:
    """The routes above for ``node``; the workflow's own resources close with the app."""
    enterprises = build_enterprise_prefixes(node)
    limit = min(MAX_BODY, node.settings.max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await enterprises.close()

    router = APIRouter(prefix="/api/prefix-applications", lifespan=lifespan)

    async def identify(request: Request) -> Ref:
        identity = await node.authenticator.identify(
            request.headers.get("authorization"), client_address(request.scope)
        )
        if identity is None:
            raise AuthenticationNeeded("this operation needs authentication")
        return identity

    async def fields(
        request: Request, allowed: frozenset[str], *, optional: bool
    ) -> dict[str, Any]:
        """The JSON object of the body; unknown fields are refused, so a typo is not ignored."""
        headers = request.headers
        empty = "transfer-encoding" not in headers and headers.get("content-length") in (None, "0")
        if optional and empty:
            return {}
        raw = await read_json(request, limit)
        if not isinstance(raw, dict):
            raise InvalidValue("the request body must be a JSON object")
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise InvalidValue(
                f"unknown field {unknown[0]!r}; expected {', '.join(sorted(allowed))}"
            )
        return raw

    @router.post(
        "",
        openapi_extra=operation(
            "Apply for an enterprise prefix (anonymous, rationed)",
            body=ref("PrefixApplicationRequest"),
            ok=(201, ref("PrefixApplication")),
            failures=(400, 409, 413),
            auth=False,
        ),
    )
    async def apply(request: Request) -> Response:
        # Anonymous work is rationed before any is done: every attempt counts against its
        # source; recorded applications count against the parent prefix too.
        source = client_address(request.scope)
        per_source = [("apply-source", source)] if source else []
        await node.throttle.acquire(per_source, "enterprise applications")
        body = await fields(request, APPLY_FIELDS, optional=False)
        prefix = body.get("prefix")
        per_prefix = []
        if isinstance(prefix, str) and "." in prefix:
            parent = prefix.rpartition(".")[0]
            per_prefix = [("apply-prefix", fold(parent))]
            await node.throttle.check(per_prefix, f"applications under {parent}")
        site_url = body.get("siteUrl")
        application = await enterprises.apply(
            prefix=body.get("prefix"),
            name=body.get("name"),
            contact=body.get("contact"),
            hosting=body.get("hosting") or ("self-hosted" if site_url is not None else "hosted"),
            site_url=site_url,
            secret=body.get("secret"),
        )
        await node.throttle.hit(per_prefix)
        return json_response(
            {"responseCode": 1, "application": render_application(application)}, 201
        )

    @router.get(
        "",
        openapi_extra=operation(
            "The applications the caller may decide on",
            params=[
                param("status", {"type": "string", "enum": ["pending", "approved", "rejected"]}),
                param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST}),
            ],
            ok=(200, ref("PrefixApplication")),
            failures=(400, 401, 403),
            auth=True,
        ),
    )
    async def listing(request: Request) -> Response:
        identity = await identify(request)
        query = Query(request.scope["query_string"])
        chosen = await enterprises.list(
            identity, query.get("status") or None, query.int("limit", 1000)
        )
        return json_response(
            {"responseCode": 1, "applications": [render_application(a) for a in chosen]}
        )

    @router.get(
        "/{application_id}",
        openapi_extra=operation(
            "One application (its id is the applicant's token)",
            ok=(200, ref("PrefixApplication")),
            failures=(404,),
            auth=False,
        ),
    )
    async def show(application_id: str) -> Response:
        application = await enterprises.get(application_id)
        return json_response({"responseCode": 1, "application": render_application(application)})

    @router.post(
        "/{application_id}/approve",
        openapi_extra=operation(
            "Approve: allocate the prefix",
            ok=(200, ref("PrefixApplication")),
            failures=(400, 401, 403, 404, 409),
            auth=True,
        ),
    )
    async def approve(application_id: str, request: Request) -> Response:
        approval = await enterprises.approve(application_id, await identify(request))
        body: dict[str, Any] = {
            "responseCode": 1,
            "application": render_application(approval.application),
        }
        if approval.admin is not None:
            body["admin"] = str(approval.admin)
        if approval.secret is None:
            return json_response(body)
        body["secret"] = approval.secret
        response = json_response(body)
        # Shown once: no cache or proxy along the way may keep it.
        response.headers["cache-control"] = "no-store"
        return response

    @router.post(
        "/{application_id}/reject",
        openapi_extra=operation(
            "Reject, with an optional reason",
            body=ref("Rejection"),
            body_required=False,
            ok=(200, ref("PrefixApplication")),
            failures=(400, 401, 403, 404, 409),
            auth=True,
        ),
    )
    async def reject(application_id: str, request: Request) -> Response:
        identity = await identify(request)
        body = await fields(request, frozenset({"reason"}), optional=True)
        application = await enterprises.reject(application_id, identity, body.get("reason"))
        return json_response({"responseCode": 1, "application": render_application(application)})

    return router
