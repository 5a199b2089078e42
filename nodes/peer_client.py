"""Asking other idis nodes over their REST API (the adapter behind ``resolver.walk.PeerClient``).

A walk is a chain of upstream requests made one after the other, so the client's own work per
request adds straight to the latency of every cold resolution.  General clients spend most of
it on what a walk never needs (request and response objects, cookie jars, redirects, stream
readers): on loopback httpx took about 400 us of Python per request and aiohttp about 65 us
(half of a recursive node's CPU on a cold walk, by py-spy), against 40 us for the peer to
answer from memory.  A walk needs one thing, ``GET`` on a keep-alive connection, so this client
is that: an :class:`asyncio.Protocol` per connection, the response parsed by httptools (the C
parser uvicorn uses), idle connections kept per peer.  See loadtests/README.md
(``bench_recursive``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast
from urllib.parse import quote, urlsplit

import httptools
import orjson

from resolver.codecs.json_api import parse_value
from resolver.errors import HandleError
from resolver.walk import PeerAnswer, PeerUnavailable

MAX_PEERS = 1024
"""Base URLs remembered (with their idle connections); site values name them, so a hostile
upstream could name any number: past this many the oldest is dropped."""
MAX_BODY_BYTES = 8 * 1024 * 1024
"""An answer larger than this (2048 values of the largest kind fit) is not read to the end."""


class _Response:
    """What the parser collected: status, body, and whether the connection may be reused."""

    __slots__ = ("body", "keep_alive", "size", "status")

    def __init__(self) -> None:
        self.status = 0
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = False


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to a peer, one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response = _Response()
        self._waiter: asyncio.Future[_Response] | None = None
        self.usable = True
        self.answering = False
        """Whether any of the response to the current request arrived."""

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.answering = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, PeerUnavailable) as error:
            self._fail(f"unreadable response: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("connection closed")

    # -- httptools callbacks --

    def on_body(self, body: bytes) -> None:
        response = self._response
        response.size += len(body)
        if response.size > MAX_BODY_BYTES:
            raise PeerUnavailable("answer too large")
        response.body.append(body)

    def on_message_complete(self) -> None:
        response, self._response = self._response, _Response()
        response.status = self._parser.get_status_code()
        response.keep_alive = self._parser.should_keep_alive()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        else:
            self._fail("a response nobody asked for")

    # --

    async def get(self, request: bytes, deadline: float) -> tuple[int, bytes]:
        """Send ``request`` and wait for the whole response: (status, body), or
        :class:`PeerUnavailable` at ``deadline`` (loop time).  The caller closes the connection
        if this raises or is cancelled (its state is then unknown)."""
        assert self._transport is not None and self._waiter is None
        self.answering = False
        self._waiter = self._loop.create_future()
        # A timer on the loop, not asyncio.timeout: that costs a walk a few percent of its CPU.
        timer = self._loop.call_at(deadline, self._fail, "timed out")
        self._transport.write(request)
        try:
            response = await self._waiter
        finally:
            timer.cancel()
        if not response.keep_alive:
            self.close()
        return response.status, b"".join(response.body)

    def _fail(self, reason: str) -> None:
        self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(PeerUnavailable(reason))

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()


class _Peer:
    """Where a base URL points, and its idle connections."""

    def __init__(self, base_url: str) -> None:
        try:
            parts = urlsplit(base_url)
            port = parts.port
        except ValueError:  # a port out of range, a broken IPv6 literal
            raise PeerUnavailable(f"{base_url}: not an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PeerUnavailable(f"{base_url}: not an http(s) URL")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = port or (443 if self.tls else 80)
        self.path = parts.path.rstrip("/")
        self.head = f"Host: {parts.netloc}\r\nAccept: application/json\r\n\r\n".encode()
        self.idle: list[_Connection] = []

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class HttpPeerClient:
    """Keep-alive HTTP connections to peers; any transport failure is :class:`PeerUnavailable`.

    ``timeout`` bounds each request as a whole, connecting included: a peer slower than that
    counts as down, so the walk moves on to the next server instead of making the factory
    system wait.  At most ``max_idle`` idle connections are kept per peer.  Connections belong
    to the event loop that opened them; :meth:`close` closes the idle ones.
    """

    def __init__(self, timeout: float = 1.0, max_idle: int = 64) -> None:
        self._timeout = timeout
        self._max_idle = max_idle
        self._peers: dict[str, _Peer] = {}
        self._tls: ssl.SSLContext | None = None

    async def query(self, base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        peer = self._peers.get(base_url)
        if peer is None:
            peer = _Peer(base_url)
            if len(self._peers) >= MAX_PEERS:
                oldest = self._peers.pop(next(iter(self._peers)))
                oldest.close()
            self._peers[base_url] = peer
        target = f"{peer.path}/api/handles/{quote(handle, safe='/')}"
        request = b"GET %s%s HTTP/1.1\r\n%s" % (
            target.encode(),
            b"?auth=true" if fresh else b"",
            peer.head,
        )
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            status, content = await self._exchange(peer, request, deadline)
        except (OSError, TimeoutError, ssl.SSLError) as error:
            raise PeerUnavailable(f"{base_url}: {error!r}") from None
        return _answer(base_url, handle, status, content)

    async def _exchange(self, peer: _Peer, request: bytes, deadline: float) -> tuple[int, bytes]:
        """``request`` on an idle connection, else on a new one, all by ``deadline``.  An idle
        connection the peer closed just as it was taken fails before any answer; the request (a
        GET) is then sent once more on a new connection, as HTTP clients do."""
        while peer.idle:
            connection = peer.idle.pop()
            if not connection.usable:
                continue
            try:
                return await self._use(peer, connection, request, deadline)
            except PeerUnavailable:
                if connection.answering:
                    raise
                break
        async with asyncio.timeout_at(deadline):
            connection = await self._connect(peer)
        return await self._use(peer, connection, request, deadline)

    async def _use(
        self, peer: _Peer, connection: _Connection, request: bytes, deadline: float
    ) -> tuple[int, bytes]:
        try:
            answer = await connection.get(request, deadline)
        except BaseException:  # failed, timed out or cancelled (a dropped early request)
            connection.close()  # its state is unknown
            raise
        if connection.usable and len(peer.idle) < self._max_idle:
            peer.idle.append(connection)
        else:
            connection.close()
        return answer

    async def _connect(self, peer: _Peer) -> _Connection:
        loop = asyncio.get_running_loop()
        if peer.tls and self._tls is None:
            self._tls = ssl.create_default_context()
        _, connection = await loop.create_connection(
            lambda: _Connection(loop),
            peer.host,
            peer.port,
            ssl=self._tls if peer.tls else None,
        )
        return connection

    async def close(self) -> None:
        for peer in self._peers.values():
            peer.close()


def _answer(base_url: str, handle: str, status: int, content: bytes) -> PeerAnswer:
    """The Handle answer in a peer's response; :class:`PeerUnavailable` if there is none."""
    if status >= 500:
        raise PeerUnavailable(f"{base_url}: HTTP {status}")
    try:
        body = orjson.loads(content)
        code = int(body["responseCode"])
        values = tuple(parse_value(raw, 0, keep_timestamp=True) for raw in body.get("values") or ())
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, HandleError):
        raise PeerUnavailable(f"{base_url}: unreadable answer") from None
    referral = body.get("referral")
    if not isinstance(referral, str):
        referral = ""
    return PeerAnswer(code, str(body.get("handle", handle)), values, referral)
