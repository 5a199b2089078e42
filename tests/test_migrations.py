"""Alembic revisions upgrade and downgrade cleanly on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from registry import migrate
from registry.stores.sql import make_engine
from registry.tables import metadata


def table_names(url: str) -> set[str]:
    async def inspect() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(inspect())


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without schema; for SQLite, in a directory that does not exist yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'missing' / 'idis.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


HEAD_TABLES = {"alembic_version", *metadata.tables}


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    assert table_names(empty_url) == HEAD_TABLES
    migrate.downgrade(empty_url, "0001")
    assert table_names(empty_url) == {"alembic_version", "handles", "prefixes"}
    migrate.downgrade(empty_url, "base")
    assert table_names(empty_url) == {"alembic_version"}
    migrate.upgrade(empty_url)
    assert table_names(empty_url) == HEAD_TABLES


def test_head_matches_registry_tables(empty_url: str) -> None:
    migrate.upgrade(empty_url)

    async def diff() -> list[object]:
        engine = make_engine(empty_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []


def test_keys_sort_bytewise_on_postgres(pg_empty_url: str) -> None:
    """Prefix listings rely on byte order; PostgreSQL's default collation is not byte order."""
    migrate.upgrade(pg_empty_url)

    async def collations() -> set[tuple[str, str]]:
        engine = make_engine(pg_empty_url)
        try:
            async with engine.connect() as conn:
                query = sa.text(
                    "SELECT table_name, collation_name FROM information_schema.columns"
                    " WHERE column_name = 'key' AND table_schema = 'public'"
                )
                return {(row[0], row[1]) for row in await conn.execute(query)}
        finally:
            await engine.dispose()

    keyed = {(table.name, "C") for table in metadata.tables.values() if "key" in table.c}
    assert {("handles", "C"), ("prefixes", "C"), ("change_log", "C")} <= keyed
    assert asyncio.run(collations()) == keyed


def test_the_change_log_continues_the_old_journals_numbering(empty_url: str) -> None:
    """A consumer holding a cursor into the removed top-level journal is told it fell behind
    (the old entries count as pruned) rather than silently skipping the new log's start."""
    from registry.stores import SqlStore
    from resolver.values import Record

    migrate.upgrade(empty_url, "0003")

    async def journal() -> None:
        engine = make_engine(empty_url)
        try:
            async with engine.begin() as conn:
                for seq in (3, 9):
                    await conn.execute(
                        sa.text(
                            "INSERT INTO txlog (seq, key, handle, data, version, stamp)"
                            " VALUES (:seq, 'K', 'k', NULL, 1, 1)"
                        ),
                        {"seq": seq},
                    )
        finally:
            await engine.dispose()

    asyncio.run(journal())
    migrate.upgrade(empty_url)

    async def after() -> tuple[int, int, int]:
        store = SqlStore(empty_url)
        try:
            horizon = await store.change_horizon()
            assert await store.put("88.1/A", Record("88.1/a", ()), None)
            return horizon, (await store.changes_after(0))[0].seq, await store.change_head()
        finally:
            await store.close()

    horizon, first, head = asyncio.run(after())
    assert horizon == 9 and first > 9 and head == first


def test_national_statistics_tables_come_and_go_with_0007(empty_url: str) -> None:
    stats = {"usage_daily", "usage_baseline", "national_stats"}
    migrate.upgrade(empty_url)
    assert stats <= table_names(empty_url)
    migrate.downgrade(empty_url, "0006")
    assert not stats & table_names(empty_url)
    migrate.upgrade(empty_url, "0007")
    assert stats <= table_names(empty_url)


def test_search_index_revision_goes_down_and_up(empty_url: str) -> None:
    """0008 adds the search index (attr_index) and its downgrade takes only it away."""
    migrate.upgrade(empty_url)
    assert "attr_index" in table_names(empty_url)
    migrate.downgrade(empty_url, "0007")
    assert table_names(empty_url) == HEAD_TABLES - {"attr_index"}
    migrate.upgrade(empty_url)
    assert table_names(empty_url) == HEAD_TABLES
