"""Load for the native Handle protocol, and its ceiling: run as processes of their own.

    python -m loadtests.native_load drive --proto udp --target 127.0.0.1:2641 \
        --handle 88.100.1/SN00000001 --duration 5 [--distinct START:COUNT]
    python -m loadtests.native_load echo --port 2642 --reply-hex HEX

``drive`` keeps ``--window`` requests in flight (over UDP on one socket; over TCP spread on
``--connections`` persistent connections, pipelined), sending the next as each answer arrives,
and prints one JSON line: answers, answers with response code 1, errors, seconds, rate.  Lost
datagrams are re-sent after a pause without answers (counted as ``lost``).  With
``--distinct`` every request names another identifier (``88.100.1/SN%08d`` from START), never
one twice, as the uncached HTTP figure does.

``echo`` is the ceiling of a Python server here: raw uvloop UDP and TCP answering every request
with the same bytes (``--reply-hex``, a response the node gave) with the request id patched in,
and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time

import uvloop

from resolver.codecs import handle_wire as wire

_ID = struct.Struct(">i")


class Requests:
    """The requests to send: one handle again and again, or a run of distinct identifiers."""

    def __init__(self, handle: str, distinct: tuple[int, int] | None, suffix_format: str) -> None:
        self._distinct = distinct
        self._next = distinct[0] if distinct else 0
        self._prefix = handle.partition("/")[0]
        self._suffix_format = suffix_format
        self._template = bytearray(
            wire.encode_request(wire.OC_RESOLUTION, handle.encode(), request_id=0)
        )
        self._id = 0
        self.exhausted = False

    def next(self) -> bytes:
        self._id = (self._id + 1) & 0x7FFFFFFF
        if self._distinct is None:
            struct.pack_into(">i", self._template, 8, self._id)
            return bytes(self._template)
        start, count = self._distinct
        if self._next >= start + count:
            self.exhausted = True
            self._next = start
        handle = f"{self._prefix}/{self._suffix_format % self._next}".encode()
        self._next += 1
        return wire.encode_request(wire.OC_RESOLUTION, handle, request_id=self._id)


class Counter:
    def __init__(self) -> None:
        self.answers = 0
        self.found = 0
        self.errors = 0
        self.lost = 0
        self.last = time.monotonic()

    def count(self, message: bytes) -> None:
        """One response (its first packet, envelope first)."""
        self.answers += 1
        self.last = time.monotonic()
        if len(message) >= 28 and message[24:28] == b"\x00\x00\x00\x01":
            self.found += 1
        else:
            self.errors += 1


class UdpDriver(asyncio.DatagramProtocol):
    def __init__(self, requests: Requests, counter: Counter, window: int) -> None:
        self.requests, self.counter, self.window = requests, counter, window
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.refill()

    def refill(self) -> None:
        assert self.transport is not None
        for _ in range(self.window):
            self.transport.sendto(self.requests.next())

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data[12:16] != b"\x00\x00\x00\x00":
            return  # a later packet of a multi-packet answer
        self.counter.count(data)
        assert self.transport is not None
        self.transport.sendto(self.requests.next())


class TcpDriver(asyncio.Protocol):
    def __init__(self, requests: Requests, counter: Counter, window: int) -> None:
        self.requests, self.counter, self.window = requests, counter, window
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(b"".join(self.requests.next() for _ in range(self.window)))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        sent = []
        while len(buffer) >= 20:
            (length,) = _ID.unpack_from(buffer, 16)
            end = 20 + length
            if len(buffer) < end:
                break
            self.counter.count(bytes(buffer[:28]))
            del buffer[:end]
            sent.append(self.requests.next())
        if sent and self.transport is not None:
            self.transport.write(b"".join(sent))


async def drive(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    host, _, port = args.target.rpartition(":")
    distinct = None
    if args.distinct:
        start, _, count = args.distinct.partition(":")
        distinct = (int(start), int(count))
    requests = Requests(args.handle, distinct, args.suffix_format)
    counter = Counter()
    closers = []
    if args.proto == "udp":
        transport, udp = await loop.create_datagram_endpoint(
            lambda: UdpDriver(requests, counter, args.window), remote_addr=(host, int(port))
        )
        closers.append(transport)
    else:
        per = max(1, args.window // args.connections)
        for _ in range(args.connections):
            transport, _ = await loop.create_connection(
                lambda: TcpDriver(requests, counter, per), host, int(port)
            )
            closers.append(transport)
    await asyncio.sleep(args.warmup)
    first = (counter.answers, counter.found, counter.errors)
    started = time.monotonic()
    deadline = started + args.duration
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if args.proto == "udp" and time.monotonic() - counter.last > 0.2:
            counter.lost += args.window  # the window was lost: send it again
            counter.last = time.monotonic()
            udp.refill()
    seconds = time.monotonic() - started
    answers = counter.answers - first[0]
    for transport in closers:
        transport.close()
    return {
        "proto": args.proto,
        "answers": answers,
        "found": counter.found - first[1],
        "errors": counter.errors - first[2],
        "lost": counter.lost,
        "seconds": round(seconds, 3),
        "rate": round(answers / seconds, 1) if seconds else 0.0,
        "exhausted": requests.exhausted,
    }


# --- the echo ceiling ----------------------------------------------------------------------


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = bytearray(reply)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        reply = self.reply
        reply[8:12] = data[8:12]
        assert self.transport is not None
        self.transport.sendto(bytes(reply), addr)


class TcpEcho(asyncio.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = bytearray(reply)
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        out = []
        while len(buffer) >= 20:
            (length,) = _ID.unpack_from(buffer, 16)
            if len(buffer) < 20 + length:
                break
            reply = self.reply
            reply[8:12] = buffer[8:12]
            out.append(bytes(reply))
            del buffer[: 20 + length]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def echo(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reply = bytes.fromhex(args.reply_hex)
    await loop.create_datagram_endpoint(lambda: UdpEcho(reply), local_addr=("127.0.0.1", args.port))
    server = await loop.create_server(lambda: TcpEcho(reply), "127.0.0.1", args.port)
    print("echo ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.native_load")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("drive")
    run.add_argument("--proto", choices=["udp", "tcp"], required=True)
    run.add_argument("--target", required=True)
    run.add_argument("--handle", required=True)
    run.add_argument("--distinct", help="START:COUNT identifiers SUFFIX_FORMAT %% n")
    run.add_argument("--suffix-format", default="SN%08d")
    run.add_argument("--duration", type=float, default=5.0)
    run.add_argument("--warmup", type=float, default=0.5)
    run.add_argument("--window", type=int, default=64)
    run.add_argument("--connections", type=int, default=8)
    serve = commands.add_parser("echo")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--reply-hex", required=True)
    args = parser.parse_args(argv)
    if args.command == "drive":
        print(json.dumps(uvloop.run(drive(args))), flush=True)
    else:
        uvloop.run(echo(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
