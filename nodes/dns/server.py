"""The DNS front end's transports: UDP and TCP on ``IDIS_DNS``, inside each HTTP worker.

Each worker process binds the address itself with ``SO_REUSEPORT`` (the kernel spreads
datagrams and connections over the workers) and answers from its own node: the same resolve
chain, memory cache and write generations as the worker's REST requests.  UDP is read as
:mod:`nodes.dns.udp` says; a query the :class:`nodes.dns.wire.WireCache` holds is answered
there, any other by :class:`nodes.dns.answers.Answerer`.

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
from nodes.dns.udp import serve_udp
from nodes.dns.wire import WireCache, shape
from nodes.settings import parse_address

log = logging.getLogger(__name__)

MAX_TCP_CLIENTS = 256
TCP_IDLE = 10.0


class DnsFront:
    """Answers one wire query: from the wire cache, or through the answerer (kept after)."""

    def __init__(self, node: Any, zone: str, host: str) -> None:
        self.answerer = Answerer(node, zone, host)
        self.cache = WireCache(
            node.generations,
            max_entries=node.settings.cache.max_entries,
            quotas=self.answerer.quotas,
            recursive=node.settings.role == "recursive",
        )
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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = await serve_udp(front, host, port, family)
    tcp = await asyncio.start_server(
        lambda r, w: _tcp_client(front, r, w), host, port, family=family, reuse_port=True
    )
    log.info("DNS for %s on %s (UDP and TCP)", settings.dns_zone, settings.dns)
    try:
        yield front
    finally:
        udp()
        tcp.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tcp.wait_closed(), 1.0)
