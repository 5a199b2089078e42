"""This node's change feed over HTTP, for consumers across an operator boundary.

The national tier's sites share one PostgreSQL cluster and need no feed among themselves; a
secondary node run by another organisation, a mirror, or upward reporting follows a node's
registry through these routes (:mod:`nodes.mirror` is the consumer).  Any role serves them.

``GET /api/replication/log?after=N&limit=M&wait=S`` answers the changes of the node's change
log (:mod:`registry.changelog`) with seq > N, at most M (1 to 1000, default 1000), each with
the key's state now::

    {"responseCode": 1, "node": "beijing", "head": 42, "last": 17,
     "entries": [{"seq": 17, "key": "88.100/A", "handle": "88.100/a",
                  "data": "<base64 of the stored values, null if deleted>", "version": 3},
                 {"seq": 18, "key": "/homes", "homes": ["88.100"]}]}

``last`` is the seq to ask after next time (``after`` when nothing came); ``head`` the newest
seq of the log, so ``head - last`` is how far behind the reader is.  Entries come in seq
order, which is commit order, so a consumer that applies them in order and resumes after
``last`` misses nothing.  With ``wait=S`` (at most 10 seconds) an empty answer is held back
until a change appears or S seconds pass (a long poll).

When changes after N are no longer in the log (pruned by ``IDIS_CHANGE_LOG__RETENTION``), or N
is past the head (the node's database was replaced), the answer is HTTP 410 with
``{"responseCode": 410, "horizon": H, "head": 42, "message": ...}``: the consumer must
re-synchronise from ``GET /api/replication/snapshot?after=KEY&limit=M``, pages of every record
by key order::

    {"responseCode": 1, "node": "beijing", "head": 42, "homes": ["88.100"],
     "records": [{"seq": 0, "key": ..., "handle": ..., "data": ..., "version": 1}],
     "next": "88.100/Z"}

(``next`` is null after the last page), then follow the log after the first page's ``head``.

Consumers authenticate with HTTP Basic as the user ``federation`` and the node's feed secret
(``IDIS_FEDERATION__SECRET``); no secret configured means no feed is served.  Wrong secrets are
throttled per client address like failed logins (:func:`authenticate_peer`).
``GET /api/replication/status`` shows the log's head and horizon, this process's change-log
follower and its mirror puller, if any, to the feed's consumers and this node's administrators
(the ``guard`` of :func:`replication_router`); it holds neither records nor secrets.
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
from registry.changelog import MAX_BATCH
from registry.stores.feed import FeedBehind, SqlFeed
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
"""How often a long poll looks for new changes: writes may come from any process on any host,
so the database is polled rather than an in-process event awaited."""
BEHIND = 410
"""HTTP status and responseCode of a cursor the log no longer covers."""


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
    feed: SqlFeed,
    *,
    name: str,
    secret: str | None,
    throttle: FailureThrottle,
    guard: Callable[[Request], Awaitable[None]],
    poll_interval: float = POLL_INTERVAL,
) -> APIRouter:
    """The change-feed routes of the node called ``name``, serving ``feed``.

    The status route shows ``app.state.follower`` (:class:`nodes.changefeed.ChangeFollower`)
    and ``app.state.mirror`` (:class:`nodes.mirror.Mirror`) when they are set, to those
    ``guard`` lets through (it raises a :class:`HandleError` for the others).  ``throttle``
    counts wrong feed secrets per client address.
    """

    async def authenticated(request: Request) -> None:
        await authenticate_peer(
            request.headers.get("authorization"), secret, throttle, client_address(request.scope)
        )

    router = APIRouter()

    @router.get(
        "/api/replication/log",
        openapi_extra=operation(
            "This node's change log after a sequence number (feed consumers); 410 when the log "
            "no longer covers it",
            params=[
                param("after", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}),
                param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_BATCH}),
                param("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT}),
            ],
            ok=(200, ref("Object")),
            failures=(400, 401, 403, 410),
            auth=True,
        ),
    )
    async def read_log(request: Request) -> Response:
        try:
            await authenticated(request)
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
            try:
                page = await feed.read(after, limit)
            except FeedBehind as behind:
                body = {
                    "responseCode": BEHIND,
                    "node": name,
                    "horizon": behind.horizon,
                    "head": behind.head,
                    "message": str(behind),
                }
                return json_response(body, BEHIND)
            if page.entries or time.monotonic() >= deadline or await request.is_disconnected():
                break
            await asyncio.sleep(poll_interval)
        return json_response(
            {
                "responseCode": 1,
                "node": name,
                "head": page.head,
                "last": page.entries[-1].seq if page.entries else after,
                "entries": [entry.to_json() for entry in page.entries],
            }
        )

    @router.get(
        "/api/replication/snapshot",
        openapi_extra=operation(
            "Every record in key order, a page at a time (feed consumers re-synchronising)",
            params=[
                param("after", {"type": "string"}),
                param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_BATCH}),
            ],
            ok=(200, ref("Object")),
            failures=(400, 401, 403),
            auth=True,
        ),
    )
    async def snapshot(request: Request) -> Response:
        try:
            await authenticated(request)
            query = Query(request.scope["query_string"])
            after, limit = query.get("after") or "", query.int("limit", MAX_BATCH)
            if not 1 <= limit <= MAX_BATCH:
                raise ProtocolError(f"limit from 1 to {MAX_BATCH}")
        except HandleError as error:
            return _error(error)
        page = await feed.snapshot(after, limit)
        return json_response(
            {
                "responseCode": 1,
                "node": name,
                "head": page.head,
                "homes": list(page.homes),
                "records": [record.to_json() for record in page.records],
                "next": page.next,
            }
        )

    @router.get(
        "/api/replication/status",
        openapi_extra=operators_operation(
            "The change log's head and horizon, this process's follower and mirror (operators)"
        ),
    )
    async def replication_status(request: Request) -> Response:
        try:
            await guard(request)
        except HandleError as error:
            return _error(error)
        follower = getattr(request.app.state, "follower", None)
        mirror = getattr(request.app.state, "mirror", None)
        store = feed.store
        return json_response(
            {
                "responseCode": 1,
                "node": name,
                "head": await store.change_head(),
                "horizon": await store.change_horizon(),
                "follower": None if follower is None else follower.stats(),
                "mirror": None if mirror is None else mirror.stats(),
            }
        )

    return router
