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


def app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: each builds its own node from the environment."""
    return create_app(build_node(load_settings()))


def serve(settings: Settings) -> None:
    """Run the node until interrupted; with several workers each is a process of its own."""
    host, port = settings.address
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    # Workers rebuild settings from the environment, so the effective ones are exported.
    os.environ["IDIS_HTTP"] = settings.http
    os.environ["IDIS_DATABASE_URL"] = settings.database_url
    os.environ["IDIS_ROLE"] = settings.role
    os.environ["IDIS_DATA_DIR"] = str(settings.data_dir)
    if settings.redis_url:
        os.environ["IDIS_REDIS_URL"] = settings.redis_url
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
    )
