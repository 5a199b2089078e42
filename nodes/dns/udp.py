"""DNS over UDP: cached answers without a Python callback per datagram, when the C part is built.

A cached answer costs a dictionary lookup and a generation check (``nodes/dns/wire.py``); what
bounds a Python server is the event loop handing it one datagram per callback (the bench's
``dns_floor``).  So when ``nodes/dns/_udp.c`` is built (``pip install -e .`` or
``python setup.py build_ext --inplace``), the socket is read with ``recvmmsg`` up to 64
datagrams at a time; those whose exact bytes after the ID the wire cache holds with a fresh
entry are answered in C with one ``sendmmsg``, and the others come back here.  Without it,
uvloop's datagram protocol answers one datagram per callback.  Either way a query the wire
cache cannot answer is answered by a task (:meth:`nodes.dns.server.DnsFront.answer`), at most
:data:`MAX_PENDING` at once per worker; more are dropped, as an overloaded server does, and
clients ask again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodes.dns.server import DnsFront

try:
    from nodes.dns import _udp  # type: ignore[attr-defined]
except ImportError:  # no C compiler where idis was installed
    _udp = None

log = logging.getLogger(__name__)

MAX_PENDING = 1000
BATCHES = 8
"""Batches read per wake-up at the most, so that a flood cannot starve the other work."""
BATCH = 64


class _Answering:
    """Answers what the wire cache cannot answer at once, through tasks."""

    def __init__(self, front: DnsFront, send: Callable[[bytes, Any], None]) -> None:
        self._front = front
        self._send = send

    def query(self, data: bytes, addr: Any) -> None:
        front = self._front
        hit = front.cache.answer(data, False)
        if hit is not None:
            self._send(hit, addr)
            return
        if len(front.pending) >= MAX_PENDING:
            return
        task = asyncio.ensure_future(self._slow(data, addr))
        front.pending.add(task)
        task.add_done_callback(front.pending.discard)

    async def _slow(self, data: bytes, addr: Any) -> None:
        wire = await self._front.answer(data, False)
        if wire is not None:
            self._send(wire, addr)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, front: DnsFront) -> None:
        self._front = front
        self._answering: _Answering | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._answering = _Answering(self._front, transport.sendto)  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self._answering is not None
        self._answering.query(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable from a gone client
        log.debug("DNS over UDP: %r", exc)


class _Batches:
    """The loop's reader callback on the socket: batches through the C part."""

    def __init__(self, front: DnsFront, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._exact = front.cache.exact_udp
        self._current = front.cache.current  # counts quotas too, when the node has them
        self._answering = _Answering(front, self._send)

    def _send(self, wire: bytes, addr: Any) -> None:
        with contextlib.suppress(OSError):  # a full buffer drops it, as the network may
            self._sock.sendto(wire, addr)

    def readable(self) -> None:
        misses: list[tuple[bytes, Any]] = []
        for _ in range(BATCHES):
            try:
                read = _udp.serve(self._fd, self._exact, time.time(), self._current, misses)
            except OSError as error:  # ICMP errors surfacing from earlier sends
                log.debug("DNS over UDP: %r", error)
                read = BATCH
            for data, addr in misses:
                self._answering.query(data, addr)
            misses.clear()
            if read < BATCH:
                return


async def serve_udp(
    front: DnsFront, host: str, port: int, family: int, *, batches: bool | None = None
) -> Callable[[], None]:
    """Answer DNS over UDP on ``host:port`` (``SO_REUSEPORT``); the function that stops it.
    ``batches`` None takes the C part when it is built."""
    loop = asyncio.get_running_loop()
    if batches is None:
        batches = _udp is not None
    if not batches:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(front), local_addr=(host, port), family=family, reuse_port=True
        )
        return transport.close
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    loop.add_reader(sock.fileno(), _Batches(front, sock).readable)

    def stop() -> None:
        loop.remove_reader(sock.fileno())
        sock.close()

    return stop
