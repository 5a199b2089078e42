"""Logging of a node's processes: one setup, applied in the process that runs ``idis serve``
and again in each worker process it spawns (a spawned process starts with logging unset,
where Python prints warnings and errors only, and INFO lines are lost).

Every line is one event: ``text`` (the default) is readable, with an ISO 8601 UTC timestamp;
``json`` is one object a line with ``timestamp``, ``level``, ``logger`` and ``message`` (and
``exception``, the traceback as one string, and the fields a call passed as ``extra``, such as
the access log's).  uvicorn's own loggers go through the same handler (``log_config=None`` in
:func:`nodes.http.server.uvicorn_options`), so a node never mixes two formats.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}
"""Attributes every record has: what is not among them came from ``extra``."""


def _iso(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": _iso(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        return orjson.dumps(line, default=str).decode()


def setup_logging(level: str, format: str = "text") -> None:
    """Send this process's log lines of ``level`` (a settings name such as ``"info"``) and
    above to standard error, in ``format`` (``text`` or ``json``).  Replaces an earlier
    setup of the root logger, so that the last settings win."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request it sends at INFO: the console's probes and the mirror's polls
    # would fill the log with a line every few seconds.  Debugging still shows them.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
