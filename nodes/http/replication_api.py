"""Serving this node's replication journal to its federation peers (HTTP).

``GET /api/replication/log?after=N&limit=M&wait=S`` answers the node's own journaled writes
with seq > N, at most M (1 to 1000, default 1000)::

    {"responseCode": 1, "node": "beijing", "head": 42, "last": 17,
     "entries": [{"seq": 17, "key": "0.NA/88.100", "handle": "0.NA/88.100",
                  "data": "<base64 of the stored values, null if deleted>",
                  "version": 3, "stamp": 1768084906123456}]}

``last`` is the seq to ask after next time (``after`` when nothing came); ``head`` the newest
seq of the log, so ``head - last`` is how far behind the reader is.  With ``wait=S`` (at most
10 seconds) an empty answer is held back until an entry appears or S seconds pass: a long
poll, so that a peer sees a write within about :data:`POLL_INTERVAL` without asking
continuously.  Entries come from the database, so whichever worker process wrote them, every
worker serves them.

Peers authenticate with HTTP Basic as the user ``federation`` and the federation's shared
secret; no secret configured means no log is served.  Wrong secrets are throttled per client
address like failed logins (:func:`authenticate_peer`).  ``GET /api/replication/status`` shows
the log's head and the puller's counters (:meth:`nodes.replication.Replicator.stats`) to the
federation's peers and this node's administrators (the ``guard`` of :func:`replication_router`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from nodes.http.bodies import json_response
from nodes.http.errors import error_status
from nodes.http.openapi import operation, operators_operation, param, ref
from nodes.http.params import Query, client_address
from registry.authentication import FailureThrottle, failure_subjects
from registry.replication import MAX_BATCH, Journal
from resolver import render
from resolver.errors import (
    AuthenticationFailed,
    AuthenticationNeeded,
    HandleError,
    ProtocolError,
)

FEDERATION_USER = "federation"
MAX_WAIT = 10.0
POLL_INTERVAL = 0.1
"""How often a long poll looks for new entries: writes may come from any worker process, so
the database is polled rather than an in-process event awaited."""


def _error(error: HandleError) -> Response:
    status, headers = error_status(error)
    return Response(render.error(error.code, error.message), status, headers, "application/json")


def authenticate(header: str | None, secret: str | None) -> None:
    """Raise unless ``header`` is HTTP Basic ``federation:<secret>``.

    The secret is compared in constant time; a node without a secret serves no log at all.
    """
    if not secret:
        raise AuthenticationFailed("replication is not enabled on this node")
    if not header:
        raise AuthenticationNeeded("replication needs the federation's credentials")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise AuthenticationNeeded("replication needs HTTP Basic credentials")
    try:
        user, colon, given = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        raise AuthenticationNeeded("malformed Basic credentials") from None
    # Both comparisons always run, so the answer's timing says nothing about which failed.
    user_ok = hmac.compare_digest(user, FEDERATION_USER.encode())
    secret_ok = hmac.compare_digest(given, secret.encode("utf-8"))
    if not (colon and user_ok and secret_ok):
        raise AuthenticationFailed("wrong federation credentials")


def is_federation_user(header: str | None) -> bool:
    """Whether ``header`` is HTTP Basic credentials of the user ``federation`` (identities of
    handles always hold a ``/``, so the two never mix)."""
    scheme, _, encoded = (header or "").partition(" ")
    try:
        user = base64.b64decode(encoded.strip(), validate=True).partition(b":")[0]
    except (binascii.Error, ValueError):
        return False
    return scheme.lower() == "basic" and user == FEDERATION_USER.encode()


async def authenticate_peer(
    header: str | None, secret: str | None, throttle: FailureThrottle, source: str | None
) -> None:
    """:func:`authenticate`, throttled: a client address that gave wrong credentials too often
    gets :class:`resolver.errors.Throttled` without a comparison.  Only the address is counted:
    counting the shared user would let anyone lock every peer out."""
    subjects = failure_subjects(None, source)
    await throttle.check(subjects, "failed authentications")
    try:
        authenticate(header, secret)
    except AuthenticationFailed:
        await throttle.hit(subjects)
        raise


def replication_router(
    journal: Journal,
    *,
    name: str,
    secret: str | None,
    throttle: FailureThrottle,
    guard: Callable[[Request], Awaitable[None]],
    poll_interval: float = POLL_INTERVAL,
) -> APIRouter:
    """The replication routes of the node called ``name``, serving ``journal``'s log.

    The status route shows ``app.state.replicator`` (a :class:`nodes.replication.Replicator`,
    set by :func:`nodes.replication.replicating` in the application's lifespan) when there is
    one, to those ``guard`` lets through (it raises a :class:`HandleError` for the others).
    ``throttle`` counts wrong federation secrets per client address.
    """
    router = APIRouter()

    @router.get(
        "/api/replication/log",
        openapi_extra=operation(
            "This node's journal after a sequence number (federation peers)",
            params=[
                param("after", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}),
                param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_BATCH}),
                param("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT}),
            ],
            ok=(200, ref("Object")),
            failures=(400, 401, 403),
            auth=True,
        ),
    )
    async def read_log(request: Request) -> Response:
        try:
            await authenticate_peer(
                request.headers.get("authorization"),
                secret,
                throttle,
                client_address(request.scope),
            )
            query = Query(request.scope["query_string"])
            after, limit = query.int("after", 0), query.int("limit", MAX_BATCH)
            try:
                wait = float(query.get("wait") or 0)
            except ValueError:
                raise ProtocolError("wait must be a number of seconds") from None
            if after < 0 or not 1 <= limit <= MAX_BATCH or not 0 <= wait <= MAX_WAIT:
                raise ProtocolError(
                    f"after must be >= 0, limit from 1 to {MAX_BATCH}, wait from 0 to {MAX_WAIT}"
                )
        except HandleError as error:
            return _error(error)
        deadline = time.monotonic() + wait
        while True:
            entries = await journal.txlog_after(after, limit)
            if entries or time.monotonic() >= deadline or await request.is_disconnected():
                break
            await asyncio.sleep(poll_interval)
        return json_response(
            {
                "responseCode": 1,
                "node": name,
                "head": await journal.txlog_head(),
                "last": entries[-1].seq if entries else after,
                "entries": [entry.to_json() for entry in entries],
            }
        )

    @router.get(
        "/api/replication/status",
        openapi_extra=operators_operation(
            "The journal's head and the puller's counters (operators)"
        ),
    )
    async def replication_status(request: Request) -> Response:
        try:
            await guard(request)
        except HandleError as error:
            return _error(error)
        replicator = getattr(request.app.state, "replicator", None)
        return json_response(
            {
                "responseCode": 1,
                "node": name,
                "journal": journal.journal_as is not None,
                "head": await journal.txlog_head(),
                "puller": None if replicator is None else replicator.stats(),
            }
        )

    return router
