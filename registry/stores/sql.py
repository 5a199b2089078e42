"""The registry's :class:`resolver.ports.RecordStore` on SQLite or PostgreSQL.

Writes and administration go through SQLAlchemy Core on :mod:`registry.tables`.  On PostgreSQL
the per-request read (:meth:`SqlStore.get`) goes through held asyncpg connections instead
(:mod:`registry.stores.read_pool`), because SQLAlchemy costs 3-6x raw asyncpg on a primary-key
read (DESIGN section 4).

Every write also appends its keys to the change log (:mod:`registry.changelog`) in its own
transaction.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from registry.changelog import MAX_BATCH, Change
from registry.stores import attr_index, outage
from registry.stores.changes import append_changes, head_and_horizon, prune_changes
from registry.stores.read_pool import ReadPool
from registry.tables import change_log, handles, prefixes, template_unique
from resolver.codecs.stored import decode_record, encode_values
from resolver.homes import HOMES_KEY
from resolver.identifiers import fold
from resolver.search import Hit, Query
from resolver.templates import UniqueValueTaken, taken_message
from resolver.values import Record

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}

# Rows per UPDATE ... FROM (VALUES ...) statement: 4 parameters a row stays far below the
# bind-parameter limits of both SQLite (32766) and PostgreSQL (32767).
_CHUNK = 500

READ_RECYCLE = 60.0
"""Seconds a read connection of a multi-host read URL is used before it is replaced."""

_GET_SQL = "SELECT handle, data, version FROM handles WHERE key = $1"
_GET_MANY_SQL = "SELECT key, handle, data, version FROM handles WHERE key = ANY($1::text[])"

_CHANGES_SQL = "SELECT seq, key, origin FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2"
_HEAD_SQL = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM change_log),"
    " (SELECT coalesce(max(seq), 0) FROM change_log_horizon)"
)


_MULTI_HOST = re.compile(
    r"^(?P<scheme>[^:/]+://)(?P<user>[^@/]*@)?(?P<hosts>[^/?]*,[^/?]*)(?P<rest>.*)$"
)


def async_url(url: str) -> URL:
    """The SQLAlchemy async-driver URL of a database URL as users write it.

    ``sqlite:///path/idis.db`` becomes ``sqlite+aiosqlite:///path/idis.db`` and
    ``postgresql://user@host:port/db`` (or ``postgres://``) becomes ``postgresql+asyncpg://...``;
    a driver already named in the URL is replaced.  A libpq multi-host URL
    (``postgresql://user@h1:p1,h2:p2/db?target_session_attrs=read-write``, every host with its
    port) becomes SQLAlchemy's form of it (``...@/db?host=h1:p1&host=h2:p2&...``).  Raise
    ValueError for other databases.
    """
    multi = _MULTI_HOST.match(url)
    if multi:
        path, _, query = multi["rest"].partition("?")
        hosts = "&".join(f"host={host}" for host in multi["hosts"].split(","))
        url = f"{multi['scheme']}{multi['user'] or ''}{path or '/'}?{hosts}"
        url += f"&{query}" if query else ""
    parsed = make_url(url)
    backend = parsed.drivername.partition("+")[0]
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
    return parsed.set(drivername=_ASYNC_DRIVERS[backend])


def as_utc(moment: datetime | None) -> datetime | None:
    """A time read back from the database, in UTC: SQLite keeps no time zone, so what was
    written as UTC comes back naive."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


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
    return decode_record(row.handle, row.data, row.version)


@dataclass(frozen=True, slots=True)
class MemberState:
    """What the database a node reads from says of itself (see :meth:`SqlStore.member_state`)."""

    leader: bool
    """True for a primary (or an embedded database), False for a standby."""
    lag: float
    """Seconds of replication a standby has received but not yet applied, as the age of the
    last applied transaction (0 for a leader, or a standby that has applied all it received)."""


_MEMBER_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery()
              OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8
"""


class SqlStore:
    """A :class:`resolver.ports.RecordStore` on the ``handles`` and ``prefixes`` tables.

    The schema must exist already (``idis migrate``, see :mod:`registry.migrate`).  Nothing
    connects before the first call; :meth:`open` may be awaited to fail early instead.  A SQLite
    file may be shared by several worker processes (see :func:`make_engine`).

    ``pool_size`` and ``max_overflow`` size SQLAlchemy's pool (writes, listings, and reads on
    SQLite); ``read_pool_size`` caps the connections serving :meth:`get` on PostgreSQL.

    Every successful put, put_many, delete, home_prefix and unhome_prefix appends the keys it
    changed to the change log in its transaction; the change log's methods are those of
    :class:`registry.changelog.ChangeLog`, and its reads, like :meth:`get`, go to the local
    database.

    ``read_url``, if given, is where reads go (a site's own member of a replicated cluster)
    while writes go to ``url`` (every member, ``target_session_attrs=read-write``); the
    registrar's reads before a write go to ``url`` too (:meth:`writer_view`).  Connecting is
    bounded by ``connect_timeout``, reads by ``read_timeout`` and the wait for a write by
    ``write_timeout`` seconds; a database out of reach raises
    :class:`resolver.errors.StorageUnavailable` (see :mod:`registry.stores.outage`).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        read_pool_size: int = 10,
        busy_timeout_ms: int = 5000,
        origin: int | None = None,
        read_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        write_timeout: float = 15.0,
    ) -> None:
        engine_url = async_url(url)
        self.origin = origin
        """The host this store writes from, noted with each change it logs."""
        self._read_pool: ReadPool | None = None
        self._insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert]
        self.outage = outage.Outage(
            "the site's database member" if read_url else "the registry's database"
        )
        self.write_outage = outage.Outage("the registry's leader") if read_url else self.outage
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.patient = False
        postgres = engine_url.get_backend_name() != "sqlite"
        # No command timeout on the writer: a write is never cancelled (registry/stores/outage).
        # Pooled connections are checked on checkout (one round trip): after an outage or a
        # failover, a dead one is replaced rather than failing a write.
        bounded: dict[str, Any] = (
            {"connect_args": {"timeout": connect_timeout}, "pool_pre_ping": True}
            if postgres
            else {}
        )
        self._engine = make_engine(
            url,
            busy_timeout_ms=busy_timeout_ms,
            pool_size=pool_size,
            max_overflow=max_overflow,
            **bounded,
        )
        self._reader = self._engine
        if read_url and read_url != url:
            self._reader = make_engine(read_url, busy_timeout_ms=busy_timeout_ms, **bounded)
        if not postgres:
            self._insert = sqlite.insert
        else:
            # asyncpg reads libpq URLs, multi-host ones included, as users write them.
            read_dsn = read_url or engine_url.set(drivername="postgresql").render_as_string(
                hide_password=False
            )
            connect = functools.partial(
                asyncpg.connect, timeout=connect_timeout, command_timeout=read_timeout
            )
            self._read_dsn, self._connect = read_dsn, connect
            # Reads that fell over from the site's own member come back to it within a minute.
            recycle = READ_RECYCLE if read_url and "," in read_url else None
            self._read_pool = ReadPool(read_dsn, read_pool_size, connect, max_age=recycle)
            self._insert = postgresql.insert

    @outage.read
    async def open(self) -> None:
        """Connect now (a first PostgreSQL read connection, or the SQLite file). Idempotent."""
        if self._read_pool is not None:
            await self._read_pool.open()
            return
        async with self._engine.connect():
            pass

    async def close(self) -> None:
        """Close every connection; the store is unusable afterwards."""
        if self._read_pool is not None:
            await self._read_pool.close()
        await self._engine.dispose()
        if self._reader is not self._engine:
            await self._reader.dispose()

    def writer_view(self) -> SqlStore:
        """This store with its reads going where its writes go, and waiting through an outage
        as writes do, for the read-then-write of the registrar: a site's own member may lag
        behind the leader.  It shares this store's
        connections; close this store, not the view."""
        if self._reader is self._engine:
            return self
        view = copy.copy(self)
        view._reader = self._engine
        view._read_pool = None
        view.patient = True  # its reads wait through a switchover as the writes do
        return view

    async def lost_writer(self) -> None:
        """Drop the pooled write connections: a failover may have left them on a standby."""
        await self._engine.dispose()

    @outage.read
    async def member_state(self) -> MemberState:
        """Whether the database reads come from is a leader or a standby, and its lag."""
        if self._read_pool is None:
            return MemberState(True, 0.0)
        # A connection of its own: pooled ones may have fallen over to another member while
        # the site's own was down, and this is about the member reads go to first.
        conn = await self._connect(self._read_dsn)
        try:
            row = await conn.fetchrow(_MEMBER_SQL)
        finally:
            conn.terminate()
        assert row is not None
        return MemberState(not row[0], max(0.0, float(row[1])))

    @outage.read
    async def get(self, key: str) -> Record | None:
        """The record of ``key``, with its values' stored form as read (``Record.stored``)."""
        if self._read_pool is not None:
            # The statement is prepared once per connection and reused.
            raw = await self._read_pool.fetchrow(_GET_SQL, key)
            return None if raw is None else decode_record(raw[0], raw[1], raw[2])
        query = sa.select(handles.c.handle, handles.c.data, handles.c.version)
        async with self._reader.connect() as conn:
            row = (await conn.execute(query.where(handles.c.key == key))).first()
        return None if row is None else _row_record(row)

    @outage.read
    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        if self._read_pool is not None:
            rows = await self._read_pool.fetch(_GET_MANY_SQL, list(keys))
            return {row[0]: decode_record(row[1], row[2], row[3]) for row in rows}
        async with self._reader.connect() as conn:
            result = await conn.execute(sa.select(handles).where(handles.c.key.in_(keys)))
            return {row.key: _row_record(row) for row in result}

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine of writes and administration (for :mod:`registry.stores.feed`)."""
        return self._engine

    def insert_statement(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT with this database's ON CONFLICT clauses."""
        return self._insert(table)

    @outage.write
    async def put(self, key: str, record: Record, expected: int | None) -> bool:
        async with self._engine.begin() as conn:
            done = await self._put_one(conn, key, record, expected)
            if done:
                await self._claim(conn, [(key, record)])
                created = (key,) if expected is None else ()
                await attr_index.replace_entries(conn, self._insert, [(key, record)], created)
                await self._log(conn, [key])
            return done

    @outage.write
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
                results = [await self._put_one(conn, *item) for item in items]
                pairs = list(zip(items, results, strict=True))
                await self._claim(conn, [(k, r) for (k, r, _), ok in pairs if ok])
                await attr_index.replace_entries(
                    conn, self._insert, [(k, r) for (k, r, _), ok in pairs if ok]
                )
                await self._log(conn, [k for (k, _, _), ok in pairs if ok])
                return results
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
            await self._claim(conn, [(k, r) for k, r, _ in items if k in done])
            await attr_index.replace_entries(
                conn,
                self._insert,
                [(k, r) for k, r, _ in items if k in done],
                {k for k, _, expected in items if expected is None},
            )
            await self._log(conn, [key for key, _, _ in ordered if key in done])
        return [key in done for key, _, _ in items]

    @outage.write
    async def delete(self, key: str, expected: int) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                handles.delete().where(handles.c.key == key, handles.c.version == expected)
            )
            if result.rowcount != 1:
                return False
            await conn.execute(template_unique.delete().where(template_unique.c.key == key))
            await attr_index.drop_entries(conn, key)
            await self._log(conn, [key])
            return True

    async def _claim(self, conn: AsyncConnection, written: Sequence[tuple[str, Record]]) -> None:
        """Replace the unique template values the keys of ``written`` hold with those their
        records claim (see ``Record.claims``), in the write's transaction; raise
        :class:`UniqueValueTaken`, undoing the whole write, if another key holds one.

        On PostgreSQL the primary key makes a concurrent writer of the same value wait for
        this transaction, then find the value taken.
        """
        written = [(k, r) for k, r in written if r.claims is not None]
        if not written:
            return
        table = template_unique
        await conn.execute(table.delete().where(table.c.key.in_([k for k, _ in written])))
        wanted = [(claim, k) for k, r in written for claim in r.claims or ()]
        if not wanted:
            return
        stmt = (
            self._insert(table)
            .on_conflict_do_nothing()
            .returning(table.c.template, table.c.item, table.c.value, table.c.key)
        )
        rows = [{"template": t, "item": i, "value": v, "key": k} for (t, i, v), k in wanted]
        inserted = {((t, i, v), k) for t, i, v, k in await conn.execute(stmt, rows)}
        taken: dict[str, str] = {}
        for claim, key in wanted:
            if (claim, key) not in inserted:
                taken.setdefault(key, taken_message(claim))
        if taken:
            raise UniqueValueTaken(taken)

    @outage.read
    async def search(self, query: Query) -> list[Hit]:
        """Entries matching ``query`` (see :mod:`registry.stores.attr_index`): a page of
        ``query.limit`` and one more if another page follows, in keyset order."""
        sql, args = attr_index.statement(query)
        if self._read_pool is not None:
            text, names = attr_index.numbered(sql)
            rows = await self._read_pool.fetch(text, *(args[name] for name in names))
        else:
            async with self._reader.connect() as conn:
                rows = list(await conn.execute(sa.text(sql), args))
        return attr_index.hits(query, rows)

    @outage.read
    async def list_handles(self, prefix_key: str, offset: int, limit: int) -> tuple[int, list[str]]:
        """Count and one page (by key order) of the display texts of handles under a prefix.

        ``'0'`` follows ``'/'`` in byte order, so the range below is exactly the keys starting
        with ``prefix_key + '/'``, read off the primary-key index.
        """
        under = sa.and_(handles.c.key >= prefix_key + "/", handles.c.key < prefix_key + "0")
        async with self._reader.connect() as conn:
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

    @outage.read
    async def records_under(
        self, prefix_key: str, limit: int, after: str = ""
    ) -> dict[str, Record]:
        """A page of the records of handles under a prefix, by key (the range of
        :meth:`list_handles`, from after ``after``)."""
        under = sa.and_(
            handles.c.key >= prefix_key + "/",
            handles.c.key < prefix_key + "0",
            handles.c.key > after,
        )
        query = sa.select(handles).where(under).order_by(handles.c.key).limit(limit)
        async with self._reader.connect() as conn:
            return {row.key: _row_record(row) for row in await conn.execute(query)}

    @outage.read
    async def homed_prefixes(self) -> list[str]:
        async with self._reader.connect() as conn:
            # Sorted here rather than in SQL: the display column's collation varies by database.
            return sorted((await conn.execute(sa.select(prefixes.c.prefix))).scalars())

    @outage.write
    async def home_prefix(self, prefix: str) -> bool:
        """Home ``prefix`` here; False if it already was (under any ASCII case)."""
        stmt = (
            self._insert(prefixes)
            .values(key=fold(prefix), prefix=prefix)
            .on_conflict_do_nothing(index_elements=[prefixes.c.key])
        )
        async with self._engine.begin() as conn:
            return await self._homes_changed(conn, (await conn.execute(stmt)).rowcount)

    @outage.write
    async def unhome_prefix(self, prefix: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(prefixes.delete().where(prefixes.c.key == fold(prefix)))
            return await self._homes_changed(conn, result.rowcount)

    async def _homes_changed(self, conn: AsyncConnection, rowcount: int) -> bool:
        if rowcount != 1:
            return False
        await self._log(conn, [HOMES_KEY])
        return True

    async def _log(self, conn: AsyncConnection, keys: Sequence[str]) -> None:
        await append_changes(conn, keys, self.origin)

    async def _put_one(
        self, conn: AsyncConnection, key: str, record: Record, expected: int | None
    ) -> bool:
        data = encode_values(record.values)
        return await self._put_data(conn, key, record.handle, data, expected)

    async def _put_data(
        self, conn: AsyncConnection, key: str, handle: str, data: bytes, expected: int | None
    ) -> bool:
        stmt: sa.Executable
        if expected is None:
            stmt = (
                self._insert(handles)
                .values(key=key, handle=handle, data=data, version=1)
                .on_conflict_do_nothing(index_elements=[handles.c.key])
            )
        else:
            stmt = (
                handles.update()
                .where(handles.c.key == key, handles.c.version == expected)
                .values(handle=handle, data=data, version=handles.c.version + 1)
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

    # --- the change log (registry.changelog.ChangeLog) ----------------------------------------

    @outage.read
    async def changes_after(self, seq: int, limit: int = MAX_BATCH) -> list[Change]:
        if self._read_pool is not None:
            rows = await self._read_pool.fetch(_CHANGES_SQL, seq, limit)
            return [Change(row[0], row[1], row[2]) for row in rows]
        query = (
            sa.select(change_log.c.seq, change_log.c.key, change_log.c.origin)
            .where(change_log.c.seq > seq)
            .order_by(change_log.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [Change(r.seq, r.key, r.origin) for r in await conn.execute(query)]

    @outage.read
    async def _head_and_horizon(self) -> tuple[int, int]:
        if self._read_pool is not None:
            row = await self._read_pool.fetchrow(_HEAD_SQL)
            assert row is not None
            return int(row[0]), int(row[1])
        async with self._engine.connect() as conn:
            return await head_and_horizon(conn)

    async def change_head(self) -> int:
        return max(await self._head_and_horizon())

    async def change_horizon(self) -> int:
        return (await self._head_and_horizon())[1]

    @outage.write
    async def prune_changes(self, older_than: float, limit: int) -> int:
        async with self._engine.begin() as conn:
            return await prune_changes(conn, older_than, limit)
