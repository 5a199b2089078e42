"""Alembic environment: migrates through the async drivers the stores use (aiosqlite, asyncpg).

The database URL comes from the Alembic config's ``sqlalchemy.url`` as users write it
(``sqlite:///...``, ``postgresql://...``); :func:`registry.stores.sql.make_engine` picks the
driver, so no synchronous driver needs installing.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from registry.stores.sql import async_url, make_engine
from registry.tables import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""


def run_migrations_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade --sql``), for a DBA to review."""
    context.configure(url=async_url(url), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    # NullPool: a migration is a one-off; no connection should outlive it.
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
