"""The national statistics' tables: a node's ``usage_daily`` and ``usage_baseline``, and the
top level's ``national_stats`` (registry/usage.py, nodes/stats/)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from registry.stores.sql import make_engine
from registry.tables import handles, national_stats, usage_baseline, usage_daily
from registry.usage import Delta
from resolver.identifiers import fold

CHUNK = 500
"""Rows per statement: 8 parameters a row stays far below the bind-parameter limits of both
SQLite (32766) and PostgreSQL (32767)."""


SERIALIZATION_RETRIES = 10
"""Attempts of a REPEATABLE READ transaction that meets concurrent updates (SQLSTATE 40001)."""


def _serialization_failure(exc: sa.exc.DBAPIError) -> bool:
    """Whether PostgreSQL refused ``exc``'s transaction as a serialization failure (40001)."""
    return getattr(exc.orig, "sqlstate", None) == "40001"


def _chunks(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [rows[n : n + CHUNK] for n in range(0, len(rows), CHUNK)]


@dataclass(frozen=True, slots=True)
class DayFigures:
    """A prefix's absolute figures for one UTC day: what was registered, deleted and resolved
    that day, and how many identifiers lived under it at the day's end (so far, for today)."""

    prefix: str
    day: str
    registered: int
    deleted: int
    resolved: int
    identifiers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "registered": self.registered,
            "deleted": self.deleted,
            "resolved": self.resolved,
            "identifiers": self.identifiers,
        }


@dataclass(frozen=True, slots=True)
class Reported:
    """A row of ``national_stats``."""

    figures: DayFigures
    node: str
    reported_at: datetime


class _Tables:
    def __init__(self, url: str, *, pool_size: int = 1, max_overflow: int = 2) -> None:
        self._engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self._postgres = self._engine.url.get_backend_name() != "sqlite"
        self._insert = postgresql.insert if self._postgres else sqlite.insert

    async def close(self) -> None:
        await self._engine.dispose()


class SqlUsage(_Tables):
    """A node's usage counts: added to by its workers' flushes, read by its reporter."""

    async def add(self, deltas: Sequence[Delta]) -> None:
        """Add ``deltas`` to the day's counts in one transaction, one statement per
        :data:`CHUNK` of them (in key order, so that two workers' flushes never wait on each
        other in a cycle)."""
        if not deltas:
            return
        rows = [
            {
                "prefix": d.prefix,
                "day": d.day,
                "registered": d.registered,
                "deleted": d.deleted,
                "resolved": d.resolved,
            }
            for d in sorted(deltas, key=lambda d: (d.prefix, d.day))
        ]
        async with self._engine.begin() as conn:
            for chunk in _chunks(rows):
                insert = self._insert(usage_daily).values(chunk)
                upsert = insert.on_conflict_do_update(
                    index_elements=[usage_daily.c.prefix, usage_daily.c.day],
                    set_={
                        name: usage_daily.c[name] + insert.excluded[name]
                        for name in ("registered", "deleted", "resolved")
                    },
                )
                await conn.execute(upsert)

    async def unbased(self, prefixes: Sequence[str]) -> list[str]:
        """Those of ``prefixes`` (folded) whose handles were never counted."""
        query = sa.select(usage_baseline.c.prefix).where(usage_baseline.c.prefix.in_(prefixes))
        async with self._engine.connect() as conn:
            based = set((await conn.execute(query)).scalars())
        return [p for p in prefixes if p not in based]

    async def recount(self, prefix: str) -> int:
        """Count the handles under ``prefix`` once, and set its baseline so that its
        identifier total is that count; the count.  One snapshot on PostgreSQL sees the count
        and the sums together; counts still in workers' memory (one flush interval) are then
        counted twice, which the next recount mends."""
        key = fold(prefix)
        count = sa.select(sa.func.count()).where(
            handles.c.key >= key + "/", handles.c.key < key + "0"
        )
        summed = sa.select(
            sa.func.coalesce(sa.func.sum(usage_daily.c.registered - usage_daily.c.deleted), 0)
        ).where(usage_daily.c.prefix == key)
        # Two recounts of one prefix at once (a join and the first report) conflict on the
        # baseline row under REPEATABLE READ; the loser retries on a fresh snapshot, as
        # PostgreSQL asks of serialization failures.
        for attempt in range(SERIALIZATION_RETRIES):
            try:
                return await self._recount_once(key, count, summed)
            except sa.exc.DBAPIError as exc:
                if not _serialization_failure(exc) or attempt == SERIALIZATION_RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # de-synchronise
        raise AssertionError("unreachable")

    async def _recount_once(self, key: str, count: Any, summed: Any) -> int:
        """One attempt of :meth:`recount` in one snapshot."""
        async with self._engine.connect() as conn:
            if self._postgres:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                total = int((await conn.execute(count)).scalar_one())
                counted = int((await conn.execute(summed)).scalar_one())
                row = self._insert(usage_baseline).values(
                    prefix=key, adjustment=total - counted, counted_at=datetime.now(UTC)
                )
                await conn.execute(
                    row.on_conflict_do_update(
                        index_elements=[usage_baseline.c.prefix],
                        set_={
                            "adjustment": row.excluded.adjustment,
                            "counted_at": row.excluded.counted_at,
                        },
                    )
                )
        return total

    async def figures(self, prefixes: Sequence[str], days: Sequence[str]) -> list[DayFigures]:
        """Every one of ``prefixes`` (folded) on every one of ``days`` (ascending), zeros
        included, with its identifier total at each day's end."""
        if not prefixes or not days:
            return []
        first = days[0]
        before = (
            sa.select(
                usage_daily.c.prefix,
                sa.func.sum(usage_daily.c.registered - usage_daily.c.deleted),
            )
            .where(usage_daily.c.prefix.in_(prefixes), usage_daily.c.day < first)
            .group_by(usage_daily.c.prefix)
        )
        window = sa.select(
            usage_daily.c.prefix,
            usage_daily.c.day,
            usage_daily.c.registered,
            usage_daily.c.deleted,
            usage_daily.c.resolved,
        ).where(usage_daily.c.prefix.in_(prefixes), usage_daily.c.day >= first)
        bases = sa.select(usage_baseline.c.prefix, usage_baseline.c.adjustment).where(
            usage_baseline.c.prefix.in_(prefixes)
        )
        async with self._engine.connect() as conn:
            running = {p: int(n or 0) for p, n in await conn.execute(before)}
            for prefix, adjustment in await conn.execute(bases):
                running[prefix] = running.get(prefix, 0) + int(adjustment)
            counts = {
                (r[0], r[1]): (int(r[2]), int(r[3]), int(r[4])) for r in await conn.execute(window)
            }
        found = []
        for prefix in prefixes:
            total = running.get(prefix, 0)
            for day in days:
                registered, deleted, resolved = counts.get((prefix, day), (0, 0, 0))
                total += registered - deleted
                found.append(DayFigures(prefix, day, registered, deleted, resolved, max(total, 0)))
        return found


class SqlNational(_Tables):
    """The top level's ``national_stats``."""

    async def store(self, node: str, figures: Sequence[DayFigures]) -> None:
        """Keep ``figures`` as reported by ``node`` now, replacing what was reported before
        for the same prefix and day; all or nothing (one transaction)."""
        if not figures:
            return
        now = datetime.now(UTC)
        rows = [
            {
                "prefix": f.prefix,
                "day": f.day,
                "node": node,
                "registered": f.registered,
                "deleted": f.deleted,
                "resolved": f.resolved,
                "identifiers": f.identifiers,
                "reported_at": now,
            }
            for f in sorted(figures, key=lambda f: (f.prefix, f.day))
        ]
        replaced = ("node", "registered", "deleted", "resolved", "identifiers", "reported_at")
        async with self._engine.begin() as conn:
            for chunk in _chunks(rows):
                insert = self._insert(national_stats).values(chunk)
                upsert = insert.on_conflict_do_update(
                    index_elements=[national_stats.c.prefix, national_stats.c.day],
                    set_={name: insert.excluded[name] for name in replaced},
                )
                await conn.execute(upsert)

    async def since(self, first: str) -> tuple[list[Reported], list[Reported]]:
        """The rows of days from ``first`` on, and each prefix's latest row before ``first``
        (whose identifier total carries over into days it did not report)."""
        columns = [national_stats.c[n] for n in ("prefix", "day", "registered", "deleted")]
        columns += [national_stats.c[n] for n in ("resolved", "identifiers", "node")]
        columns.append(national_stats.c.reported_at)
        latest = (
            sa.select(national_stats.c.prefix, sa.func.max(national_stats.c.day).label("day"))
            .where(national_stats.c.day < first)
            .group_by(national_stats.c.prefix)
            .subquery()
        )
        earlier = sa.select(*columns).join(
            latest,
            sa.and_(
                latest.c.prefix == national_stats.c.prefix, latest.c.day == national_stats.c.day
            ),
        )
        window = sa.select(*columns).where(national_stats.c.day >= first)
        async with self._engine.connect() as conn:
            rows = [_reported(r) for r in await conn.execute(window)]
            carried = [_reported(r) for r in await conn.execute(earlier)]
        return rows, carried


def _reported(row: Any) -> Reported:
    at = row[7]
    if at.tzinfo is None:  # SQLite gives naive datetimes back
        at = at.replace(tzinfo=UTC)
    figures = DayFigures(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]))
    return Reported(figures, row[6], at)
