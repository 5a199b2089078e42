"""Where enterprise prefix applications are kept: the ``prefix_applications`` table, or a dict.

Both implement :class:`registry.enterprise.ApplicationStore`; one contract suite
(``tests/test_enterprise.py``) runs against the memory twin, SQLite and PostgreSQL.  An open
application (pending or approved) holds its prefix: adding a second one for the same prefix
fails, in SQL through the partial unique index ``prefix_applications_open_key``, so that two
concurrent applications cannot both be accepted.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.changelog import APPLICATIONS_KEY
from registry.enterprise import OPEN_STATUSES, Application, Hosting, Status
from registry.stores.changes import append_changes
from registry.stores.sql import as_utc, make_engine
from registry.tables import OPEN_APPLICATION
from registry.tables import prefix_applications as table

_OPEN = table.c.status.in_(OPEN_STATUSES)


def _row_application(row: Any) -> Application:
    created = as_utc(row.created_at)
    assert created is not None
    return Application(
        id=row.id,
        prefix=row.prefix,
        name=row.name,
        contact=row.contact,
        hosting=cast(Hosting, row.hosting),
        site_url=row.site_url,
        secret_hash=row.secret_hash,
        status=cast(Status, row.status),
        created_at=created,
        decided_at=as_utc(row.decided_at),
        decided_by=row.decided_by,
        reason=row.reason,
    )


class SqlApplications:
    """Applications in the node's database (SQLite or PostgreSQL, schema by ``idis migrate``).

    Administrative traffic only, so the engine keeps a small pool of its own.
    """

    def __init__(self, url: str, *, pool_size: int = 2, max_overflow: int = 4) -> None:
        self._engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        backend = self._engine.url.get_backend_name()
        self._insert = sqlite.insert if backend == "sqlite" else postgresql.insert

    async def add(self, application: Application) -> bool:
        stmt = (
            self._insert(table)
            .values(
                id=application.id,
                prefix=application.prefix,
                key=application.key,
                parent=application.parent_key,
                name=application.name,
                contact=application.contact,
                hosting=application.hosting,
                site_url=application.site_url,
                secret_hash=application.secret_hash,
                status=application.status,
                created_at=application.created_at,
            )
            .on_conflict_do_nothing(index_elements=[table.c.key], index_where=OPEN_APPLICATION)
        )
        async with self._engine.begin() as conn:
            return await _logged(conn, (await conn.execute(stmt)).rowcount)

    async def get(self, application_id: str) -> Application | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.id == application_id))).first()
        return None if row is None else _row_application(row)

    async def holder(self, key: str) -> Application | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.key == key, _OPEN))).first()
        return None if row is None else _row_application(row)

    async def parents(self) -> list[str]:
        async with self._engine.connect() as conn:
            return list((await conn.execute(sa.select(table.c.parent).distinct())).scalars())

    async def list(
        self, parents: Collection[str], status: Status | None, limit: int
    ) -> list[Application]:
        if not parents:
            return []
        query = sa.select(table).where(table.c.parent.in_(list(parents)))
        if status is not None:
            query = query.where(table.c.status == status)
        query = query.order_by(table.c.created_at, table.c.id).limit(limit)
        async with self._engine.connect() as conn:
            return [_row_application(row) for row in await conn.execute(query)]

    async def decide(
        self,
        application_id: str,
        status: Status,
        decided_at: datetime,
        decided_by: str,
        reason: str | None,
    ) -> bool:
        stmt = (
            table.update()
            .where(table.c.id == application_id, table.c.status == "pending")
            .values(status=status, decided_at=decided_at, decided_by=decided_by, reason=reason)
        )
        async with self._engine.begin() as conn:
            return await _logged(conn, (await conn.execute(stmt)).rowcount)

    async def close(self) -> None:
        await self._engine.dispose()


async def _logged(conn: AsyncConnection, rowcount: int) -> bool:
    """Whether one application was written; if so, say so in the change log."""
    if rowcount != 1:
        return False
    await append_changes(conn, [APPLICATIONS_KEY])
    return True


class MemoryApplications:
    """The in-memory twin of :class:`SqlApplications`."""

    def __init__(self) -> None:
        self._items: dict[str, Application] = {}

    async def add(self, application: Application) -> bool:
        if application.id in self._items or await self.holder(application.key):
            return False
        self._items[application.id] = application
        return True

    async def get(self, application_id: str) -> Application | None:
        return self._items.get(application_id)

    async def holder(self, key: str) -> Application | None:
        return next(
            (a for a in self._items.values() if a.key == key and a.status in OPEN_STATUSES), None
        )

    async def parents(self) -> list[str]:
        return sorted({a.parent_key for a in self._items.values()})

    async def list(
        self, parents: Collection[str], status: Status | None, limit: int
    ) -> list[Application]:
        chosen = [
            a
            for a in self._items.values()
            if a.parent_key in parents and (status is None or a.status == status)
        ]
        chosen.sort(key=lambda a: (a.created_at, a.id))
        return chosen[:limit]

    async def decide(
        self,
        application_id: str,
        status: Status,
        decided_at: datetime,
        decided_by: str,
        reason: str | None,
    ) -> bool:
        current = self._items.get(application_id)
        if current is None or current.status != "pending":
            return False
        self._items[application_id] = replace(
            current, status=status, decided_at=decided_at, decided_by=decided_by, reason=reason
        )
        return True

    async def close(self) -> None:
        return None
