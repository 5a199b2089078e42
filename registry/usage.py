"""Counting a node's usage per prefix and UTC day, for the national statistics (运行监测).

Each process counts in its own memory and a flusher (nodes/stats/flusher.py) moves the counts,
every few seconds and off the hot path, into the ``usage_daily`` table with one
``INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x`` statement per flush: no write of a
shared counter row per request or per registration (that would serialise concurrent commits),
no ``COUNT(*)`` over the registry.

- **Resolutions** are counted where the quotas already count every resolution of every door
  (:meth:`registry.quotas.Quotas.admit`: REST, native Handle, GS1, SNMS), as one dict addition
  into :attr:`Usage.resolutions`; a resolution a quota refuses is not counted.  Which prefixes
  are kept is decided at flush time: only those homed on the node (the others, e.g. keys a
  client made up, are dropped, not counted), and at most :data:`MAX_PREFIXES` distinct
  prefixes between two flushes (past that, new prefixes are not counted until the next flush).
- **Registrations and deletions** are counted by the registrar when a write created or deleted
  a whole handle (:class:`registry.service.Registrar`).  Handles that arrive by ``idis import``
  or replication are not counted as registrations of the day: ``idis stats recount`` (run by
  ``idis import`` at its end) re-establishes each prefix's identifier total.
- Days are **UTC** days.  A flush's counts belong to the day the flush interval began in; the
  flusher ends an interval at midnight UTC, so counts land on the right day up to scheduling
  jitter.

A worker that crashes loses the counts of at most one flush interval: these are statistics,
not records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_PREFIXES = 10_000
"""Distinct prefixes one process counts resolutions of between two flushes."""


def utc_day(now: float) -> str:
    """The UTC day of the epoch time ``now``, as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def seconds_to_midnight(now: float) -> float:
    """Seconds from ``now`` until the next UTC day begins."""
    return 86400.0 - (now % 86400.0)


def prefix_of(key: str) -> str:
    """The prefix of a folded handle key (``88.100.1/ABC`` → ``88.100.1``)."""
    return key.partition("/")[0]


def industry_of(prefix: str) -> str:
    """The industry (secondary) node a prefix belongs to: its first two labels
    (``88.100.1`` → ``88.100``; ``88.100`` → ``88.100``)."""
    return ".".join(prefix.split(".")[:2])


@dataclass(frozen=True, slots=True)
class Delta:
    """What one process counted for one prefix on one day since its last flush."""

    prefix: str
    day: str
    registered: int = 0
    deleted: int = 0
    resolved: int = 0


class Usage:
    """One process's counts since its last :meth:`drain`.

    :attr:`resolutions` is a plain dict the quotas add to on the hot path (prefix → count, at
    most :data:`MAX_PREFIXES` of them: :meth:`registry.quotas.Quotas.admit`);
    :meth:`registered` and :meth:`deleted` are called by the registrar after a write.
    """

    __slots__ = ("_clock", "_created", "_day", "_deleted", "resolutions")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._day = utc_day(clock())
        self.resolutions: dict[str, int] = {}
        self._created: dict[str, int] = {}
        self._deleted: dict[str, int] = {}

    def registered(self, key: str, n: int = 1) -> None:
        prefix = prefix_of(key)
        self._created[prefix] = self._created.get(prefix, 0) + n

    def deleted(self, key: str, n: int = 1) -> None:
        prefix = prefix_of(key)
        self._deleted[prefix] = self._deleted.get(prefix, 0) + n

    @property
    def day(self) -> str:
        """The UTC day the counts held now belong to."""
        return self._day

    def drain(self, keep: Callable[[str], bool] = lambda prefix: True) -> list[Delta]:
        """The counts since the last drain, for the prefixes ``keep`` accepts, attributed to
        the day the interval began in; the counts start again from zero, on today's day."""
        day = self._day
        resolutions, created, deleted = self.resolutions, self._created, self._deleted
        # Copied and cleared in place: the quotas hold a reference to ``resolutions``.
        taken = dict(resolutions)
        resolutions.clear()
        self._created, self._deleted = {}, {}
        self._day = utc_day(self._clock())
        prefixes = sorted(p for p in {*taken, *created, *deleted} if keep(p))
        return [
            Delta(p, day, created.get(p, 0), deleted.get(p, 0), taken.get(p, 0)) for p in prefixes
        ]

    def restore(self, deltas: list[Delta]) -> None:
        """Put back counts a failed flush could not store (they are flushed with the next
        interval's, on its day)."""
        for delta in deltas:
            self.resolutions[delta.prefix] = self.resolutions.get(delta.prefix, 0) + delta.resolved
            if delta.registered:
                self.registered(delta.prefix + "/", delta.registered)
            if delta.deleted:
                self.deleted(delta.prefix + "/", delta.deleted)
