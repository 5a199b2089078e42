"""A node's side of the national statistics: flushing its workers' counts, reporting upward.

Every worker runs a :class:`Flusher`: every ``IDIS_STATS__FLUSH_INTERVAL`` seconds (and at
midnight UTC, so no interval spans two days) it drains the worker's :class:`registry.usage.Usage`
into ``usage_daily``, keeping only prefixes homed on the node.  A flush that fails (the
database down) keeps its counts for the next one.

One process of the node (the one holding ``<data dir>/stats-report.lock``) runs the
:class:`Reporter`: every ``IDIS_STATS__REPORT_INTERVAL`` seconds it POSTs the absolute figures
of the last ``IDIS_STATS__REPORT_DAYS`` UTC days of every homed prefix to the first top-level
node (``IDIS_FEDERATION__TOP_LEVEL``) that answers, signed in as the holder of the prefix the
top level delegated (``300:0.NA/PREFIX``, secret in ``IDIS_FEDERATION__HOLDER_SECRET_FILE``).
The figures are absolute, so a repeated or retried report replaces, never adds.  A top level
down means the report is tried again at the next interval; nothing any client sees changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from nodes.federation import basic_auth
from registry.enterprise import holder_identity
from registry.stores.usage import SqlUsage
from registry.usage import Usage, seconds_to_midnight, utc_day
from resolver.identifiers import parent_prefixes

log = logging.getLogger(__name__)

REPORT_PATH = "/api/national/reports"
LOCK_NAME = "stats-report.lock"


class ReportFailed(Exception):
    """No top-level node took the report; the message says why."""


def report_days(now: float, count: int) -> list[str]:
    """The last ``count`` UTC days up to the one of ``now``, oldest first."""
    return [utc_day(now - 86400.0 * n) for n in range(count - 1, -1, -1)]


def roots(homed: Sequence[str]) -> dict[str, list[str]]:
    """Homed prefixes grouped under the least specific homed prefix they derive from (the
    one the top level delegated, whose holder reports them)."""
    found: dict[str, list[str]] = {}
    homed_set = set(homed)
    for prefix in sorted(homed):
        root = next(p for p in reversed(parent_prefixes(prefix)) if p in homed_set)
        found.setdefault(root, []).append(prefix)
    return found


async def build_reports(
    usage: SqlUsage, homed: Sequence[str], node_name: str, days: int, now: float
) -> dict[str, dict[str, Any]]:
    """The report bodies of ``homed`` (folded prefixes), one per root prefix: ``{"node":
    name, "prefixes": [{"prefix": P, "days": [{day, registered, deleted, resolved,
    identifiers}]}]}``.  Prefixes never counted are counted first (their baseline)."""
    for prefix in await usage.unbased(list(homed)):
        log.info("national statistics: counting the identifiers under %s once", prefix)
        await usage.recount(prefix)
    figures = await usage.figures(list(homed), report_days(now, days))
    by_prefix: dict[str, list[dict[str, Any]]] = {}
    for day in figures:
        by_prefix.setdefault(day.prefix, []).append(day.to_json())
    return {
        root: {
            "node": node_name,
            "prefixes": [{"prefix": p, "days": by_prefix.get(p, [])} for p in members],
        }
        for root, members in roots(list(homed)).items()
    }


async def post_report(
    top_level: Sequence[str], identity: str, secret: str, body: dict[str, Any], timeout: float
) -> str:
    """POST ``body`` to the first of ``top_level`` that answers; that node's URL.  A refusal
    (4xx) raises :class:`ReportFailed` at once (another site would refuse the same)."""
    errors = []
    async with httpx.AsyncClient(timeout=timeout) as client:
        for base in top_level:
            url = base.rstrip("/") + REPORT_PATH
            try:
                response = await client.post(url, json=body, auth=basic_auth(identity, secret))
            except httpx.HTTPError as error:
                errors.append(f"{base}: {error!r}")
                continue
            if response.status_code >= 500:
                errors.append(f"{base}: HTTP {response.status_code}")
                continue
            if response.status_code != 200:
                raise ReportFailed(f"{base} refused: HTTP {response.status_code} {response.text}")
            return base
    raise ReportFailed("no top-level node took the report: " + "; ".join(errors or ["none set"]))


async def report_once(node: Any, usage: SqlUsage) -> list[str]:
    """Report every homed prefix of ``node`` once, one report per root prefix (the holder of
    each signs its own); the top-level URLs that took them.  Raises :class:`ReportFailed` (or
    the database's error) if any root's report failed, after trying them all."""
    settings = node.settings
    if not settings.federation.top_level:
        raise ReportFailed("IDIS_FEDERATION__TOP_LEVEL is not set: no top level to report to")
    secret_file = settings.federation.holder_secret_file
    if secret_file is None:
        raise ReportFailed("IDIS_FEDERATION__HOLDER_SECRET_FILE is not set: cannot sign in")
    secret = secret_file.read_text(encoding="utf-8").strip()
    homed = sorted(await node.homes.keys())
    stats = settings.stats
    reports = await build_reports(usage, homed, settings.name, stats.report_days, time.time())
    taken, failed = [], []
    for root, body in reports.items():  # one root refused does not hold the others back
        identity = str(holder_identity(root))
        try:
            taken.append(
                await post_report(
                    settings.federation.top_level, identity, secret, body, stats.report_timeout
                )
            )
        except ReportFailed as error:
            failed.append(f"{root}: {error}")
    if failed:
        raise ReportFailed("; ".join(failed))
    return taken


class Flusher:
    """Moves one worker's :class:`Usage` into ``usage_daily`` (see the module docstring)."""

    def __init__(self, node: Any, usage: Usage, store: SqlUsage, interval: float) -> None:
        self._node = node
        self._usage = usage
        self._store = store
        self._interval = interval
        self._failing = False
        self.flushed = 0

    async def flush(self) -> None:
        homed = await self._node.homes.keys()
        deltas = self._usage.drain(homed.__contains__)
        try:
            await self._store.add(deltas)
        except Exception as error:  # the database down: count on, store later
            self._usage.restore(deltas)
            if not self._failing:
                log.warning("usage counts not stored (%s): kept for the next flush", error)
            self._failing = True
            return
        self._failing = False
        self.flushed += 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(self._interval, seconds_to_midnight(time.time()) + 0.01))
            with contextlib.suppress(Exception):  # homes unreadable: the next round
                await self.flush()


class Reporter:
    """Reports upward every ``interval`` seconds, in the one process holding the lock."""

    def __init__(self, node: Any, store: SqlUsage, interval: float) -> None:
        self._node = node
        self._store = store
        self._interval = interval
        self._lock_fd: int | None = None
        self._failing = False
        self.reports = 0
        self.last_error: str | None = None

    def _lead(self) -> bool:
        if self._lock_fd is not None:
            return True
        directory = self._node.settings.data_dir
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def report(self) -> None:
        try:
            await report_once(self._node, self._store)
        except Exception as error:  # the top level down or refusing: try again later
            self.last_error = str(error)
            if not self._failing:
                log.warning("national statistics not reported (%s): retrying", error)
            self._failing = True
            return
        if self._failing:
            log.info("national statistics reported again")
        self._failing, self.last_error = False, None
        self.reports += 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._lead():
                await self.report()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


@contextlib.asynccontextmanager
async def reporting(node: Any) -> AsyncIterator[None]:
    """Flush this worker's counts (and report upward, if configured) for the duration of the
    block (the application's lifespan); a last flush at the end."""
    usage = getattr(node, "usage", None)
    settings = node.settings
    if usage is None:
        yield
        return
    store = SqlUsage(settings.database_url)
    flusher = Flusher(node, usage, store, settings.stats.flush_interval)
    tasks = [asyncio.create_task(flusher.run(), name="usage-flush")]
    reporter = None
    if settings.federation.top_level and settings.federation.holder_secret_file:
        reporter = Reporter(node, store, settings.stats.report_interval)
        tasks.append(asyncio.create_task(reporter.run(), name="stats-report"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await flusher.flush()  # this worker's last counts
        if reporter is not None:
            reporter.close()
        await store.close()
