"""ISO-8601 timestamps as the Handle REST API writes them: UTC, no fractions."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_iso(text: str) -> int:
    """Seconds since the epoch of an ISO-8601 time; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
