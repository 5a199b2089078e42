"""The SNMS routes (DESIGN.md section 2.3), as a router of the node's HTTP application.

- ``POST /identity/token`` ``{username, password}``: ``username`` an identity of the registry
  (``300:88.100.1/ADMIN``), ``password`` its secret, checked (and throttled) as HTTP Basic is.
  The answer's ``data.token`` is a Bearer API token for 24 hours with the identity's rights
  (registry/tokens.py).  ``POST /identity/token/v1`` takes ``password =
  sha256hex(sha256hex(secret) + "yyyy-MM-dd")`` instead, the UTC day or either neighbour; it
  needs the identity's secret itself, which :data:`PlainSecret` gives by opening the sealed
  secret (registry/secrets.py); a secret still stored as a legacy one-way hash cannot be
  opened: the answer is then -2, saying so.
- ``GET /identityv2/data/detail?handle=``: the identifier, values the caller may read.
- ``POST /identityv2/data``: create (re-sending the same values succeeds, ``unchanged``);
  ``PUT``: replace the values of an existing identifier; ``DELETE ?handle=``: delete it.
- ``POST /identityv2/data/batchCreate``, ``PUT .../batchUpdate``, ``DELETE .../batchDelete``:
  at most 2000 identifiers, one result each, idempotent: an identifier that already holds the
  values (or is already gone) succeeds, reported in ``data.matched``, so that a client
  re-sending a batch after a timeout gets success.

Every route but the logins needs ``Authorization: Bearer TOKEN`` (HTTP Basic works too).
Writes go through the node's Registrar: the rights, validation and quotas of every door.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from nodes.http.access import require_identity
from nodes.http.bodies import read_json
from nodes.http.openapi import operation, param, ref
from nodes.http.params import Query, client_address
from nodes.http.resolution import answer_or_raise, resolve
from nodes.metrics import count_batch
from nodes.snms.codec import (
    NOT_LOGGED_IN_MESSAGE,
    OK,
    answer,
    error_answer,
    parse_item,
    render_detail,
    snms_route,
    status_of,
)
from nodes.snms.templates_api import template_routes
from registry.authentication import failure_subjects, parse_identity
from registry.authorization import ALL_RIGHTS, Right, rights
from registry.service import MAX_BATCH, BatchItem, ItemResult
from registry.tokens import LOGIN_TTL
from resolver import render
from resolver.codecs.timefmt import iso
from resolver.errors import (
    AuthenticationFailed,
    HandleError,
    HandleNotFound,
    InvalidValue,
    ProtocolError,
)
from resolver.identifiers import Handle, fold
from resolver.values import Ref

log = logging.getLogger(__name__)

PlainSecret = Callable[[Ref], Awaitable[str | None]]
"""The secret of an identity in clear, or None when this node cannot know it."""

LOGIN_BODY = 64 * 1024


async def no_plain_secret(identity: Ref) -> str | None:
    """No secret is at hand (a node given no way to open sealed secrets)."""
    return None


def dated_password(secret: str, day: str) -> str:
    """What a ``/v1`` login sends: ``sha256hex(sha256hex(secret) + day)``."""
    inner = hashlib.sha256(secret.encode()).hexdigest()
    return hashlib.sha256((inner + day).encode()).hexdigest()


def _state(result: ItemResult) -> dict[str, Any]:
    status = status_of(result.code)[0]
    item: dict[str, Any] = {"handle": result.handle, "status": status, "state": result.status}
    if result.code != 1:
        item["code"] = result.code
        item["message"] = result.message
    return item


def _batch_answer(results: list[ItemResult], matched_states: set[str]) -> Response:
    items = [_state(r) for r in results]
    succeeded = sum(r.code == 1 for r in results)
    data = {
        "total": len(results),
        "success": succeeded,
        "failure": len(results) - succeeded,
        "matched": sum(r.code == 1 and r.status in matched_states for r in results),
        "results": items,
    }
    return answer(OK, "success", data)


def _entries(raw: Any) -> list[Any]:
    """A batch body: a JSON list, or an object holding it under ``data``, ``list`` or
    ``handles``."""
    if isinstance(raw, dict):
        raw = next((raw[k] for k in ("data", "list", "handles") if k in raw), None)
    if not isinstance(raw, list):
        raise InvalidValue('a batch is a list of identifiers, or {"data": [...]}')
    if len(raw) > MAX_BATCH:
        raise ProtocolError(f"a batch holds at most {MAX_BATCH} identifiers")
    return raw


def with_body(summary: str, *, auth: bool) -> dict[str, Any]:
    """The OpenAPI of an SNMS route taking a JSON body."""
    return operation(
        summary, body=ref("Object"), ok=(200, ref("Object")), failures=(400,), auth=auth
    )


def snms_router(node: Any, plain_secret_of: PlainSecret = no_plain_secret) -> APIRouter:
    """The routes above for ``node`` (a :class:`nodes.bootstrap.Node`)."""
    router = APIRouter(tags=["SNMS"])
    registrar = node.registrar
    limit = node.settings.max_body_bytes

    snms = snms_route

    async def identify(request: Request) -> Ref:
        return await require_identity(node, request, NOT_LOGGED_IN_MESSAGE)

    async def login_body(request: Request) -> tuple[str, str]:
        body = await read_json(request, min(LOGIN_BODY, limit))
        user = body.get("username") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(user, str) or not isinstance(password, str) or not user:
            raise InvalidValue('a login is {"username": "300:PREFIX/ADMIN", "password": ...}')
        return user, password

    async def issue(identity: Ref) -> Response:
        text, token = await node.tokens.issue(
            identity, prefix="", mask=ALL_RIGHTS, ttl=LOGIN_TTL, label="SNMS login"
        )
        expires = int(token.expires_at.timestamp())
        data = {"token": text, "expire": LOGIN_TTL, "expireTime": iso(expires)}
        return answer(OK, "success", data)

    login_doc = with_body("SNMS login: a Bearer token for 24 hours", auth=False)

    @router.post("/identity/token", openapi_extra=login_doc)
    @snms
    async def login(request: Request) -> Response:
        user, password = await login_body(request)
        source = client_address(request.scope)
        return await issue(await node.authenticator.verify(user, password, source))

    @router.post("/identity/token/v1", openapi_extra=login_doc)
    @snms
    async def login_dated(request: Request) -> Response:
        user, password = await login_body(request)
        identity = parse_identity(user)
        if "/" not in identity.handle:
            raise AuthenticationFailed("the user name must be an identity such as 300:P/ADMIN")
        subjects = failure_subjects(fold(identity.handle), client_address(request.scope))
        await node.throttle.acquire(subjects, "unverified authentications")
        secret = await plain_secret_of(identity)
        if secret is None:
            raise InvalidValue(
                "the /v1 login needs the identity's secret at hand, and this identity's is"
                " still a one-way hash from an earlier version: log in once with"
                " /identity/token, which re-seals it"
            )
        today = datetime.now(UTC).date()
        days = [(today + timedelta(days=d)).isoformat() for d in (0, -1, 1)]
        if not any(
            hmac.compare_digest(dated_password(secret, day), password.lower()) for day in days
        ):
            raise AuthenticationFailed(f"identity {identity} not verified")
        return await issue(identity)

    def by_handle(summary: str) -> dict[str, Any]:
        """The OpenAPI of a route on one identifier named by ``?handle=``."""
        handle = param("handle", {"type": "string"}, required=True)
        return operation(summary, params=[handle], ok=(200, ref("Object")), auth=True)

    async def named(request: Request) -> tuple[Ref, Handle]:
        """The caller and the identifier ``?handle=`` names."""
        identity = await identify(request)
        text = Query(request.scope["query_string"]).get("handle")
        if not text:
            raise InvalidValue("this route needs ?handle=")
        return identity, Handle.parse(text)

    @router.get(
        "/identityv2/data/detail",
        openapi_extra=by_handle("SNMS: one identifier and the values the caller may read"),
    )
    @snms
    async def detail(request: Request) -> Response:
        identity, handle = await named(request)
        if node.quotas is not None:
            node.quotas.resolved(handle.key, identity)
        record = answer_or_raise(await resolve(node, handle, Query(b"")), handle.text).record
        readable = bool(await rights(identity, record, node.fetch) & Right.READ_VALUE)
        values = render.select(record.values, include_private=readable)
        return answer(OK, "success", render_detail(record.handle, values))

    async def write(request: Request, *, overwrite: bool, create: bool) -> Response:
        identity = await identify(request)
        handle, values = parse_item(await read_json(request, limit), int(time.time()))
        item = BatchItem(handle, values, text=handle.text)
        [result] = await registrar.batch([item], identity, overwrite=overwrite, create=create)
        if result.code != 1:
            return error_answer(result.code, result.message)
        return answer(OK, "success", {"handle": handle.text, "state": result.status})

    one_doc = with_body("SNMS: write one identifier", auth=True)

    @router.post("/identityv2/data", openapi_extra=one_doc)
    @snms
    async def create(request: Request) -> Response:
        return await write(request, overwrite=False, create=True)

    @router.put("/identityv2/data", openapi_extra=one_doc)
    @snms
    async def update(request: Request) -> Response:
        return await write(request, overwrite=True, create=False)

    @router.delete("/identityv2/data", openapi_extra=by_handle("SNMS: delete one identifier"))
    @snms
    async def delete(request: Request) -> Response:
        identity, handle = await named(request)
        await registrar.delete(handle, identity)
        return answer(OK, "success", {"handle": handle.text, "state": "deleted"})

    batch_doc = with_body("SNMS: up to 2000 identifiers, one result each", auth=True)

    async def write_batch(request: Request, *, overwrite: bool, create: bool) -> Response:
        identity = await identify(request)
        now = int(time.time())
        items = []
        for entry in _entries(await read_json(request, limit)):
            text = entry.get("handle") if isinstance(entry, dict) else None
            try:
                handle, values = parse_item(entry, now)
                items.append(BatchItem(handle, values, text=handle.text))
            except HandleError as error:
                items.append(BatchItem(None, (), error, text if isinstance(text, str) else ""))
        results = await registrar.batch(items, identity, overwrite=overwrite, create=create)
        count_batch(node.metrics, (r.code for r in results))
        return _batch_answer(results, {"unchanged"})

    @router.post("/identityv2/data/batchCreate", openapi_extra=batch_doc)
    @snms
    async def batch_create(request: Request) -> Response:
        return await write_batch(request, overwrite=False, create=True)

    @router.put("/identityv2/data/batchUpdate", openapi_extra=batch_doc)
    @snms
    async def batch_update(request: Request) -> Response:
        return await write_batch(request, overwrite=True, create=False)

    @router.delete("/identityv2/data/batchDelete", openapi_extra=batch_doc)
    @snms
    async def batch_delete(request: Request) -> Response:
        identity = await identify(request)
        results = []
        for entry in _entries(await read_json(request, limit)):
            text = entry.get("handle") if isinstance(entry, dict) else entry
            text = text if isinstance(text, str) else ""
            try:
                await registrar.delete(Handle.parse(text), identity)
                results.append(ItemResult(text, 1, "deleted"))
            except HandleNotFound:
                results.append(ItemResult(text, 1, "absent"))
            except HandleError as error:
                results.append(ItemResult(text, error.code, "error", error.message))
        return _batch_answer(results, {"absent"})

    template_routes(router, node)
    return router
