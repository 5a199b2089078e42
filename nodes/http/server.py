"""Running the HTTP edge under uvicorn, one node per process group."""

from __future__ import annotations

import logging
import os

import uvicorn

from nodes.bootstrap import Node, build_node
from nodes.http.api import create_api
from nodes.http.resolution import ASGIApp, ResolutionFront
from nodes.settings import Settings, load_settings


def create_app(node: Node) -> ASGIApp:
    """The node's ASGI application: the resolution front, then the API behind it."""
    return ResolutionFront(node, create_api(node))


EFFECTIVE_SETTINGS = "IDIS_EFFECTIVE_SETTINGS"
"""How :func:`serve` hands its settings, overrides included, to the worker processes."""


def app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: each builds its own node from the settings that
    :func:`serve` resolved (or, run directly, from the environment)."""
    effective = os.environ.get(EFFECTIVE_SETTINGS)
    settings = Settings.model_validate_json(effective) if effective else load_settings()
    return create_app(build_node(settings))


def serve(settings: Settings) -> None:
    """Run the node until interrupted; with several workers each is a process of its own."""
    host, port = settings.address
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    # Worker processes are spawned: they get the effective settings through the environment.
    os.environ[EFFECTIVE_SETTINGS] = settings.model_dump_json()
    uvicorn.run(
        "nodes.http.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        server_header=False,
        # Change-feed consumers' long polls would otherwise hold a stop for their whole wait.
        timeout_graceful_shutdown=1,
    )
