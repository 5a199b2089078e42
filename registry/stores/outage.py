"""The database as a dependency that can be down: which errors say so, bounded waits, and one
log line per outage.

A store method guarded here either returns, raises an error about the request itself, or raises
:class:`resolver.errors.StorageUnavailable` (Handle code 3, HTTP 503 with ``Retry-After``) when
the database cannot be reached, is shutting down or restarting, or is a standby that cannot
take the write (a failover under way).  Nothing hangs: reads are bounded by ``read_timeout``
(a cancelled read is harmless), writes by ``write_timeout``, after which the caller is told the
outcome is unknown while the write itself runs on.  A write is never cancelled: a statement
cancelled while it waits for the synchronous standby is reported committed by PostgreSQL with
only a warning (DESIGN.md section 5), so cancelling it could not undo it anyway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar

import asyncpg
import sqlalchemy.exc

from resolver.errors import StorageUnavailable

log = logging.getLogger("idis.database")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08, the connection itself
    asyncpg.OperatorInterventionError,  # class 57: shutting down, starting up, terminated
    asyncpg.ReadOnlySQLTransactionError,  # a standby (a demoted leader) asked to write
    asyncpg.exceptions.TargetServerAttributeNotMatched,  # no member takes writes yet
    # Class 55000: "database ... is not currently accepting connections" (ALLOW_CONNECTIONS
    # false, a database being dropped or restored); idis takes no locks that could fail so.
    asyncpg.ObjectNotInPrerequisiteStateError,
)
_CLOSED = "connection is closed"


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the database is out of reach, not that the
    request was wrong."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNAVAILABLE):
            return True
        if isinstance(current, asyncpg.InterfaceError) and _CLOSED in str(current):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError):
            if current.connection_invalidated:
                return True
            current = current.orig or current.__cause__
            continue
        current = current.__cause__
    return False


class Outage:
    """Whether a database is down, with one log line when it goes and one when it is back.

    Failures that come back within ``quiet`` seconds of a recovery (a failover, where some
    requests get through while others still fail) continue the outage already logged.
    """

    def __init__(self, what: str, quiet: float = 30.0) -> None:
        self.what = what
        self.quiet = quiet
        self.since: float | None = None
        """``time.monotonic()`` of the first failure of the outage under way, else None."""
        self._logged = False
        self._ended = -quiet

    def failed(self, error: BaseException, message: str | None = None) -> StorageUnavailable:
        """Note a failure; the error to raise for it."""
        if self.since is None:
            self.since = time.monotonic()
            self._logged = self.since - self._ended >= self.quiet
            if self._logged:
                log.warning(
                    "%s unavailable (%s: %s); answering code 3 until it is back",
                    self.what,
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "",
                )
        return StorageUnavailable(message or f"{self.what} is unavailable; retry")

    def succeeded(self) -> None:
        if self.since is not None:
            self._ended = time.monotonic()
            if self._logged:
                log.warning("%s available again after %.1f s", self.what, self._ended - self.since)
            self.since = None


class Guarded(Protocol):
    """What :func:`read` and :func:`write` need of the store they guard."""

    outage: Outage
    """Of the database reads go to."""
    write_outage: Outage
    """Of the database writes go to (the same object when it is the same database)."""
    read_timeout: float
    write_timeout: float
    patient: bool
    """Reads wait through an outage as writes do (the reads a write depends on)."""

    async def lost_writer(self) -> None:
        """Drop pooled write connections (they may lead to a member that no longer leads)."""


_RUNNING: set[asyncio.Task[Any]] = set()
"""Writes whose caller stopped waiting: kept referenced until they end."""


def read(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Guard a store method that only reads: bounded by ``read_timeout`` (then cancelled).

    A ``patient`` store's reads (those a write depends on) are tried again through an outage,
    as writes are, for up to ``write_timeout``."""

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        store: Guarded = args[0]  # type: ignore[assignment]
        outage = store.write_outage if store.patient else store.outage
        try:
            if store.patient:
                deadline = time.monotonic() + store.write_timeout
                async with asyncio.timeout(store.write_timeout):
                    result = await _retrying(store, deadline, method, *args, **kwargs)
            else:
                async with asyncio.timeout(store.read_timeout):
                    result = await method(*args, **kwargs)
        except Exception as error:
            if not unavailable(error):
                raise
            raise outage.failed(error) from error
        if outage.since is not None:
            outage.succeeded()
        return result

    return guarded


def write(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Guard a store method that writes.

    While the database is unavailable (a planned switchover moves the leader in about 4 s) the
    write is tried again, with pooled write connections dropped, until ``write_timeout`` has
    passed since the call; the caller then gets code 3, and a write still running runs on,
    never cancelled (its outcome unknown to the caller).  A retry after a failure of unknown
    outcome is safe for the stores' compare-and-set writes: if the first try committed, the
    retry finds the version moved and answers False, and the registrar reads again.
    """

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        store: Guarded = args[0]  # type: ignore[assignment]
        deadline = time.monotonic() + store.write_timeout
        task = asyncio.ensure_future(_retrying(store, deadline, method, *args, **kwargs))
        _RUNNING.add(task)  # a caller cancelled or timed out leaves it running: keep it
        task.add_done_callback(_finished)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), store.write_timeout)
        except TimeoutError as error:
            raise store.write_outage.failed(
                error, "the database did not confirm the write in time; its outcome is unknown"
            ) from error
        except Exception as error:
            if not unavailable(error):
                raise
            raise store.write_outage.failed(
                error, "the registry's database cannot take writes now (a failover?); retry"
            ) from error
        if store.write_outage.since is not None:
            store.write_outage.succeeded()
        return result

    return guarded


async def _retrying(
    store: Guarded,
    deadline: float,
    method: Callable[_P, Coroutine[Any, Any, _T]],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    pause = 0.1
    tries = 0
    while True:
        try:
            return await method(*args, **kwargs)
        except Exception as error:
            if not unavailable(error):
                raise
            tries += 1
            if tries > 1:  # one lost connection, replaced at once, is no outage
                store.write_outage.failed(error)  # logs the outage's start once
            await store.lost_writer()
            if time.monotonic() + pause >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


def _finished(task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: the caller that awaited it reported it, or left
