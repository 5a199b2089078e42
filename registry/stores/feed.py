"""The change feed on SQL: serving the change log with the records (a producer), and applying
it (a mirror, :mod:`nodes.mirror`).  See :mod:`registry.changelog` for what an entry means.

Producer.  :meth:`SqlFeed.read` answers the changes after a cursor with each key's state now;
it raises :class:`FeedBehind` when changes past the cursor were pruned (or the cursor is past
the log's head: the log is not the one the consumer followed), and the consumer re-synchronises
from :meth:`SqlFeed.snapshot` pages instead.

Mirror.  :meth:`SqlFeed.apply` writes a batch of entries and the new cursor in one
transaction, logging the keys in the mirror's own change log (so that its own hosts'
caches follow), so a crash never separates the two and a retried batch changes nothing.  A
re-synchronisation applies snapshot pages (:meth:`SqlFeed.apply_page`: the page's records, and
the deletion of every key in the page's range that it lacks) and then sets the cursor to the
producer's head as read before the first page: whatever changed during the snapshot comes again
from the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.changelog import FeedEntry
from registry.stores.changes import append_changes, head_and_horizon
from registry.stores.sql import SqlStore
from registry.tables import attr_index, feed_cursors, handles, prefixes
from resolver.homes import HOMES_KEY
from resolver.identifiers import fold

# Mirror batches of one source apply one at a time ("idismirr"), whichever host runs them.
_MIRROR_LOCK = 0x6964_6973_6D69_7272
_PG_MIRROR_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_MIRROR_LOCK)


class FeedBehind(Exception):
    """Changes after the consumer's cursor are no longer in the log: re-synchronise."""

    def __init__(self, cursor: int, horizon: int, head: int) -> None:
        super().__init__(
            f"changes after {cursor} are gone (pruned up to {horizon}, head {head}):"
            " re-synchronise from a snapshot"
        )
        self.horizon = horizon
        self.head = head


@dataclass(frozen=True, slots=True)
class FeedPage:
    entries: list[FeedEntry]
    head: int
    """The newest seq of the log when the page was read."""


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    head: int
    """The log's head, read before the records: a consumer continues the log from there."""
    homes: tuple[str, ...]
    records: list[FeedEntry]
    """Records by key order (``seq`` 0)."""
    next: str | None
    """The key to ask after for the next page; None after the last."""


class SqlFeed:
    """The change feed of ``store``'s database."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._engine = store.engine

    @property
    def store(self) -> SqlStore:
        return self._store

    # --- producer ---------------------------------------------------------------------------

    async def read(self, after: int, limit: int) -> FeedPage:
        changes = await self._store.changes_after(after, limit)
        async with self._engine.connect() as conn:
            # Read after the changes: a prune that took some of them moved the horizon first.
            head, horizon = await head_and_horizon(conn)
            head = max(head, horizon)
            if after < horizon or after > head:
                raise FeedBehind(after, horizon, head)
            keys = sorted({c.key for c in changes if not c.key.startswith("/")})
            rows = {}
            if keys:
                query = sa.select(handles).where(handles.c.key.in_(keys))
                rows = {row.key: row for row in await conn.execute(query)}
            homes = None
            if any(c.key == HOMES_KEY for c in changes):
                homes = await _homes(conn)
        entries = []
        for change in changes:
            row = rows.get(change.key)
            if change.key == HOMES_KEY:
                entries.append(FeedEntry(change.seq, change.key, homes=homes))
            elif change.key.startswith("/"):
                entries.append(FeedEntry(change.seq, change.key))
            elif row is None:
                entries.append(FeedEntry(change.seq, change.key, change.key, None, 0))
            else:
                entries.append(FeedEntry(change.seq, change.key, row.handle, row.data, row.version))
        return FeedPage(entries, head)

    async def snapshot(self, after: str, limit: int) -> SnapshotPage:
        async with self._engine.connect() as conn:
            head = max(await head_and_horizon(conn))
            query = (
                sa.select(handles).where(handles.c.key > after).order_by(handles.c.key).limit(limit)
            )
            records = [
                FeedEntry(0, r.key, r.handle, r.data, r.version) for r in await conn.execute(query)
            ]
            homes = await _homes(conn)
        last = records[-1].key if len(records) == limit else None
        return SnapshotPage(head, tuple(homes), records, last)

    # --- mirror -----------------------------------------------------------------------------

    async def cursor(self, source: str) -> int | None:
        """The last seq of ``source``'s log applied here (None: never synchronised)."""
        async with self._engine.connect() as conn:
            return await _cursor(conn, source)

    async def apply(self, source: str, entries: Sequence[FeedEntry], last: int) -> list[str]:
        """Apply ``entries`` (in seq order) and set ``source``'s cursor to ``last``, unless the
        cursor moved past them meanwhile; the keys changed here."""
        async with self._engine.begin() as conn:
            await self._lock(conn)
            cursor = await _cursor(conn, source)
            fresh = [e for e in entries if cursor is None or e.seq > cursor]
            if not fresh:
                return []
            final = {e.key: e for e in fresh if e.is_handle}
            await self._write(conn, list(final.values()))
            changed = list(final)
            homes = [e.homes for e in fresh if e.key == HOMES_KEY and e.homes is not None]
            if homes:
                await _set_homes(conn, homes[-1])
                changed.append(HOMES_KEY)
            await _set_cursor(conn, source, last)
            await append_changes(conn, changed, self._store.origin)
            return changed

    async def apply_page(self, page: SnapshotPage, after: str) -> list[str]:
        """Make the keys in ``(after, page.next]`` (to the end if ``next`` is None) those of
        the page; the homed prefixes too, with the first page (``after == ""``)."""
        async with self._engine.begin() as conn:
            await self._lock(conn)
            span = handles.c.key > after
            if page.next is not None:
                span = sa.and_(span, handles.c.key <= page.next)
            keep = {e.key for e in page.records}
            held = set((await conn.execute(sa.select(handles.c.key).where(span))).scalars())
            gone = sorted(held - keep)
            for start in range(0, len(gone), 500):
                await _drop(conn, gone[start : start + 500])
            await self._write(conn, page.records)
            changed = gone + sorted(keep)
            if after == "":
                await _set_homes(conn, page.homes)
                changed.append(HOMES_KEY)
            await append_changes(conn, changed, self._store.origin)
            return changed

    async def set_cursor(self, source: str, seq: int) -> None:
        async with self._engine.begin() as conn:
            await self._lock(conn)
            await _set_cursor(conn, source, seq)

    async def _lock(self, conn: AsyncConnection) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(_PG_MIRROR_LOCK)

    async def _write(self, conn: AsyncConnection, entries: Sequence[FeedEntry]) -> None:
        upserts = [
            {"key": e.key, "handle": e.handle, "data": e.data, "version": e.version}
            for e in entries
            if e.data is not None
        ]
        if upserts:
            insert = self._store.insert_statement(handles)
            stmt = insert.on_conflict_do_update(
                index_elements=[handles.c.key],
                set_={
                    "handle": insert.excluded.handle,
                    "data": insert.excluded.data,
                    "version": insert.excluded.version,
                },
            )
            await conn.execute(stmt, upserts)
        gone = [e.key for e in entries if e.data is None]
        if gone:
            await _drop(conn, gone)


async def _drop(conn: AsyncConnection, keys: Sequence[str]) -> None:
    """Delete the handles ``keys`` and their search entries: a handle's entries go with it,
    which lets a store skip looking for entries of a handle it creates."""
    await conn.execute(handles.delete().where(handles.c.key.in_(keys)))
    await conn.execute(attr_index.delete().where(attr_index.c.key.in_(keys)))


async def _homes(conn: AsyncConnection) -> tuple[str, ...]:
    return tuple(sorted((await conn.execute(sa.select(prefixes.c.prefix))).scalars()))


async def _set_homes(conn: AsyncConnection, homes: Sequence[str]) -> None:
    await conn.execute(prefixes.delete())
    if homes:
        await conn.execute(prefixes.insert(), [{"key": fold(p), "prefix": p} for p in homes])


async def _cursor(conn: AsyncConnection, source: str) -> int | None:
    query = sa.select(feed_cursors.c.seq).where(feed_cursors.c.source == source)
    seq = (await conn.execute(query)).scalar_one_or_none()
    return None if seq is None else int(seq)


async def _set_cursor(conn: AsyncConnection, source: str, seq: int) -> None:
    done = await conn.execute(
        feed_cursors.update().where(feed_cursors.c.source == source).values(seq=seq)
    )
    if done.rowcount == 0:
        await conn.execute(feed_cursors.insert().values(source=source, seq=seq))
