"""The native doors: UDP and TCP listeners, and ``POST`` of ``application/x-hdl-message`` on
the HTTP port, all answered by one :class:`nodes.handle.handler.NativeHandler` per worker.

Where the listeners run: in every uvicorn worker, started and stopped by the ASGI lifespan
(:class:`NativeDoors` wraps the node's application), bound with ``SO_REUSEPORT`` so that the
kernel spreads datagrams and connections over the workers as it spreads HTTP connections.  Each
worker so answers from its own memory cache and resolution chain, exactly as its HTTP requests
are answered, with no process in between and nothing to pass across processes; a worker that
dies takes its sockets with it and uvicorn's replacement binds them again.

Limits: a message (without envelope) is at most 256 KiB (the reference's limit); a TCP
connection stays open for more requests (as the IDIS SDK keeps it) until it is silent for
``IDIS_HANDLE_IDLE_TIMEOUT`` seconds; a worker holds at most ``IDIS_HANDLE_MAX_CONNECTIONS``
and closes new ones beyond; at most 256 multi-packet UDP requests are being reassembled at once
(the oldest is dropped).  What cannot be decoded is answered with code 4 when it has an envelope
to answer to, and dropped otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from nodes.handle.admin import Login
from nodes.handle.handler import NativeHandler, error_request
from nodes.handle.site import load_signer, node_site
from resolver.codecs import handle_wire as wire
from resolver.errors import ProtocolError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIME = b"application/x-hdl-message"
MAX_PENDING_UDP = 256


class UdpDoor(asyncio.DatagramProtocol):
    def __init__(self, handler: NativeHandler) -> None:
        self._handler = handler
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: OrderedDict[tuple[Any, int], wire.Reassembly] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        handler = self._handler
        repeated = handler.repeated(data)
        if repeated is not None:
            self._send(repeated, addr)
            if handler.counting:
                handler.count("native_udp", repeated, "memory")
            return
        try:
            envelope = wire.decode_envelope(data)
        except ProtocolError:
            return  # nothing to answer to
        payload = data[wire.ENVELOPE_SIZE :]
        if envelope.truncated:
            message = self._reassemble(envelope, payload, addr)
            if message is None:
                return
        elif len(payload) != envelope.message_length:
            self._send(handler.error(error_request(envelope), 4, "invalid message length"), addr)
            return
        else:
            message = payload
        request = handler.decode(envelope, message)
        if not isinstance(request, wire.Request):
            self._send(request, addr)
            return
        hit = handler.cached(request, b"" if envelope.truncated else data)
        if hit is not None:
            self._send(hit, addr)
            if handler.counting:
                handler.count("native_udp", hit, "memory")
            return
        task = asyncio.ensure_future(self._slow(request, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reassemble(self, envelope: wire.Envelope, payload: bytes, addr: Any) -> bytes | None:
        key = (addr, envelope.request_id)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= MAX_PENDING_UDP:
                self._pending.popitem(last=False)
            pending = self._pending[key] = wire.Reassembly(envelope)
        try:
            message = pending.add(envelope, payload)
        except ProtocolError:
            del self._pending[key]
            return None
        if message is not None:
            del self._pending[key]
        return message

    async def _slow(self, request: wire.Request, addr: Any) -> None:
        handler = self._handler
        response = await handler.respond(request, source=str(addr[0]))
        self._send(response, addr)
        if handler.counting:
            handler.count("native_udp", response, handler.layer)

    def _send(self, response: bytes, addr: Any) -> None:
        transport = self._transport
        if transport is None:
            return
        if len(response) <= wire.UDP_PACKET:
            transport.sendto(response, addr)
            return
        for packet in wire.udp_packets(response):
            transport.sendto(packet, addr)


class TcpDoor(asyncio.Protocol):
    """One TCP connection: requests answered in order, the connection kept until the client
    closes it or stays silent past the idle timeout."""

    def __init__(self, handler: NativeHandler, doors: NativeListeners) -> None:
        self._handler = handler
        self._doors = doors
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._blocked = False
        self._task: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._login = Login()
        self._source: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if peer else None
        if not self._doors.admit(self):
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._doors.release(self)
        if self._idle is not None:
            self._idle.cancel()
        self._transport = None

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._doors.idle_timeout, self.close)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._arm()
        if not self._busy:
            self._drain_safely()

    def pause_writing(self) -> None:
        """A client that sends without reading its answers: read no more until it does (the
        answers waiting to be written stay below the transport's high-water mark)."""
        self._blocked = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._blocked = False
        if self._transport is not None and not self._busy:
            self._transport.resume_reading()
            self._drain_safely()

    def _drain_safely(self) -> None:
        try:
            self._drain()
        except Exception:  # a bug: this connection ends, the listener goes on
            log.exception("native TCP connection failed")
            self.close()

    def _drain(self) -> None:
        """Answer every whole message in the buffer, in order; stop at one that needs a
        lookup (reading pauses until it is answered)."""
        handler = self._handler
        buffer = self._buffer
        while (
            self._transport is not None and not self._blocked and len(buffer) >= wire.ENVELOPE_SIZE
        ):
            try:
                envelope = wire.decode_envelope(bytes(buffer[: wire.ENVELOPE_SIZE]))
            except ProtocolError as error:
                # A length out of bounds: answer it (the request id is readable) and close.
                refused = wire.undecodable(bytes(buffer[: wire.ENVELOPE_SIZE]))
                self._transport.write(handler.error(refused, 4, error.message))
                self.close()
                return
            end = wire.ENVELOPE_SIZE + envelope.message_length
            if len(buffer) < end:
                return
            whole = bytes(buffer[:end])
            del buffer[:end]
            repeated = handler.repeated(whole)
            if repeated is not None:
                self._transport.write(repeated)
                if handler.counting:
                    handler.count("native_tcp", repeated, "memory")
                continue
            request = handler.decode(envelope, whole[wire.ENVELOPE_SIZE :])
            if not isinstance(request, wire.Request):
                self._transport.write(request)
                continue
            hit = handler.cached(request, whole)
            if hit is not None:
                self._transport.write(hit)
                if handler.counting:
                    handler.count("native_tcp", hit, "memory")
                continue
            self._busy = True
            self._transport.pause_reading()
            self._task = asyncio.ensure_future(self._slow(request))
            return

    async def _slow(self, request: wire.Request) -> None:
        response = await self._handler.respond(request, self._login, self._source)
        if self._handler.counting:
            self._handler.count("native_tcp", response, self._handler.layer)
        self._busy = False
        if self._transport is None:
            return
        self._transport.write(response)
        if not self._blocked:
            self._transport.resume_reading()
            self._drain_safely()


class NativeListeners:
    """The UDP and TCP listeners of one worker."""

    def __init__(self, handler: NativeHandler, settings: Any) -> None:
        self.handler = handler
        self._settings = settings
        self.idle_timeout = float(settings.handle_idle_timeout)
        self._max_connections = int(settings.handle_max_connections)
        self._connections: set[TcpDoor] = set()
        self._server: asyncio.base_events.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None

    def admit(self, connection: TcpDoor) -> bool:
        if len(self._connections) >= self._max_connections:
            return False
        self._connections.add(connection)
        return True

    def release(self, connection: TcpDoor) -> None:
        self._connections.discard(connection)

    async def start(self) -> None:
        address = self._settings.handle_address
        if address is None:
            return
        host, port = address
        loop = asyncio.get_running_loop()
        handler = self.handler
        self._server = await loop.create_server(
            lambda: TcpDoor(handler, self), host, port, reuse_port=True, backlog=1024
        )
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpDoor(handler), local_addr=(host, port), reuse_port=True
        )
        log.info("native Handle protocol on %s:%d (TCP and UDP)", host, port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()


class NativeDoors:
    """ASGI layer in front of the node's application: starts and stops the native listeners
    with the lifespan, and answers ``POST`` of ``application/x-hdl-message`` (any path, as the
    reference client posts to ``/<handle>``) with the native handler."""

    def __init__(self, node: Any, app: ASGIApp) -> None:
        self._app = app
        self._max_body = wire.MAX_MESSAGE_LENGTH + wire.ENVELOPE_SIZE
        settings = node.settings
        self.handler = NativeHandler(node, node_site(settings), sign=load_signer(settings))
        self.listeners = NativeListeners(self.handler, node.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["method"] == "POST" and is_native(scope):
            client = scope.get("client")
            await self._http(receive, send, str(client[0]) if client else None)
            return
        if kind == "lifespan":
            await self._app(scope, self._lifespan(receive), send)
            return
        await self._app(scope, receive, send)

    def _lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> MutableMapping[str, Any]:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.listeners.start()
            elif message["type"] == "lifespan.shutdown":
                await self.listeners.stop()
            return message

        return wrapped

    async def _http(self, receive: Receive, send: Send, source: str | None) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self._max_body:
                await _send(send, 413, b"message too large", b"text/plain")
                return
            if not message.get("more_body"):
                break
        handler = self.handler
        response = await handler.answer(bytes(body), source)
        if response is None:
            await _send(send, 400, b"not a Handle message", b"text/plain")
            return
        await _send(send, 200, response, MIME)
        if handler.counting:
            handler.count("native_http", response, handler.layer)


def is_native(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == MIME)
    return False


async def _send(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
