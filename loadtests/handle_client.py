"""A small native Handle client (blocking sockets), for the end-to-end tests and the bench.

It sends what :func:`resolver.codecs.handle_wire.encode_request` renders and reads responses
the way the reference client does: UDP packets reassembled by message id up to the envelope's
message length, TCP reads of one envelope and its message, HTTP ``POST`` of the message.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from dataclasses import dataclass

import httpx

from resolver.codecs import handle_wire as wire
from resolver.codecs.handle_data import decode_error, decode_values
from resolver.values import HandleValue


@dataclass(frozen=True)
class Reply:
    """A whole response as received (envelope first), decoded."""

    raw: bytes
    envelope: wire.Envelope
    response: wire.Response
    packets: int = 1

    @property
    def code(self) -> int:
        return self.response.response_code

    def values(self) -> tuple[str, list[tuple[HandleValue, bytes]]]:
        return decode_values(self.response.body)

    def message(self) -> str:
        return decode_error(self.response.body)


def parse(raw: bytes, packets: int = 1) -> Reply:
    envelope = wire.decode_envelope(raw)
    message = raw[wire.ENVELOPE_SIZE : wire.ENVELOPE_SIZE + envelope.message_length]
    return Reply(raw, envelope, wire.decode_response(envelope, message), packets)


def resolution(
    handle: str,
    *,
    request_id: int = 1,
    types: tuple[str, ...] = (),
    indexes: tuple[int, ...] = (),
    flags: int = wire.RECU | wire.CACR | wire.PUBL,
    auth_bytes: bytes | None = None,
    version: tuple[int, int] = (2, 11),
) -> bytes:
    return wire.encode_request(
        wire.OC_RESOLUTION,
        handle.encode(),
        request_id=request_id,
        flags=flags,
        types=[t.encode() for t in types],
        indexes=indexes,
        auth_bytes=auth_bytes,
        version=version,
        expiration=int(time.time()) + 43200,
    )


def udp(host: str, port: int, request: bytes, timeout: float = 10.0) -> Reply:
    """Send ``request`` in one datagram; the reassembled response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, (host, port))
        wanted = wire.decode_envelope(request).request_id
        first = None
        pieces: dict[int, bytes] = {}
        count = 1
        while len(pieces) < count:
            data = sock.recv(65535)
            envelope = wire.decode_envelope(data)
            if envelope.request_id != wanted:
                continue
            if first is None:
                first = data[: wire.ENVELOPE_SIZE]
                count = max(1, -(-envelope.message_length // wire.UDP_DATA))
            pieces[envelope.message_id] = data[wire.ENVELOPE_SIZE :]
        assert first is not None
        whole = first + b"".join(pieces[i] for i in range(count))
        return parse(whole, count)


def read_tcp(sock: socket.socket) -> Reply:
    head = _read(sock, wire.ENVELOPE_SIZE)
    envelope = wire.decode_envelope(head)
    return parse(head + _read(sock, envelope.message_length))


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def tcp(host: str, port: int, request: bytes, timeout: float = 10.0) -> Reply:
    """One request on a new connection (as stock clients do)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_tcp(sock)


def http(base_url: str, handle: str, request: bytes, timeout: float = 10.0) -> Reply:
    """``POST /<handle>`` with the message, as the reference client's HTTP transport does."""
    response = httpx.post(
        f"{base_url.rstrip('/')}/{urllib.parse.quote(handle)}",
        content=request,
        headers={"content-type": "application/x-hdl-message"},
        timeout=timeout,
    )
    response.raise_for_status()
    return parse(response.content)
