"""A minimal HTTP/1.1 client for load generation: keep-alive connections, one request in flight
on each, and just enough parsing to find the status and the body.

Why not httpx: a general client spends tens of microseconds of Python per request (header
objects, URL models, pools), which on a 2-core machine makes the generator, not the server,
the limit.  A load generator knows what it sends and what it talks to, so this one writes
prepared request bytes and reads a response by its status line, ``Content-Length`` (or chunked
encoding) and ``Connection: close``; it checks nothing else.  Its ceiling is measured against a
constant server (``idis loadtest ceiling``), not assumed.

Only for load generation against servers the operator owns: it does not do TLS, redirects,
proxies or cookies, and it refuses to go on after anything it cannot parse.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit


class ProtocolViolation(ConnectionError):
    """The server sent something this client cannot read as an HTTP/1.1 response."""


class RequestTimeout(TimeoutError):
    """No complete response within the timeout; the connection was closed."""


def parse_target(url: str) -> tuple[str, int]:
    """``http://host:port`` -> ``(host, port)``; only plain HTTP."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"target {url!r} must be http://HOST[:PORT] (no TLS in the generator)")
    return parts.hostname, parts.port or 80


def get_request(host: str, path: bytes) -> bytes:
    """The bytes of ``GET path`` on a keep-alive connection."""
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"


def post_request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of ``POST path`` with ``body`` (Content-Length set here)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _dechunk(data: bytes | bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body beginning at ``start``: ``(body, end)``, or None if incomplete."""
    out = bytearray()
    pos = start
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(data[pos:eol]).split(b";", 1)[0], 16)
        except ValueError:
            raise ProtocolViolation("bad chunk size") from None
        if size == 0:
            end = data.find(b"\r\n\r\n", eol)  # trailers, then the blank line
            if end < 0:
                return None
            return bytes(out), end + 4
        if len(data) < eol + 2 + size + 2:
            return None
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


class Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`request` sends prepared bytes and awaits the answer.

    Not safe for concurrent use: one request at a time (the load generator gives each of its
    tasks a connection of its own).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head_end = -1
        self._need = -1
        self._status = 0
        self._chunked = False
        self._close = False
        self.sent_at = 0.0
        """time.monotonic() of the request in flight (0 when idle): for the watchdog."""
        self.closed = False

    @classmethod
    async def open(
        cls, host: str, port: int, timeout: float = 10.0, source: str | None = None
    ) -> Connection:
        """A connection to ``host:port``, from the local address ``source`` if given."""
        loop = asyncio.get_running_loop()
        local = (source, 0) if source else None
        _, protocol = await asyncio.wait_for(
            loop.create_connection(cls, host, port, local_addr=local), timeout=timeout
        )
        return protocol

    # -- asyncio.Protocol --

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            if buf:  # nothing asked for this
                self._fail(ProtocolViolation("unexpected data from the server"))
            return
        try:
            done = self._parse()
        except ProtocolViolation as error:
            self._fail(error)
            return
        if done is not None:
            self.sent_at = 0.0
            self._waiter = None
            if self._close and self.transport is not None:
                self.transport.close()
                self.closed = True
            waiter.set_result(done)

    # -- parsing --

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    raise ProtocolViolation("response head longer than 64 KiB")
                return None
            head = bytes(buf[:end]).lower()
            if not head.startswith(b"http/1."):
                raise ProtocolViolation(f"not an HTTP/1.x response: {head[:40]!r}")
            try:
                self._status = int(head[9:12])
            except ValueError:
                raise ProtocolViolation("bad status line") from None
            self._head_end = end + 4
            self._close = b"\r\nconnection: close" in head
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                eol = head.find(b"\r\n", at + 17)
                try:
                    length = int(head[at + 17 : eol if eol >= 0 else len(head)])
                except ValueError:
                    raise ProtocolViolation("bad Content-Length") from None
                self._need = self._head_end + length
                self._chunked = False
            elif b"\r\ntransfer-encoding: chunked" in head:
                self._chunked = True
            elif self._status in (204, 304) or 100 <= self._status < 200:
                self._need = self._head_end
            else:
                raise ProtocolViolation("response without Content-Length (read to close)")
        if self._chunked:
            decoded = _dechunk(buf, self._head_end)
            if decoded is None:
                return None
            body, end = decoded
        else:
            if len(buf) < self._need:
                return None
            end = self._need
            body = bytes(buf[self._head_end : end])
        del buf[:end]
        self._head_end = -1
        self._need = -1
        return self._status, body

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        self._waiter = None
        self.sent_at = 0.0
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    # -- use --

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send ``data`` (a whole request) and return ``(status, body)``.

        Raises ``ConnectionError`` (the connection is then unusable) or
        :class:`RequestTimeout` when :meth:`expire` gave up on it.
        """
        if self.closed or self.transport is None:
            raise ConnectionResetError("connection is closed")
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.sent_at = time.monotonic()
        self.transport.write(data)
        return await waiter

    def expire(self, now: float, timeout: float) -> bool:
        """Abort the request in flight if it began more than ``timeout`` s before ``now``."""
        if self.sent_at and now - self.sent_at > timeout:
            self._fail(RequestTimeout(f"no response within {timeout:g} s"))
            return True
        return False

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def watchdog(connections: list[Connection], timeout: float, period: float = 0.25) -> None:
    """Expire requests older than ``timeout`` on ``connections`` until cancelled.

    One task for all connections is much cheaper than a timer per request.
    """
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        for conn in connections:
            conn.expire(now, timeout)
