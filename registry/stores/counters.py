"""Quota counters in the node's database: the ``quota_counters`` table (registry/quotas.py);
and their in-memory twin, for a registry without a database (tests, the in-memory store)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from registry.quotas import Key
from registry.stores.sql import make_engine
from registry.tables import handles, prefixes
from registry.tables import quota_counters as table
from resolver.identifiers import fold


class SqlCounters:
    """:class:`registry.quotas.Counters` as upserts, one transaction per call."""

    def __init__(self, url: str, *, pool_size: int = 2, max_overflow: int = 4) -> None:
        self._engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        backend = self._engine.url.get_backend_name()
        self._insert = sqlite.insert if backend == "sqlite" else postgresql.insert

    async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
        totals = {}
        async with self._engine.begin() as conn:
            # In one order for every caller, so that two transactions never wait on each other.
            for key in sorted(deltas):
                row = self._insert(table).values(subject=key[0], period=key[1], count=deltas[key])
                upsert = row.on_conflict_do_update(
                    index_elements=[table.c.subject, table.c.period],
                    set_={"count": table.c.count + row.excluded.count},
                ).returning(table.c.count)
                totals[key] = int((await conn.execute(upsert)).scalar_one())
        return totals

    async def recount_registrations(self) -> dict[str, int]:
        """Set the registration count (quota 604) of every prefix homed here to the handles
        living under it now, and answer them by prefix.

        For writes that bypass the registrar (``idis import``): without it the count would
        miss their handles, and deleting them later through any door would give back quota
        that was never taken.  One transaction; a creation reserved meanwhile but not yet
        written is left out (the count errs one low for as long as that write takes).
        """
        counts = {}
        async with self._engine.begin() as conn:
            for prefix in (await conn.execute(sa.select(prefixes.c.prefix))).scalars():
                key = fold(prefix)
                under = sa.and_(handles.c.key >= key + "/", handles.c.key < key + "0")
                total = await conn.scalar(sa.select(sa.func.count()).where(under))
                counts[prefix] = int(total or 0)
                row = self._insert(table).values(
                    subject=f"registrations:prefix:{prefix.lower()}", period="", count=total
                )
                await conn.execute(
                    row.on_conflict_do_update(
                        index_elements=[table.c.subject, table.c.period],
                        set_={"count": row.excluded.count},
                    )
                )
        return counts

    async def close(self) -> None:
        await self._engine.dispose()


class MemoryCounters:
    """:class:`registry.quotas.Counters` in this process only."""

    def __init__(self) -> None:
        self.counts: Counter[Key] = Counter()

    async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
        for key, n in deltas.items():
            self.counts[key] += n
        return {key: self.counts[key] for key in deltas}

    async def close(self) -> None:
        return None
