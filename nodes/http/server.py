"""Running the HTTP edge under uvicorn, one node per process group."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from nodes.bootstrap import Node, build_node, build_store
from nodes.gs1.front import Gs1Front
from nodes.handle.server import NativeDoors
from nodes.http.api import create_api
from nodes.http.boundary import AnswerEveryRequest
from nodes.http.limits import HttpLimits, LimitedHttpToolsProtocol, raise_fd_limit
from nodes.http.observe import Observed, access_log
from nodes.http.resolution import ASGIApp, ResolutionFront
from nodes.logs import setup_logging
from nodes.settings import Settings, load_settings


def create_app(node: Node) -> ASGIApp:
    """The node's ASGI application: the native Handle doors (listeners started with the
    lifespan, and Handle messages POSTed to the HTTP port), the REST resolution front (its
    cached answers pay for no other layer), then the GS1 resolver when ``IDIS_GS1__PREFIX`` is
    set, then the API; every request that reaches those last two is answered, even on a bug.
    The resolution front counts its own requests; :class:`Observed` counts the others; with
    ``IDIS_ACCESS_LOG`` every request is logged by the outermost layer."""
    app: ASGIApp = create_api(node)
    if node.settings.gs1.prefix:
        app = Gs1Front(node, app)
    front: ASGIApp = NativeDoors(
        node, ResolutionFront(node, Observed(AnswerEveryRequest(app), node.metrics))
    )
    return access_log(front) if node.settings.access_log else front


def metrics_directory(settings: Settings) -> Path:
    """Where the workers of a node write their metrics snapshots (nodes/metrics.py)."""
    return settings.data_dir / "metrics"


EFFECTIVE_SETTINGS = "IDIS_EFFECTIVE_SETTINGS"
"""How :func:`serve` hands its settings, overrides included, to the worker processes."""


def app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: each builds its own node from the settings that
    :func:`serve` resolved (or, run directly, from the environment)."""
    effective = os.environ.get(EFFECTIVE_SETTINGS)
    settings = Settings.model_validate_json(effective) if effective else load_settings()
    # uvicorn loads the application before it accepts a connection, in every worker.
    LimitedHttpToolsProtocol.configure(HttpLimits.from_settings(settings))
    setup_logging(settings.log_level, settings.log_format)  # a spawned worker starts without it
    logging.getLogger(__name__).info(
        "worker %d serves %s as %s", os.getpid(), settings.name, settings.role
    )
    node = build_node(settings)
    if settings.metrics:
        directory = metrics_directory(settings)
        directory.mkdir(parents=True, exist_ok=True)  # run directly, without serve()
        node.metrics.share(directory)
    app = create_app(node)
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
        # uvicorn's loggers propagate to the root's one handler (nodes/logs.py): one format.
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "server_header": False,
        # Change-feed consumers' long polls would otherwise hold a stop for their whole wait.
        "timeout_graceful_shutdown": 1,
    }


def serve(settings: Settings) -> None:
    """Run the node until interrupted; with several workers each is a process of its own."""
    setup_logging(settings.log_level, settings.log_format)
    log_start(settings)
    # Fresh at every start, before any worker: counts restart with the node, and the files of
    # an earlier run's workers are not summed in.
    directory = metrics_directory(settings)
    shutil.rmtree(directory, ignore_errors=True)
    if settings.metrics:
        directory.mkdir(parents=True)
    # Worker processes are spawned: they get the effective settings through the environment.
    os.environ[EFFECTIVE_SETTINGS] = settings.model_dump_json()
    raise_fd_limit(HttpLimits.from_settings(settings))  # workers inherit it
    uvicorn.run("nodes.http.server:app_from_env", factory=True, **uvicorn_options(settings))


def without_credentials(url: str) -> str:
    """``url`` without user name and password (also a multi-host PostgreSQL URL's)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url  # also keeps sqlite:///FILE whole, which a round trip would shorten
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


async def _homed(settings: Settings) -> str:
    store = build_store(settings)
    try:
        return ", ".join(await store.homed_prefixes()) or "none"
    except Exception as error:  # the database down at start: the node still starts
        return f"unknown ({type(error).__name__})"
    finally:
        await store.close()


def log_start(settings: Settings) -> None:
    """One line saying what this node is, where its data lives and where it listens."""
    host, port = settings.address
    native = settings.handle_address
    logging.getLogger(__name__).info(
        "starting %s node %s: database %s, redis %s, http %s:%d, native %s, workers %d, "
        "homed prefixes %s",
        settings.role,
        settings.name,
        without_credentials(settings.database_url),
        without_credentials(settings.redis_url) if settings.redis_url else "none",
        host,
        port,
        f"{native[0]}:{native[1]} (tcp+udp)" if native else "off",
        settings.workers,
        asyncio.run(_homed(settings)),
    )
