"""Logging of a node's processes: one setup, applied in the process that runs ``idis serve``
and again in each worker process it spawns (a spawned process starts with logging unset,
where Python prints warnings and errors only, and INFO lines are lost)."""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s %(message)s"


def setup_logging(level: str) -> None:
    """Send this process's log lines of ``level`` (a settings name such as ``"info"``) and
    above to standard error.  Idempotent: a process that set it up already keeps its setup."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
