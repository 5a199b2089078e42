"""The DNS front end's transports: UDP and TCP on ``IDIS_DNS``, inside each HTTP worker.

Each worker process binds the address itself with ``SO_REUSEPORT`` (the kernel spreads
datagrams and connections over the workers) and answers from its own node: the same resolve
chain, memory cache and write generations as the worker's REST requests.  A query the
:class:`nodes.dns.wire.WireCache` holds is answered in the protocol callback, without a task;
any other is answered by a task running :class:`nodes.dns.answers.Answerer`, at most
:data:`MAX_PENDING` of them at once per worker (more are dropped, as an overloaded server
does; clients retry).

TCP (RFC 7766): two-byte length framing, queries answered in order, a connection closed after
:data:`TCP_IDLE` seconds without a query or at a malformed frame; past
:data:`MAX_TCP_CLIENTS` connections per worker, a new one is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from nodes.dns.answers import Answerer, Reply
from nodes.dns.wire import WireCache, shape
from nodes.settings import parse_address

log = logging.getLogger(__name__)

MAX_PENDING = 1000
MAX_TCP_CLIENTS = 256
TCP_IDLE = 10.0


class DnsFront:
    """Answers one wire query: from the wire cache, or through the answerer (kept after)."""

    def __init__(self, node: Any, zone: str, host: str) -> None:
        self.answerer = Answerer(node, zone, host)
        self.cache = WireCache(node.generations, max_entries=node.settings.cache.max_entries)
        self.tcp_clients = 0
        self.pending: set[asyncio.Task[None]] = set()
        """Slow-path tasks of UDP queries (held here: the loop keeps only weak references)."""

    async def answer(self, data: bytes, tcp: bool) -> bytes | None:
        reply: Reply = await self.answerer.reply(data, tcp)
        if reply.wire is not None and reply.expires is not None:
            query = shape(data, tcp)
            if query is not None:
                self.cache.put(query, reply.wire, reply.expires, reply.key, reply.generation)
        return reply.wire


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, front: DnsFront) -> None:
        self._front = front
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # uvloop's is no asyncio.DatagramTransport subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        front = self._front
        hit = front.cache.answer(data, False)
        if hit is not None:
            self._transport.sendto(hit, addr)
            return
        if len(front.pending) >= MAX_PENDING:
            return
        task = asyncio.ensure_future(self._slow(data, addr))
        front.pending.add(task)
        task.add_done_callback(front.pending.discard)

    async def _slow(self, data: bytes, addr: Any) -> None:
        wire = await self._front.answer(data, False)
        if wire is not None:
            self._transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable from a gone client
        log.debug("DNS over UDP: %r", exc)


async def _tcp_client(
    front: DnsFront, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    front.tcp_clients += 1
    admitted = front.tcp_clients <= MAX_TCP_CLIENTS
    try:
        while admitted:
            head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
            size = int.from_bytes(head, "big")
            if size == 0:
                break
            data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
            wire = front.cache.answer(data, True) or await front.answer(data, True)
            if wire is None:
                break
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        front.tcp_clients -= 1
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving_dns(node: Any) -> AsyncIterator[DnsFront | None]:
    """Serve DNS for ``node`` while inside, when its settings name an address (``IDIS_DNS``)."""
    settings = node.settings
    if not settings.dns:
        yield None
        return
    host, port = parse_address(settings.dns)
    front = DnsFront(node, settings.dns_zone, host)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(front), local_addr=(host, port), family=family, reuse_port=True
    )
    tcp = await asyncio.start_server(
        lambda r, w: _tcp_client(front, r, w), host, port, family=family, reuse_port=True
    )
    log.info("DNS for %s on %s (UDP and TCP)", settings.dns_zone, settings.dns)
    try:
        yield front
    finally:
        udp.close()
        tcp.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tcp.wait_closed(), 1.0)
