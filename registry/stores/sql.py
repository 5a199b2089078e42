"""The registry's :class:`resolver.ports.RecordStore` on SQLite or PostgreSQL.

Writes and administration go through SQLAlchemy Core on :mod:`registry.tables`.  On PostgreSQL
the per-request read (:meth:`SqlStore.get`) goes through held asyncpg connections instead
(:mod:`registry.stores.read_pool`), because SQLAlchemy costs 3-6x raw asyncpg on a primary-key
read (DESIGN section 4).

With ``journal_as`` the store also keeps the replication journal of :mod:`registry.replication`
(the ``txlog``, ``origins`` and ``replication_cursors`` tables), written in the transaction of
each write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from registry.replication import Applied, Entry, Provenance, next_stamp, now_us, supersedes
from registry.stores.read_pool import ReadPool
from registry.tables import handles, origins, prefixes, replication_cursors, txlog
from resolver.codecs.stored import decode_record, encode_values
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
_GET_MANY_SQL = "SELECT key, handle, data, version FROM handles WHERE key = ANY($1::text[])"

# Journaled transactions run one at a time (see SqlStore._serialize).  On PostgreSQL they hold
# this transaction-scoped advisory lock ("idistxlg"); on SQLite they take the database's write
# lock with a write that changes nothing, since the driver begins its transaction lazily at
# the first write and a read before it would see a state another process can still change.
_JOURNAL_LOCK = 0x6964_6973_7478_6C67
_PG_SERIALIZE = sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_JOURNAL_LOCK)
_SQLITE_SERIALIZE = sa.text("UPDATE replication_cursors SET seq = seq WHERE 0")


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


class SqlStore:
    """A :class:`resolver.ports.RecordStore` on the ``handles`` and ``prefixes`` tables.

    The schema must exist already (``idis migrate``, see :mod:`registry.migrate`).  Nothing
    connects before the first call; :meth:`open` may be awaited to fail early instead.  A SQLite
    file may be shared by several worker processes (see :func:`make_engine`).

    ``pool_size`` and ``max_overflow`` size SQLAlchemy's pool (writes, listings, and reads on
    SQLite); ``read_pool_size`` caps the connections serving :meth:`get` on PostgreSQL.

    ``journal_as`` (the node's federation name) turns the replication journal on: every
    successful put, put_many and delete also appends a ``txlog`` entry in its own transaction,
    so a write is journaled iff it committed, and a write to a key whose live record came from
    a peer fails like a lost compare-and-set.  Journaled writes run one at a time, so seqs
    increase in commit order; :meth:`get` is untouched.  The replication methods are those of
    :class:`registry.replication.Journal`.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        read_pool_size: int = 10,
        busy_timeout_ms: int = 5000,
        journal_as: str | None = None,
    ) -> None:
        engine_url = async_url(url)
        self._journal_as = journal_as
        self._read_pool: ReadPool | None = None
        self._insert: Callable[[sa.Table], postgresql.Insert | sqlite.Insert]
        self._engine = make_engine(
            url, busy_timeout_ms=busy_timeout_ms, pool_size=pool_size, max_overflow=max_overflow
        )
        if engine_url.get_backend_name() == "sqlite":
            self._insert = sqlite.insert
            self._serializer = _SQLITE_SERIALIZE
        else:
            read_dsn = engine_url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._read_pool = ReadPool(read_dsn, read_pool_size)
            self._insert = postgresql.insert
            self._serializer = _PG_SERIALIZE

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

    async def get(self, key: str) -> Record | None:
        """The record of ``key``, with its values' stored form as read (``Record.stored``)."""
        if self._read_pool is not None:
            # The statement is prepared once per connection and reused.
            raw = await self._read_pool.fetchrow(_GET_SQL, key)
            return None if raw is None else decode_record(raw[0], raw[1], raw[2])
        query = sa.select(handles.c.handle, handles.c.data, handles.c.version)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query.where(handles.c.key == key))).first()
        return None if row is None else _row_record(row)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        if self._read_pool is not None:
            rows = await self._read_pool.fetch(_GET_MANY_SQL, list(keys))
            return {row[0]: decode_record(row[1], row[2], row[3]) for row in rows}
        async with self._engine.connect() as conn:
            result = await conn.execute(sa.select(handles).where(handles.c.key.in_(keys)))
            return {row.key: _row_record(row) for row in result}

    async def put(self, key: str, record: Record, expected: int | None) -> bool:
        async with self._engine.begin() as conn:
            if self._journal_as is not None:
                return (await self._journaled_puts(conn, [(key, record, expected)]))[0]
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
            if self._journal_as is not None:
                return await self._journaled_puts(conn, items)
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
            if self._journal_as is not None:
                return await self._journaled_delete(conn, key, expected)
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
        async with self._engine.connect() as conn:
            return {row.key: _row_record(row) for row in await conn.execute(query)}

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

    # --- replication (registry.replication.Journal) -------------------------------------------

    @property
    def journal_as(self) -> str | None:
        return self._journal_as

    async def _serialize(self, conn: AsyncConnection) -> None:
        """Make this transaction the only journaled one until it ends.

        On PostgreSQL a bigserial is drawn when a row is inserted, not when it commits: two
        concurrent writers could commit seq N+1 before seq N, and a peer reading in between
        would move its cursor past N for good.  Running journaled transactions one at a time
        makes seq order commit order; it also makes each read-then-write below consistent.
        Top-level nodes write rarely, so the cost is small.
        """
        await conn.execute(self._serializer)

    async def _provenance(
        self, conn: AsyncConnection, keys: Sequence[str]
    ) -> dict[str, Provenance]:
        held: dict[str, Provenance] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), _CHUNK):
            query = sa.select(origins).where(origins.c.key.in_(unique[start : start + _CHUNK]))
            for row in await conn.execute(query):
                held[row.key] = Provenance(row.origin, row.stamp, bool(row.deleted))
        return held

    def _foreign(self, held: Provenance | None) -> bool:
        return held is not None and not held.deleted and held.origin != self._journal_as

    async def _record_journal(
        self,
        conn: AsyncConnection,
        writes: Sequence[tuple[str, str, bytes | None, int]],
        held: dict[str, Provenance],
    ) -> None:
        """Append ``(key, handle, data, version)`` writes to the log, in order, and note this
        node as their origin."""
        if not writes:
            return
        assert self._journal_as is not None
        now = now_us()
        log_rows, latest = [], {}
        for key, handle, data, version in writes:
            stamp = next_stamp(held.get(key), now)
            held[key] = Provenance(self._journal_as, stamp, data is None)
            log_rows.append(
                {"key": key, "handle": handle, "data": data, "version": version, "stamp": stamp}
            )
            latest[key] = held[key]
        # An executemany inserts in list order, so seqs follow the order of the writes.
        await conn.execute(txlog.insert(), log_rows)
        await self._upsert_origins(conn, latest)

    async def _upsert_origins(self, conn: AsyncConnection, latest: dict[str, Provenance]) -> None:
        stmt = self._insert(origins)
        stmt = stmt.on_conflict_do_update(
            index_elements=[origins.c.key],
            set_={
                "origin": stmt.excluded.origin,
                "stamp": stmt.excluded.stamp,
                "deleted": stmt.excluded.deleted,
            },
        )
        rows = [
            {"key": k, "origin": p.origin, "stamp": p.stamp, "deleted": p.deleted}
            for k, p in latest.items()
        ]
        await conn.execute(stmt, rows)

    async def _journaled_puts(
        self, conn: AsyncConnection, items: Sequence[tuple[str, Record, int | None]]
    ) -> list[bool]:
        """:meth:`put_many` with the journal: item by item (a top-level node's batches are
        small), refusing keys whose live record came from a peer."""
        await self._serialize(conn)
        held = await self._provenance(conn, [key for key, _, _ in items])
        results, writes = [], []
        for key, record, expected in items:
            data = encode_values(record.values)
            ok = not self._foreign(held.get(key)) and await self._put_data(
                conn, key, record.handle, data, expected
            )
            results.append(ok)
            if ok:
                writes.append((key, record.handle, data, (expected or 0) + 1))
        await self._record_journal(conn, writes, held)
        return results

    async def _journaled_delete(self, conn: AsyncConnection, key: str, expected: int) -> bool:
        await self._serialize(conn)
        held = await self._provenance(conn, [key])
        if self._foreign(held.get(key)):
            return False
        stmt = (
            handles.delete()
            .where(handles.c.key == key, handles.c.version == expected)
            .returning(handles.c.handle)
        )
        handle = (await conn.execute(stmt)).scalar_one_or_none()
        if handle is None:
            return False
        await self._record_journal(conn, [(key, handle, None, expected + 1)], held)
        return True

    async def txlog_after(self, seq: int, limit: int) -> list[Entry]:
        query = sa.select(txlog).where(txlog.c.seq > seq).order_by(txlog.c.seq).limit(limit)
        async with self._engine.connect() as conn:
            return [
                Entry(r.seq, r.key, r.handle, r.data, r.version, r.stamp)
                for r in await conn.execute(query)
            ]

    async def txlog_head(self) -> int:
        async with self._engine.connect() as conn:
            head = (await conn.execute(sa.select(sa.func.max(txlog.c.seq)))).scalar_one()
        return int(head or 0)

    async def apply_replica(self, peer: str, entries: Sequence[Entry]) -> Applied:
        if peer == self._journal_as:
            raise ValueError(f"{peer!r} is this node's own name")
        async with self._engine.begin() as conn:
            await self._serialize(conn)
            cursor = await self._cursor(conn, peer)
            fresh = sorted((e for e in entries if e.seq > cursor), key=lambda e: e.seq)
            if not fresh:
                return Applied(cursor, (), 0, ())
            held = await self._provenance(conn, [e.key for e in fresh])
            final: dict[str, Entry] = {}
            conflicts: dict[str, None] = {}
            applied = 0
            for entry in fresh:
                before = held.get(entry.key)
                if before is not None and not before.deleted and before.origin != peer:
                    conflicts[entry.key] = None
                if supersedes(entry.stamp, peer, before):
                    applied += 1
                    held[entry.key] = Provenance(peer, entry.stamp, entry.deleted)
                    final[entry.key] = entry
            # Only the last winning entry of each key matters; each key is written once.
            upserts = [
                {"key": e.key, "handle": e.handle, "data": e.data, "version": e.version}
                for e in final.values()
                if e.data is not None
            ]
            if upserts:
                stmt = self._insert(handles)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[handles.c.key],
                    set_={
                        "handle": stmt.excluded.handle,
                        "data": stmt.excluded.data,
                        "version": stmt.excluded.version,
                    },
                )
                await conn.execute(stmt, upserts)
            gone = sorted(e.key for e in final.values() if e.data is None)
            for start in range(0, len(gone), _CHUNK):
                await conn.execute(
                    handles.delete().where(handles.c.key.in_(gone[start : start + _CHUNK]))
                )
            if final:
                await self._upsert_origins(conn, {key: held[key] for key in final})
            last = max(cursor, fresh[-1].seq)
            await self._set_cursor(conn, peer, last)
        return Applied(last, tuple(final), applied, tuple(conflicts))

    async def _cursor(self, conn: AsyncConnection, peer: str) -> int:
        query = sa.select(replication_cursors.c.seq).where(replication_cursors.c.peer == peer)
        return int((await conn.execute(query)).scalar_one_or_none() or 0)

    async def _set_cursor(self, conn: AsyncConnection, peer: str, seq: int) -> None:
        stmt = self._insert(replication_cursors).values(peer=peer, seq=seq)
        stmt = stmt.on_conflict_do_update(
            index_elements=[replication_cursors.c.peer], set_={"seq": stmt.excluded.seq}
        )
        await conn.execute(stmt)

    async def cursor(self, peer: str) -> int:
        async with self._engine.connect() as conn:
            return await self._cursor(conn, peer)

    async def reset_cursor(self, peer: str, seq: int) -> None:
        async with self._engine.begin() as conn:
            await self._serialize(conn)
            await self._set_cursor(conn, peer, seq)

    async def origin_of(self, key: str) -> str | None:
        query = sa.select(origins.c.origin).where(
            origins.c.key == key, origins.c.deleted.is_(False)
        )
        async with self._engine.connect() as conn:
            origin: str | None = (await conn.execute(query)).scalar_one_or_none()
        return origin

    async def backfill_journal(self) -> int:
        if self._journal_as is None:
            raise ValueError("this store does not journal")
        unjournaled = (
            sa.select(handles.c.key, handles.c.handle, handles.c.data, handles.c.version)
            .where(~sa.exists().where(origins.c.key == handles.c.key))
            .order_by(handles.c.key)
        )
        total = 0
        async with self._engine.begin() as conn:
            await self._serialize(conn)
            rows = (await conn.execute(unjournaled)).all()
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                writes = [(r.key, r.handle, r.data, r.version) for r in chunk]
                await self._record_journal(conn, writes, {})
                total += len(chunk)
        return total
