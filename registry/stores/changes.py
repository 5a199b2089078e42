"""Writing and pruning the change log (:mod:`registry.changelog`) inside a store's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.tables import change_log, change_log_horizon

# On PostgreSQL a bigserial is drawn when a row is inserted, not when it commits: two writers
# could commit seq N+1 before seq N, and a reader in between would move its cursor past N for
# good.  So a transaction takes this transaction-scoped advisory lock ("idischlg") just before
# it appends, as its last statement: appends and commits run one at a time, seq order is
# commit order, and the rest of every write still runs concurrently.  (A streaming standby
# replays commits in the leader's order, so the same holds there.)  On SQLite the database's
# write lock, held from a transaction's first write to its commit, already does this.
_LOG_LOCK = 0x6964_6973_6368_6C67
_PG_SERIALIZE = sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_LOG_LOCK)


async def append_changes(
    conn: AsyncConnection, keys: Sequence[str], origin: int | None = None
) -> None:
    """Log ``keys`` as changed by the transaction of ``conn``, written on the host ``origin``
    (see :class:`registry.changelog.Change`); call it last, just before the commit (it
    serialises commits on PostgreSQL from here on)."""
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(_PG_SERIALIZE)
    await conn.execute(change_log.insert(), [{"key": key, "origin": origin} for key in keys])


async def head_and_horizon(conn: AsyncConnection) -> tuple[int, int]:
    """The newest seq in the log (0 if it is empty) and the last seq pruned."""
    head = (await conn.execute(sa.select(sa.func.max(change_log.c.seq)))).scalar_one()
    horizon = (await conn.execute(sa.select(change_log_horizon.c.seq))).scalar_one_or_none()
    return int(head or 0), int(horizon or 0)


async def prune_changes(conn: AsyncConnection, older_than: float, limit: int) -> int:
    """Delete the longest run of at most ``limit`` changes from the start of the log that were
    all logged more than ``older_than`` seconds ago, and move the horizon past them."""
    oldest = sa.select(change_log.c.seq, change_log.c.at).order_by(change_log.c.seq).limit(limit)
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
    last, count = 0, 0
    for seq, at in await conn.execute(oldest):
        if (at if at.tzinfo else at.replace(tzinfo=UTC)) >= cutoff:
            break
        last, count = seq, count + 1
    if not count:
        return 0
    await conn.execute(change_log.delete().where(change_log.c.seq <= last))
    # Pruners on several hosts may race: the horizon only ever moves forward.
    await conn.execute(
        change_log_horizon.update()
        .where(change_log_horizon.c.id == 1, change_log_horizon.c.seq < last)
        .values(seq=last)
    )
    return count
