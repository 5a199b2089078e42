"""What one HTTP client may take of a node: uvicorn's httptools protocol with limits.

uvicorn with httptools puts no bound on a request's head (llhttp hands each header field over
whole, so a 100 MB header is buffered and re-copied as it arrives), has no deadline for a head
or a body, keeps a connection that never sends anything forever, and accepts connections until
the process runs out of file descriptors.  h11 bounds the head but parses in Python, which the
cached hot path would pay on every request; a front server (nginx, HAProxy) would be a second
program to deploy beside every node.  So the node keeps httptools and this subclass adds the
limits of :class:`nodes.settings.LimitSettings`:

- request target longer than ``max_request_line_bytes``: 414; head (request line and header
  fields) over ``max_header_bytes`` or more than ``max_headers`` fields: 431; a declared or
  streamed body over ``IDIS_MAX_BODY_BYTES``: 413.  The head is counted by the read as it
  arrives, before the parser copies it; a head that begins in the read that completes the
  request before it is counted from the next read, so it may reach twice the limit.
- a head not complete ``head_timeout`` seconds after its first byte, or a body not complete
  ``body_timeout`` seconds after its head: 408.
- a connection idle ``keep_alive_timeout`` seconds, before its first request or between two,
  is closed (uvicorn's keep-alive timer, also armed when the connection opens).
- past ``max_connections`` open connections, or ``max_connections_per_source`` from one IP
  address, a new connection gets 503 with ``Retry-After`` and is closed at once.

Every refusal answers in the body's Handle terms (``responseCode`` 3 or 4) with ``connection:
close``; when an earlier request on the connection is still being answered, that answer is
completed first and the connection closed after it.  A request that arrives whole in one read
(the cached hot path) costs a few attribute writes more than plain uvicorn: deadlines are armed
only when a head or body is left incomplete at the end of a read.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr

from nodes.settings import Settings
from resolver import render

log = logging.getLogger(__name__)

LINGER = 2.0
"""Seconds a refused connection keeps reading (and dropping) what the client still sends, so
that closing it does not reset the connection before the client has read the refusal."""

FD_HEADROOM = 256
"""File descriptors a worker needs beside its client connections (database, Redis, logs)."""

LOG_EVERY = 60.0
"""At most one log line per kind of refusal in this many seconds: a flood must not flood the
logs too."""


@dataclass(frozen=True)
class HttpLimits:
    """The limits of one worker process (see :class:`nodes.settings.LimitSettings`)."""

    max_request_line: int = 8192
    max_head: int = 32768
    max_headers: int = 100
    max_body: int = 8 * 1024 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 4096
    max_per_source: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        limits = settings.limits
        return cls(
            max_request_line=limits.max_request_line_bytes,
            max_head=limits.max_header_bytes,
            max_headers=limits.max_headers,
            max_body=settings.max_body_bytes,
            head_timeout=limits.head_timeout,
            body_timeout=limits.body_timeout,
            keep_alive_timeout=limits.keep_alive_timeout,
            max_connections=limits.max_connections,
            max_per_source=limits.max_connections_per_source,
        )


def raise_fd_limit(limits: HttpLimits) -> None:
    """Raise this process's soft file-descriptor limit to what ``limits`` needs (up to the hard
    limit), so that the connection caps, not the descriptor limit, refuse clients first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "file descriptor limit %d is below IDIS_LIMITS__MAX_CONNECTIONS %d + %d: clients "
            "may be refused by the system before the cap; raise `ulimit -n`",
            soft,
            limits.max_connections,
            FD_HEADROOM,
        )


class _Refusal(Exception):
    """Raised from a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refusal(status: int, message: str) -> bytes:
    """A complete response refusing a request, closing the connection."""
    body = render.error(3 if status == 503 else 4, message)
    retry = b"retry-after: 1\r\n" if status == 503 else b""
    return b"".join(
        (
            STATUS_LINE[status],
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n",
            retry,
            b"\r\n",
            body,
        )
    )


class _Throttled:
    """Counts refusals of each kind and logs each kind at most once every :data:`LOG_EVERY`."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def note(self, kind: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY) >= LOG_EVERY:
            self._logged[kind] = now
            count, self._counts[kind] = self._counts[kind], 0
            log.warning("refused %d HTTP request(s) or connection(s): %s", count, kind)


# Where a connection is in its current request.
_HEAD, _BODY = 0, 1


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`HttpLimits` (module docstring).

    The limits are per process: :meth:`configure` sets them once in each worker before it
    serves (``nodes.http.server.app_from_env``).
    """

    limits: ClassVar[HttpLimits] = HttpLimits()
    _per_source: ClassVar[dict[str, int]] = {}
    _refusals: ClassVar[_Throttled] = _Throttled()

    @classmethod
    def configure(cls, limits: HttpLimits) -> None:
        cls.limits = limits

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn types it int, but only hands it to call_later.
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._source: str | None = None
        self._head_bytes = 0  # of the head being read; 0 between requests
        self._body_bytes = 0
        self._since: float | None = None  # when the head or body left incomplete began
        self._since_phase = _HEAD
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connections --

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self.limits
        client = get_remote_addr(transport)
        source = client[0] if client else None
        if len(self.connections) >= limits.max_connections:
            self._refuse_connection(transport, "too many connections to this node")
            return
        if source is not None and self._per_source.get(source, 0) >= limits.max_per_source:
            self._refuse_connection(transport, "too many connections from this address")
            return
        super().connection_made(transport)
        if source is not None:
            self._source = source
            self._per_source[source] = self._per_source.get(source, 0) + 1
        # uvicorn arms its idle timer only after a response: a connection that never sends a
        # request would stay open for ever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _refuse_connection(self, transport: asyncio.Transport, why: str) -> None:
        # Closed at once, without lingering: a flood of refused connections must not hold
        # descriptors.  A client whose request crosses the close may see a reset instead.
        self.transport = transport
        self._refused = True
        self._refusals.note(why)
        transport.write(refusal(503, why))
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        source = self._source
        if source is not None:
            self._source = None
            left = self._per_source[source] - 1
            if left:
                self._per_source[source] = left
            else:
                del self._per_source[source]
        self._cancel_deadline()
        super().connection_lost(exc)

    # -- reading --
    #
    # The hot path: a whole request in one read costs the checks in data_received, on_url and
    # on_header, and on_message_complete's resets.  Where a connection stands is read off
    # uvicorn's own state: its current cycle's ``more_body`` is True from a head's end to its
    # message's (on_message_complete below makes sure it ends False), so a connection is
    # reading a body then and a head (or nothing) otherwise; ``_head_bytes`` is not 0 while a
    # head is incomplete.

    def _phase(self) -> int:
        cycle = self.cycle
        return _BODY if cycle is not None and cycle.more_body else _HEAD

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: what a refused client still sends is dropped
        cycle = self.cycle
        if cycle is None or not cycle.more_body:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head:
                self._over_head(data)
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            self._parse_failed(error)
            return
        cycle = self.cycle
        if self._head_bytes or (cycle is not None and cycle.more_body):
            self._arm_deadline()

    def _over_head(self, data: bytes) -> None:
        """The head passes its limit within ``data``: parse only what it may still take; if
        the head ends within that, go on with the rest (a body, or the next request)."""
        allowed = len(data) - (self._head_bytes - self.limits.max_head)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data[:allowed])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            self._parse_failed(error)
            return
        if self._refused:
            return
        if self._head_bytes and self._phase() == _HEAD:  # that head did not end
            self._refuse(431, f"request head larger than {self.limits.max_head} bytes", _HEAD)
        elif allowed < len(data):
            self.data_received(data[allowed:])

    def _parse_failed(self, error: Exception) -> None:
        if isinstance(error, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        cause = error.__context__  # what a callback raised (HttpParserCallbackError)
        if isinstance(cause, _Refusal):
            self._refuse(cause.status, cause.message, self._phase())
            return
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # -- parser callbacks (on the hot path: kept to a few attribute reads and writes) --

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_request_line:
            raise _Refusal(414, f"request target longer than {self.limits.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, written out here rather than called: it runs for every field.
        if len(self.headers) >= self.limits.max_headers:
            raise _Refusal(431, f"more than {self.limits.max_headers} header fields")
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"content-length" and value.isdigit() and int(value) > self.limits.max_body:
            raise _Refusal(413, f"request body larger than {self.limits.max_body} bytes")
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body:
            raise _Refusal(413, f"request body larger than {self.limits.max_body} bytes")
        super().on_body(body)

    def on_message_complete(self) -> None:
        # uvicorn's, written out (it leaves ``more_body`` True when the answer went first).
        self._head_bytes = 0
        self._body_bytes = 0
        self._since = None
        cycle = self.cycle
        cycle.more_body = False
        if not cycle.response_complete and not (
            self.parser.should_upgrade() and self._should_upgrade()
        ):
            cycle.message_event.set()

    # -- deadlines --

    def _arm_deadline(self) -> None:
        """A head or body is incomplete after a read: make sure a timer will check on it."""
        phase = self._phase()
        if self._since is None or self._since_phase != phase:
            self._since = self.loop.time()
            self._since_phase = phase
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._since + self._timeout(phase), self._expire)

    def _timeout(self, phase: int) -> float:
        return self.limits.head_timeout if phase == _HEAD else self.limits.body_timeout

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        # One timer per connection, re-armed lazily: a request that completed before its
        # deadline left ``_since`` None, and a phase incomplete since has a start of its own.
        self._deadline = None
        phase = self._phase()
        if (
            self._refused
            or self._since is None
            or self._since_phase != phase
            or self.transport.is_closing()
        ):
            return
        due = self._since + self._timeout(phase)
        if self.loop.time() < due:
            self._deadline = self.loop.call_at(due, self._expire)
            return
        if phase == _HEAD:
            message = f"request head not received within {self.limits.head_timeout:g} s"
        else:
            message = f"request body not received within {self.limits.body_timeout:g} s"
        self._refuse(408, message, phase)

    # -- refusing --

    def _refuse(self, status: int, message: str, phase: int) -> None:
        """Answer ``status`` to the request being read and close the connection after it.

        Requests the client sent before it are answered first; when one of them is still
        being answered the refusal itself is left out (HTTP lets a server close then).
        """
        self._refused = True
        self._cancel_deadline()
        self._refusals.note(f"{status} {message}")
        cycle = self.cycle
        if phase == _BODY and cycle is not None:
            # The refused request is ``cycle``, whose head was read.
            if self.pipeline:  # queued behind another: nothing can answer it in turn
                self.transport.close()
                return
            if not cycle.response_started:
                cycle.disconnected = True  # its app reads a disconnect; its sends are dropped
                cycle.message_event.set()
            elif not cycle.response_complete:
                cycle.keep_alive = False
                return
            else:
                self.transport.close()  # answered already, without reading its body
                return
        elif cycle is not None and not cycle.response_complete:
            # The last request read before this head is still to be answered: close after it.
            cycle.keep_alive = False
            return
        transport = self.transport
        transport.write(refusal(status, message))
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER, transport.close)
