"""``/healthz`` and ``/readyz``: what an orchestrator acts on.

``/healthz`` says the process lives (200 while it can answer at all): restart it otherwise.
``/readyz`` says it can serve: its database answers and, if that is a standby, lags at most
``IDIS_READY_MAX_LAG`` seconds behind; 503 otherwise, so traffic goes elsewhere meanwhile.
Redis is reported but never decides (a missing cache is less cache).  Both answer JSON with
the site's name and role, whether its database member is the leader or a standby, and its lag.
What ``/readyz`` finds is also what the metrics report of the member (:func:`observe_member`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from nodes.http.bodies import json_response
from registry.stores.sql import SqlStore
from resolver.errors import HandleError

log = logging.getLogger(__name__)


async def observe_member(node: Any) -> dict[str, Any]:
    """Ask the database member ``node`` reads from whether it leads and how far it lags, and
    record the answer in the node's metrics (``idis_database_leader``...); the ``database``
    part of ``/readyz``.  A round trip: for probes and scrapes, never for a resolution."""
    store = node.store
    database: dict[str, Any] = {"reachable": True, "member": "leader", "lag": 0.0}
    if isinstance(store, SqlStore):
        try:
            state = await store.member_state()
        except HandleError as error:
            node.metrics.member.observe(None)
            return {"reachable": False, "error": error.message}
        except Exception as error:  # a probe or a scrape says so rather than failing
            log.warning("database member state unreadable: %r", error)
            node.metrics.member.observe(None)
            return {"reachable": False, "error": f"{type(error).__name__}: {error}"}
        database["member"] = "leader" if state.leader else "standby"
        database["lag"] = round(state.lag, 3)
    node.metrics.member.observe(database["member"] == "leader", database["lag"])
    return database


def health_router(node: Any) -> APIRouter:
    """The two probes of ``node`` (a :class:`nodes.bootstrap.Node`)."""
    router = APIRouter(include_in_schema=False)
    settings = node.settings
    started = time.monotonic()
    # Constant bytes: the benchmarks use this route as the bare framework route's baseline.
    alive = orjson.dumps({"status": "ok", "name": settings.name, "role": settings.role})

    def about(status: str) -> dict[str, Any]:
        redis = "off" if node.shared is None else ("down" if node.shared.down else "up")
        return {
            "status": status,
            "name": settings.name,
            "role": settings.role,
            "uptime": round(time.monotonic() - started, 1),
            "redis": redis,
        }

    @router.get("/healthz")
    async def healthz() -> Response:
        return Response(alive, media_type="application/json")

    @router.get("/readyz")
    async def readyz() -> Response:
        ready, database = await readiness(node)
        body = about("ready" if ready else "unavailable")
        body["database"] = database
        return json_response(body, 200 if ready else 503)

    return router


async def readiness(node: Any) -> tuple[bool, dict[str, Any]]:
    """Whether ``node`` can serve (``/readyz``'s verdict) and what its database member says
    (:func:`observe_member`).  Asks the database (a connection of its own): not for a hot
    path."""
    database = await observe_member(node)
    return database["reachable"] and database["lag"] <= node.settings.ready_max_lag, database
