"""Running the HTTP edge under uvicorn, one node per process group."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import uvicorn

from nodes.bootstrap import Node, build_node
from nodes.gs1.front import Gs1Front
from nodes.handle.server import NativeDoors
from nodes.http.api import create_api
from nodes.http.boundary import AnswerEveryRequest
from nodes.http.limits import HttpLimits, LimitedHttpToolsProtocol, raise_fd_limit
from nodes.http.resolution import ASGIApp, ResolutionFront
from nodes.logs import setup_logging
from nodes.settings import Settings, load_settings


def create_app(node: Node) -> ASGIApp:
    """The node's ASGI application: the native Handle doors (listeners started with the
    lifespan, and Handle messages POSTed to the HTTP port), the REST resolution front (its
    cached answers pay for no other layer), then the GS1 resolver when ``IDIS_GS1__PREFIX`` is
    set, then the API; every request that reaches those last two is answered, even on a bug."""
    app: ASGIApp = create_api(node)
    if node.settings.gs1.prefix:
        app = Gs1Front(node, app)
    return NativeDoors(node, ResolutionFront(node, AnswerEveryRequest(app)))


EFFECTIVE_SETTINGS = "IDIS_EFFECTIVE_SETTINGS"
"""How :func:`serve` hands its settings, overrides included, to the worker processes."""


def app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: each builds its own node from the settings that
    :func:`serve` resolved (or, run directly, from the environment)."""
    effective = os.environ.get(EFFECTIVE_SETTINGS)
    settings = Settings.model_validate_json(effective) if effective else load_settings()
    # uvicorn loads the application before it accepts a connection, in every worker.
    LimitedHttpToolsProtocol.configure(HttpLimits.from_settings(settings))
    setup_logging(settings.log_level)  # a spawned worker starts without it
    logging.getLogger(__name__).info(
        "worker %d serves %s as %s", os.getpid(), settings.name, settings.role
    )
    app = create_app(build_node(settings))
    # Everything loaded so far (modules, FastAPI's routes and models) lives as long as the
    # process: out of the collector's sight, full collections no longer walk it.
    gc.freeze()
    return app


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How a node runs uvicorn: also used by the benchmark's raw ASGI app, so that the HTTP
    ceiling it measures is that of the very server configuration the node has."""
    host, port = settings.address
    return {
        "host": host,
        "port": port,
        "workers": settings.workers,
        "loop": "uvloop",
        "http": LimitedHttpToolsProtocol,
        "log_level": settings.log_level,
        "access_log": False,
        "lifespan": "on",
        "server_header": False,
        # Change-feed consumers' long polls would otherwise hold a stop for their whole wait.
        "timeout_graceful_shutdown": 1,
    }


def serve(settings: Settings) -> None:
    """Run the node until interrupted; with several workers each is a process of its own."""
    setup_logging(settings.log_level)
    # Worker processes are spawned: they get the effective settings through the environment.
    os.environ[EFFECTIVE_SETTINGS] = settings.model_dump_json()
    raise_fd_limit(HttpLimits.from_settings(settings))  # workers inherit it
    uvicorn.run("nodes.http.server:app_from_env", factory=True, **uvicorn_options(settings))
