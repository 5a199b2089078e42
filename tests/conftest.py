"""Shared fixtures: the PostgreSQL and Redis servers the test command starts, fresh migrated
databases, and the ``store`` fixture that runs one contract suite over every RecordStore.

PostgreSQL databases are cloned from a template migrated once per session, so each test gets
an empty schema of its own for the price of a CREATE DATABASE.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
import redis

from registry import migrate, secrets
from registry.stores import SqlStore
from resolver.memory import MemoryStore
from resolver.ports import RecordStore

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(scope="session", autouse=True)
def secret_key() -> bytes:
    """The key sealing secrets in this test process (a node built here adds its own)."""
    key = os.urandom(secrets.KEY_SIZE)
    secrets.use_key(key)
    return key


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


async def _pg_admin(*statements: str) -> None:
    connection = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres() -> str:
    """The URL of the PostgreSQL server (no database); fails the test if it is unreachable."""
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (user postgres, trust): {exc}")
    return PG_SERVER


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis URL; fails the test if Redis is unreachable.

    Database 15, so that a test flushing it cannot touch a developer's data in database 0.
    """
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    finally:
        client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/15"


@contextmanager
def _database(template: str = "template1") -> Iterator[str]:
    """Create a uniquely named database copied from ``template``; its name. Dropped on exit."""
    name = f"idis_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield name
    finally:
        # FORCE: a failed test may have left a connection behind.
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_empty_url(postgres: str) -> Iterator[str]:
    """A fresh PostgreSQL database without any schema, dropped afterwards."""
    with _database() as name:
        yield f"{postgres}/{name}"


@pytest.fixture(scope="session")
def pg_template(postgres: str) -> Iterator[str]:
    """The name of a database migrated to head once per session, to clone test databases from."""
    with _database() as name:
        migrate.upgrade(f"{postgres}/{name}")
        yield name


@pytest.fixture
def pg_url(postgres: str, pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database migrated to head, dropped afterwards."""
    with _database(pg_template) as name:
        yield f"{postgres}/{name}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file migrated to head."""
    url = f"sqlite:///{tmp_path / 'idis.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """The database URL of each RecordStore backend; None for the in-memory twin.

    Synchronous, because migrating runs an event loop of its own.
    """
    if request.param == "memory":
        return None
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
async def store(store_url: str | None) -> AsyncIterator[RecordStore]:
    """An opened, empty RecordStore of each backend, closed afterwards."""
    if store_url is None:
        yield MemoryStore()
        return
    sql = SqlStore(store_url)
    await sql.open()
    try:
        yield sql
    finally:
        await sql.close()


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The secrets the authenticator hashed (calls of verify_secret), in order."""
    import registry.authentication as authentication
    from registry.secrets import verify_secret

    calls: list[str] = []

    def counting(secret: str, stored: str) -> bool:
        calls.append(secret)
        return verify_secret(secret, stored)

    monkeypatch.setattr(authentication, "verify_secret", counting)
    yield calls
