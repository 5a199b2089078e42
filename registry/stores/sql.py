"""The registry's :class:`resolver.ports.RecordStore` on SQLite or PostgreSQL.

Writes and administration go through SQLAlchemy Core on :mod:`registry.tables`.  On PostgreSQL
the per-request read (:meth:`SqlStore.get`) goes through a raw asyncpg pool instead, because
SQLAlchemy costs 3-6x raw asyncpg on a primary-key read (DESIGN section 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from registry.tables import handles, prefixes
from resolver.codecs.stored import decode_values, encode_values
from resolver.identifiers import fold
from resolver.values import Record

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}

# Rows per UPDATE ... FROM (VALUES ...) statement: 4 parameters a row stays far below the
# bind-parameter limits of both SQLite (32766) and PostgreSQL (32767).
_CHUNK = 500

_GET_SQL = "SELECT handle, data, version FROM handles WHERE key = $1"


def async_url(url: str) -> URL:
    """The SQLAlchemy async-driver URL of a database URL as users write it.

    ``sqlite:///path/idis.db`` becomes ``sqlite+aiosqlite:///path/idis.db`` and
    ``postgresql://user@host:port/db`` (or ``postgres://``) becomes ``postgresql+asyncpg://...``;
    a driver already named in the URL is replaced.  Raise ValueError for other databases.
    """
    parsed = make_url(url)
    backend = parsed.drivername.partition("+")[0]
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
    return parsed.set(drivername=_ASYNC_DRIVERS[backend])


def make_engine(url: str, *, busy_timeout_ms: int = 5000, **engine_kwargs: Any) -> AsyncEngine:
    """An async engine for a database URL as users write it (see :func:`async_url`).

    A SQLite file is prepared for sharing by several worker processes: its directory is created
    if missing, and every connection uses the WAL journal and waits up to ``busy_timeout_ms``
    for another process's write lock rather than failing at once.  ``engine_kwargs`` go to
    :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    engine_url = async_url(url)
    if engine_url.get_backend_name() != "sqlite":
        return create_async_engine(engine_url, **engine_kwargs)
    if engine_url.database not in (None, "", ":memory:"):
        Path(engine_url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(engine_url, **engine_kwargs)

    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    sa.event.listen(engine.sync_engine, "connect", set_pragmas)
    return engine


def _row_record(row: Any) -> Record:
    return Record(row.handle, decode_values(row.data), row.version)


class SqlStore:
    """A :class:`resolver.ports.RecordStore` on the ``handles`` and ``prefixes`` tables.

    The schema must exist already (``idis migrate``, see :mod:`registry.migrate`).  Nothing
    connects before the first call; :meth:`open` may be awaited to fail early instead.  A SQLite
    file may be shared by several worker processes (see :func:`make_engine`).

    ``pool_size`` and ``max_overflow`` size SQLAlchemy's pool (writes, listings, and reads on
    SQLite); ``read_pool_size`` caps the asyncpg pool serving :meth:`get` on PostgreSQL.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        read_pool_size: int = 10,
        busy_timeout_ms: int = 5000,
    ) -> None:
        engine_url = async_url(url)
        self._read_pool_size = read_pool_size
        self._read_pool: asyncpg.Pool | None = None
        self._open_lock = asyncio.Lock()
        self._insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert]
        self._engine = make_engine(
            url, busy_timeout_ms=busy_timeout_ms, pool_size=pool_size, max_overflow=max_overflow
        )
        if engine_url.get_backend_name() == "sqlite":
            self._read_dsn = None
            self._insert = sqlite.insert
        else:
            self._read_dsn = engine_url.set(drivername="postgresql").render_as_string(
                hide_password=False
            )
            self._insert = postgresql.insert

    async def open(self) -> None:
        """Connect now: create the PostgreSQL read pool, or check the SQLite file. Idempotent."""
        if self._read_dsn is None:
            async with self._engine.connect():
                pass
            return
        async with self._open_lock:
            if self._read_pool is None:
                self._read_pool = await asyncpg.create_pool(
                    self._read_dsn, min_size=1, max_size=self._read_pool_size
                )

    async def close(self) -> None:
        """Close every connection; the store is unusable afterwards."""
        if self._read_pool is not None:
            await self._read_pool.close()
            self._read_pool = None
        await self._engine.dispose()

    async def get(self, key: str) -> Record | None:
        if self._read_dsn is not None:
            if self._read_pool is None:
                await self.open()
            assert self._read_pool is not None
            # asyncpg prepares the statement once per connection and reuses it.
            raw = await self._read_pool.fetchrow(_GET_SQL, key)
            return None if raw is None else Record(raw[0], decode_values(raw[1]), raw[2])
        query = sa.select(handles.c.handle, handles.c.data, handles.c.version)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query.where(handles.c.key == key))).first()
        return None if row is None else _row_record(row)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        async with self._engine.connect() as conn:
            result = await conn.execute(sa.select(handles).where(handles.c.key.in_(keys)))
            return {row.key: _row_record(row) for row in result}

    async def put(self, key: str, record: Record, expected: int | None) -> bool:
        async with self._engine.begin() as conn:
            return await self._put_one(conn, key, record, expected)

    async def put_many(self, items: Sequence[tuple[str, Record, int | None]]) -> list[bool]:
        """Like :meth:`put` for each item, in one transaction; conflicting items are skipped.

        Distinct keys are written with one INSERT and a few UPDATE statements whatever the
        batch size.  A batch naming a key twice is written item by item, because set-based
        statements would not apply two writes to one key in the order given.
        """
        if not items:
            return []
        async with self._engine.begin() as conn:
            if len({key for key, _, _ in items}) < len(items):
                return [await self._put_one(conn, *item) for item in items]
            # In key order, concurrent batches sharing keys (a client retrying after a timeout)
            # insert them in the same order, so on PostgreSQL they wait instead of deadlocking.
            ordered = sorted(items, key=lambda item: item[0])
            creates = [
                {"key": k, "handle": r.handle, "data": encode_values(r.values), "version": 1}
                for k, r, expected in ordered
                if expected is None
            ]
            updates = [
                (k, r.handle, encode_values(r.values), expected)
                for k, r, expected in ordered
                if expected is not None
            ]
            done = await self._create_many(conn, creates) | await self._update_many(conn, updates)
        return [key in done for key, _, _ in items]

    async def delete(self, key: str, expected: int) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                handles.delete().where(handles.c.key == key, handles.c.version == expected)
            )
            return result.rowcount == 1

    async def list_handles(self, prefix_key: str, offset: int, limit: int) -> tuple[int, list[str]]:
        """Count and one page (by key order) of the display texts of handles under a prefix.

        ``'0'`` follows ``'/'`` in byte order, so the range below is exactly the keys starting
        with ``prefix_key + '/'``, read off the primary-key index.
        """
        under = sa.and_(handles.c.key >= prefix_key + "/", handles.c.key < prefix_key + "0")
        async with self._engine.connect() as conn:
            count = sa.select(sa.func.count()).select_from(handles).where(under)
            total: int = (await conn.execute(count)).scalar_one()
            if limit == 0 or offset >= total:
                return total, []
            page = (
                sa.select(handles.c.handle)
                .where(under)
                .order_by(handles.c.key)
                .offset(offset)
                .limit(limit)
            )
            return total, list((await conn.execute(page)).scalars())

    async def homed_prefixes(self) -> list[str]:
        async with self._engine.connect() as conn:
            # Sorted here rather than in SQL: the display column's collation varies by database.
            return sorted((await conn.execute(sa.select(prefixes.c.prefix))).scalars())

    async def home_prefix(self, prefix: str) -> bool:
        """Home ``prefix`` here; False if it already was (under any ASCII case)."""
        stmt = (
            self._insert(prefixes)
            .values(key=fold(prefix), prefix=prefix)
            .on_conflict_do_nothing(index_elements=[prefixes.c.key])
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def unhome_prefix(self, prefix: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(prefixes.delete().where(prefixes.c.key == fold(prefix)))
            return result.rowcount == 1

    async def _put_one(
        self, conn: AsyncConnection, key: str, record: Record, expected: int | None
    ) -> bool:
        data = encode_values(record.values)
        stmt: sa.Executable
        if expected is None:
            stmt = (
                self._insert(handles)
                .values(key=key, handle=record.handle, data=data, version=1)
                .on_conflict_do_nothing(index_elements=[handles.c.key])
            )
        else:
            stmt = (
                handles.update()
                .where(handles.c.key == key, handles.c.version == expected)
                .values(handle=record.handle, data=data, version=handles.c.version + 1)
            )
        return (await conn.execute(stmt)).rowcount == 1

    async def _create_many(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the rows whose keys are free; the keys inserted."""
        if not rows:
            return set()
        stmt = (
            self._insert(handles)
            .on_conflict_do_nothing(index_elements=[handles.c.key])
            .returning(handles.c.key)
        )
        # SQLAlchemy batches an executemany with RETURNING into multi-row INSERTs.
        return set((await conn.execute(stmt, rows)).scalars())

    async def _update_many(
        self, conn: AsyncConnection, rows: list[tuple[str, str, bytes, int]]
    ) -> set[str]:
        """Apply ``(key, handle, data, expected)`` rows whose version matches; the keys updated."""
        done: set[str] = set()
        for start in range(0, len(rows), _CHUNK):
            incoming = (
                sa.values(
                    sa.column("key", sa.Text),
                    sa.column("handle", sa.Text),
                    sa.column("data", sa.LargeBinary),
                    sa.column("expected", sa.Integer),
                    name="incoming",
                )
                .data(rows[start : start + _CHUNK])
                .cte("incoming")
            )
            stmt = (
                handles.update()
                .where(handles.c.key == incoming.c.key, handles.c.version == incoming.c.expected)
                .values(
                    handle=incoming.c.handle, data=incoming.c.data, version=handles.c.version + 1
                )
                .returning(handles.c.key)
            )
            done.update((await conn.execute(stmt)).scalars())
        return done
