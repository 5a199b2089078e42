"""Quotas per identity and per prefix: daily resolutions (603), registrations (604), prefixes
(605), as IDIS nodes enforce them.  Every limit is off (0) unless configured.

Daily resolutions are on the hot path, so they are counted in the worker's memory and
flushed every ``flush_seconds`` to a shared :class:`Counters` (Redis where the node has one,
the database otherwise), which answers the totals of every worker and host.  A request is
refused when the last total seen plus what this worker counted since reaches the limit: a
dict lookup and an addition, no round trip.  The allowance: between two flushes each worker
may let through what it serves in one interval beyond the limit (W workers, R requests per
second: at most W x R x ``flush_seconds``).  Days are UTC days.

Registrations and prefixes are counted as they are written (the write is a database round
trip already), always in the database, where counts are durable: reserved before the write,
released if the write does not happen.  Per prefix the count is what lives under it now
(deleting frees quota); per identity it is what the identity has created (work done, as the
national system's account quotas count).  Handles that arrive by replication are not
counted; ``idis import`` is not refused, but recounts the per-prefix registration counts from
what lives under each prefix afterwards (registry/stores/counters.py), so that deleting imported
handles does not give back quota that was never taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from registry.usage import MAX_PREFIXES, Usage
from resolver.errors import QuotaExceeded
from resolver.identifiers import Handle
from resolver.values import Ref

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""``(subject, period)``: ``("resolutions:prefix:88.100", "2026-12-06")``."""
MAX_SUBJECTS = 100_000
"""Subjects one worker follows in a day; past it the day's follow-ups start over."""


class Counters(Protocol):
    """Shared counters (nodes/redis_counters.py, registry/stores/counters.py)."""

    async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
        """Add each delta (0 reads) and answer every key's total after it, atomically per key."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """0: no limit."""

    resolutions_per_prefix: int = 0
    resolutions_per_identity: int = 0
    registrations_per_prefix: int = 0
    registrations_per_identity: int = 0
    prefixes_per_prefix: int = 0
    prefixes_per_identity: int = 0
    flush_seconds: float = 1.0

    @property
    def any(self) -> bool:
        return any(
            (
                self.resolutions_per_prefix,
                self.resolutions_per_identity,
                self.registrations_per_prefix,
                self.registrations_per_identity,
                self.prefixes_per_prefix,
                self.prefixes_per_identity,
            )
        )


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class Quotas:
    """The node's quotas; ``daily`` counts resolutions, ``standing`` registrations."""

    def __init__(
        self,
        limits: QuotaLimits,
        daily: Counters,
        standing: Counters,
        *,
        clock: Callable[[], float] = time.time,
        usage: Usage | None = None,
    ) -> None:
        """``usage``, if given, also counts every admitted resolution per prefix for the
        national statistics (registry/usage.py), in this one place every door calls."""
        self.limits = limits
        self._resolutions = None if usage is None else usage.resolutions
        self._daily = daily
        self._standing = standing
        self._clock = clock
        self._period = _day(clock())
        self._pending: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.refused: Counter[int] = Counter()
        if not limits.any:
            # Nothing to limit, only usage to count: the hot path skips every limit check.
            self.admit = self._count_only  # type: ignore[method-assign]

    # --- daily resolutions (the hot path) -------------------------------------------------

    def admit(self, key: str, identity: Ref | None = None, *, note: bool = True) -> bool:
        """Count one resolution of the folded ``key`` (by ``identity``, if authenticated);
        False, counting nothing, if its prefix's or the identity's day is spent.  On the hot
        path: a few dict operations, no round trip.  ``note=False`` leaves a refusal out of
        the refusal counts, for a door that asks again before it answers (DNS over UDP)."""
        pending, totals = self._pending, self._totals
        per_prefix = self.limits.resolutions_per_prefix
        if per_prefix:
            prefix = "resolutions:prefix:" + key.partition("/")[0]
            counted = pending.get(prefix, 0)
            if totals.get(prefix, 0) + counted >= per_prefix:
                return self._refuse() if note else False
        per_identity = self.limits.resolutions_per_identity
        if identity is not None and per_identity:
            who = f"resolutions:identity:{identity}"
            mine = pending.get(who, 0)
            if totals.get(who, 0) + mine >= per_identity:
                return self._refuse() if note else False
            pending[who] = mine + 1
        if per_prefix:
            pending[prefix] = counted + 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flushing())
        return self._count_only(key)

    def _count_only(self, key: str, identity: Ref | None = None, *, note: bool = True) -> bool:
        """Count a resolution of ``key`` for the national statistics (registry/usage.py), if
        asked: one dict addition.  :meth:`admit` itself when no limit is set."""
        resolutions = self._resolutions
        if resolutions is not None:
            homed = key.partition("/")[0]
            if homed in resolutions:
                resolutions[homed] += 1
            elif len(resolutions) < MAX_PREFIXES:
                resolutions[homed] = 1
        return True

    def _refuse(self) -> bool:
        self.refused[QuotaExceeded.DAILY_RESOLUTIONS] += 1
        return False

    def resolved(self, key: str, identity: Ref | None = None) -> None:
        """:meth:`admit`, raising the refusal (:meth:`refusal`) instead of answering False."""
        if not self.admit(key, identity):
            raise self.refusal(key, identity)

    def refusal(self, key: str, identity: Ref | None = None) -> QuotaExceeded:
        """The error that refuses a resolution of ``key`` (code 603)."""
        limits = self.limits
        who = f"prefix {key.partition('/')[0]}"
        if identity is not None and limits.resolutions_per_identity:
            subject = f"resolutions:identity:{identity}"
            used = self._totals.get(subject, 0) + self._pending.get(subject, 0)
            if used >= limits.resolutions_per_identity:
                who = f"identity {identity}"
        return QuotaExceeded(
            QuotaExceeded.DAILY_RESOLUTIONS, f"daily resolution quota of {who} spent", handle=key
        )

    async def _flushing(self) -> None:
        while True:
            await asyncio.sleep(self.limits.flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        """Send this worker's counts since the last flush, and learn every worker's totals."""
        period = _day(self._clock())
        if period != self._period:  # a new day: yesterday's counts are done with
            self._period, self._totals = period, {}
            self._pending.clear()
        if len(self._totals) > MAX_SUBJECTS:
            self._totals = {}
        pending, self._pending = self._pending, {}
        deltas = {(s, period): pending.get(s, 0) for s in {*pending, *self._totals}}
        if not deltas:
            return
        # While the counts are on their way, admit() must still see them: they move into the
        # totals now (the store's answer includes them), not when the answer comes.
        totals_before = self._totals
        self._totals = {s: totals_before.get(s, 0) + pending.get(s, 0) for s, _ in deltas}
        try:
            totals = await self._daily.add(deltas)
        except Exception as error:  # a store down means counting on here, not failing
            self._totals = totals_before
            for subject, n in pending.items():
                self._pending[subject] = self._pending.get(subject, 0) + n
            if not self._failing:
                log.warning("quota counters unreachable (%s): counting in this worker", error)
            self._failing = True
            return
        self._failing = False
        self._totals = {subject: total for (subject, _), total in totals.items()}

    # --- registrations and prefixes ---------------------------------------------------------

    def _standing_subjects(self, identity: Ref, handle: Handle) -> list[tuple[str, int, int]]:
        """``(subject, limit, code)`` of the standing counts a creation of ``handle`` adds to."""
        limits = self.limits
        if handle.is_prefix_record:
            parent = handle.suffix.rpartition(".")[0] or handle.suffix
            per_prefix, per_identity = limits.prefixes_per_prefix, limits.prefixes_per_identity
            kind, code, owner = "prefixes", QuotaExceeded.PREFIXES, parent
        else:
            per_prefix = limits.registrations_per_prefix
            per_identity = limits.registrations_per_identity
            kind, code, owner = "registrations", QuotaExceeded.REGISTRATIONS, handle.prefix
        subjects = []
        if per_prefix:
            subjects.append((f"{kind}:prefix:{owner.lower()}", per_prefix, code))
        if per_identity:
            subjects.append((f"{kind}:identity:{identity}", per_identity, code))
        return subjects

    async def reserve(self, identity: Ref, handles: Sequence[Handle]) -> None:
        """Count the creation of ``handles`` by ``identity``, all or none: raise
        :class:`QuotaExceeded` (604, or 605 for prefix records) if that passes a limit."""
        deltas: Counter[Key] = Counter()
        limit_of: dict[str, tuple[int, int]] = {}
        for handle in handles:
            for subject, limit, code in self._standing_subjects(identity, handle):
                deltas[(subject, "")] += 1
                limit_of[subject] = (limit, code)
        if not deltas:
            return
        totals = await self._standing.add(deltas)
        over = [(s, *limit_of[s]) for (s, _), n in totals.items() if n > limit_of[s][0]]
        if over:
            await self._standing.add({key: -n for key, n in deltas.items()})
            subject, limit, code = over[0]
            self.refused[code] += 1
            what = "registration" if code == QuotaExceeded.REGISTRATIONS else "prefix"
            raise QuotaExceeded(code, f"{what} quota of {subject.split(':', 1)[1]} spent ({limit})")

    async def release(
        self, identity: Ref | None, handles: Sequence[Handle], *, deleted: bool
    ) -> None:
        """Give back what :meth:`reserve` counted for ``handles``: all of it for creations that
        did not happen, the per-prefix count only for handles ``deleted`` since."""
        deltas: Counter[Key] = Counter()
        for handle in handles:
            for subject, _, _ in self._standing_subjects(identity or Ref("", 0), handle):
                if not deleted or ":prefix:" in subject:
                    deltas[(subject, "")] -= 1
        if deltas:
            with contextlib.suppress(Exception):  # a count left high errs on the safe side
                await self._standing.add(deltas)

    def stats(self) -> dict[str, int]:
        return {str(code): n for code, n in self.refused.items()}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            with contextlib.suppress(Exception):
                await self.flush()  # this worker's last counts
        await self._daily.close()
        if self._standing is not self._daily:
            await self._standing.close()
