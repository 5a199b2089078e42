"""What a resolution produces, and how long it may be reused."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from resolver.values import Record


class Outcome(enum.IntEnum):
    """The kind of answer, valued as its Handle response code."""

    FOUND = 1
    NOT_FOUND = 100
    NOT_HOMED = 301
    SERVICE_REFERRAL = 302
    """The prefix is served elsewhere; ``record`` holds its HS_SITE values."""
    PREFIX_REFERRAL = 303
    """A parent prefix delegates its derived prefixes; ``record`` holds its HS_SITE.PREFIX."""

    @property
    def is_referral(self) -> bool:
        return self in (Outcome.SERVICE_REFERRAL, Outcome.PREFIX_REFERRAL)


@dataclass(frozen=True, slots=True)
class Answer:
    """The result of resolving one handle key.

    ``expires`` is wall-clock seconds since the epoch: values may carry absolute TTLs.
    ``source`` names the layer that produced it (``memory``, ``redis``, ``store``), so that
    clients and operators can see where an answer came from; a recursive node's source is the
    path its walk took.
    """

    key: str
    outcome: Outcome
    record: Record | None
    expires: float
    source: str

    def with_source(self, source: str) -> Answer:
        return Answer(self.key, self.outcome, self.record, self.expires, source)


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    """Bounds on how long answers are reused.

    ``max_ttl`` caps what a record's own TTLs allow, ``negative_ttl`` is how long a miss
    (unknown handle or prefix) is remembered.
    """

    max_ttl: float = 86400.0
    negative_ttl: float = 5.0

    def expiry(self, record: Record | None, now: float) -> float:
        if record is None:
            return now + self.negative_ttl
        limit = now + self.max_ttl
        for value in record.values:
            until = float(value.ttl) if value.ttl_absolute else now + value.ttl
            limit = min(limit, until)
        return limit
