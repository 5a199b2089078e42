"""End-to-end fixtures: real ``idis serve`` processes (see :mod:`nodeproc`).

``node_factory`` starts any number of nodes for the calling module and stops them when the
module is done; ``pg_factory`` makes fresh migrated PostgreSQL databases that live as long as the
module.  When a test fails, the log of every node still running is attached to its report.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from nodeproc import RUNNING, NodeProcess, start_node

StartNode = Callable[..., NodeProcess]


async def _pg_admin(server: str, statement: str) -> None:
    connection = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def pg_factory(postgres: str, pg_template: str) -> Iterator[Callable[[], str]]:
    """``pg_factory()`` is the URL of a fresh migrated PostgreSQL database (as ``pg_url``)
    that lives as long as the module, so that a module can share one node across its tests."""
    names: list[str] = []

    def create() -> str:
        name = f"idis_e2e_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg_admin(postgres, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
        names.append(name)
        return f"{postgres}/{name}"

    yield create
    for name in names:
        asyncio.run(_pg_admin(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartNode]:
    """``node_factory(database_url=..., redis_url=..., workers=..., extra_env=...)`` starts a
    node (arguments as :func:`nodeproc.start_node`); all of them stop after the module."""
    started: list[NodeProcess] = []

    def start(**kwargs: Any) -> NodeProcess:
        node = start_node(tmp_path_factory.mktemp("node"), **kwargs)
        started.append(node)
        return node

    yield start
    crashed = []
    for node in reversed(started):
        if not node.stopped and not node.alive():
            crashed.append(f"idis node {node.base_url} exited early\n--- log\n{node.log()}")
        node.stop()
    if crashed:
        pytest.fail("\n".join(crashed), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for node in RUNNING:
            state = "running" if node.alive() else f"exited {node.process.returncode}"
            report.sections.append((f"idis node {node.base_url} ({state}) log", node.log()))
