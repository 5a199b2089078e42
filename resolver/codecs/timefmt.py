"""ISO-8601 timestamps as the Handle REST API writes them: UTC, no fractions."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime


@functools.lru_cache(maxsize=4096)
def iso(seconds: int) -> str:
    """``2026-01-10T22:41:46Z``.  Values written together share their timestamp, and imports
    write many records a second: remembering recent ones saves most of the formatting, which
    was half the cost of rendering a resolution."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_iso(text: str) -> int:
    """Seconds since the epoch of an ISO-8601 time; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
