"""Scoped API tokens over HTTP (registry/tokens.py).

- ``POST /api/tokens`` ``{"prefix", "rights", "expiresIn"?, "label"?}``: issue a token of
  the caller (HTTP Basic: a token cannot issue tokens) limited to ``prefix`` (``""``: every
  prefix) and ``rights``, a list of right names (``ADD_HANDLE``, ``MODIFY_VALUE``...; see
  :class:`registry.authorization.Right`) or a bit mask; ``expiresIn`` seconds (default a
  day).  201 with the token, shown this once, and its ``id``.
- ``GET /api/tokens``: the caller's tokens (never the token itself).
- ``DELETE /api/tokens/{id}``: revoke one of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from nodes.http.access import require_identity
from nodes.http.bodies import json_response, read_json
from nodes.http.openapi import operation, ref
from registry.authorization import ALL_RIGHTS
from registry.tokens import Token, parse_rights, rights_names
from resolver.codecs.timefmt import iso
from resolver.errors import HandleNotFound, InvalidValue
from resolver.values import Ref

MAX_BODY = 16 * 1024
DEFAULT_TTL = 86400


def render_token(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "identity": token.identity,
        "prefix": token.prefix,
        "rights": rights_names(token.rights),
        "label": token.label,
        "createdAt": iso(int(token.created_at.timestamp())),
        "expiresAt": iso(int(token.expires_at.timestamp())),
        "revokedAt": iso(int(token.revoked_at.timestamp())) if token.revoked_at else None,
    }


def tokens_router(node: Any) -> APIRouter:
    router = APIRouter(prefix="/api/tokens")

    async def identify(request: Request) -> Ref:
        return await require_identity(node, request)

    @router.post(
        "",
        openapi_extra=operation(
            "Issue a scoped API token (shown once)",
            body=ref("Object"),
            ok=(201, ref("Object")),
            failures=(400, 401, 403),
            auth=True,
        ),
    )
    async def issue(request: Request) -> Response:
        identity = await identify(request)
        body = await read_json(request, MAX_BODY)
        if not isinstance(body, dict):
            raise InvalidValue('a token request is {"prefix", "rights", "expiresIn"?, "label"?}')
        prefix, label = body.get("prefix", ""), body.get("label", "")
        ttl = body.get("expiresIn", DEFAULT_TTL)
        if not isinstance(prefix, str) or not isinstance(label, str):
            raise InvalidValue("prefix and label are strings")
        if not isinstance(ttl, int) or isinstance(ttl, bool):
            raise InvalidValue("expiresIn is a number of seconds")
        mask = parse_rights(body.get("rights", ALL_RIGHTS))
        text, token = await node.tokens.issue(
            identity, prefix=prefix, mask=mask, ttl=ttl, label=label
        )
        return json_response({"responseCode": 1, "token": text, **render_token(token)}, 201)

    @router.get(
        "",
        openapi_extra=operation(
            "The caller's API tokens", ok=(200, ref("Object")), failures=(401, 403), auth=True
        ),
    )
    async def listing(request: Request) -> Response:
        tokens = await node.tokens.list(await identify(request))
        return json_response({"responseCode": 1, "tokens": [render_token(t) for t in tokens]})

    @router.delete(
        "/{token_id}",
        openapi_extra=operation(
            "Revoke one of the caller's API tokens",
            ok=(200, ref("Object")),
            failures=(401, 403, 404),
            auth=True,
        ),
    )
    async def revoke(request: Request, token_id: str) -> Response:
        if not await node.tokens.revoke(await identify(request), token_id):
            raise HandleNotFound(f"no live token {token_id} of yours")
        return json_response({"responseCode": 1, "id": token_id})

    return router
