"""Fuzzing the native Handle protocol: mutated and generated messages against the decoder (in
process) and against a live node (over UDP and TCP), every run bounded in count and time.

    python -m loadtests.fuzz_handle decoder --count 1000000
    python -m loadtests.fuzz_handle live --target 127.0.0.1:2641 --count 100000 --http URL

The decoder run feeds each message to what a front end does with a datagram (envelope, request,
the handler's checks) and counts outcomes; anything but a decoded request or a
:class:`resolver.errors.ProtocolError` is a failure.  The live run sends the messages to a
node, drains its answers, and checks afterwards that the node still resolves over UDP and TCP
(and that its HTTP port answers ``/healthz`` without a 5xx).  The seeds are requests as the
reference client and the IDIS SDK send them; mutations flip, insert, delete and splice bytes,
rewrite length fields, and append junk.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator

from resolver.codecs import handle_wire as wire
from resolver.errors import ProtocolError


def seeds() -> list[bytes]:
    out = []
    for n, (handle, kwargs) in enumerate(
        [
            (b"88.100.1/ABC123", {}),
            (b"88.100.1/ABC123", {"types": [b"URL"], "indexes": [1]}),
            (b"0.NA/88.100.1", {"types": [b"HS_SITE", b"HS_SITE.6", b"HS_SERV"]}),
            (b"88.100", {"types": [b"HS_SITE"], "auth_bytes": b"TOKEN", "flags": 0x19000004}),
            (b"88.100.1/ABC123", {"version": (2, 3), "site_info_serial": -1}),
            (b"88.100.1/ABC123", {"flags": wire.AUTH | wire.RRDG | wire.RECU}),
        ]
    ):
        out.append(wire.encode_request(wire.OC_RESOLUTION, handle, request_id=n + 1, **kwargs))  # type: ignore[arg-type]
    out.append(wire.encode_request(wire.OC_GET_SITE_INFO, b"/", request_id=9, session_id=10001))
    out.append(wire.encode_request(wire.OC_CREATE_HANDLE, b"88.100.1/X", request_id=10))
    return out


def mutate(rng: random.Random, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        if kind == 0 and data:  # flip bytes
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:  # insert
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 2 and data:  # delete
            at = rng.randrange(len(data))
            del data[at : at + rng.randint(1, 8)]
        elif kind == 3 and len(data) >= 4:  # rewrite a 4-byte field with a boundary value
            at = rng.randrange(0, len(data) - 3)
            value = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(data), 512, 2048])
            struct.pack_into(">I", data, at, value)
        elif kind == 4:  # truncate
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == 5:  # the envelope's length made right again (reaches the body decoder)
            if len(data) >= 20:
                struct.pack_into(">I", data, 16, len(data) - 20)
        else:  # junk after
            data += rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def messages(count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    bases = seeds()
    for n in range(count):
        if n % 50 == 49:  # now and then, plain random bytes
            yield rng.randbytes(rng.randint(0, 600))
        else:
            data = bytearray(mutate(rng, rng.choice(bases)))
            if len(data) >= 20 and rng.random() < 0.6:  # mostly past the envelope check
                struct.pack_into(">I", data, 16, len(data) - 20)
            yield bytes(data)


def decode_one(data: bytes) -> str:
    """What the front end does with one datagram, as an outcome name; raises on a bug."""
    try:
        envelope = wire.decode_envelope(data)
    except ProtocolError:
        if len(data) >= wire.ENVELOPE_SIZE:  # a TCP front end answers these (code 4)
            refused = wire.undecodable(data)
            wire.frame(refused, wire.RC_PROTOCOL_ERROR, wire.error_body(b"x"), expiration=1)
            return "envelope refused"
        return "no envelope"
    message = data[wire.ENVELOPE_SIZE :]
    if not envelope.truncated and len(message) != envelope.message_length:
        return "length mismatch"
    try:
        request = wire.decode_request(envelope, message)
    except ProtocolError:
        return "refused"
    # The response path must render for any decoded request (errors included).
    wire.frame(request, wire.RC_PROTOCOL_ERROR, wire.error_body(b"x"), expiration=1)
    return f"decoded op {request.op_code}" if request.op_code in (1, 2, 100) else "decoded other"


def run_decoder(count: int, seed: int, duration: float) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + duration
    for n, data in enumerate(messages(count, seed)):
        try:
            outcomes[decode_one(data)] += 1
        except Exception as error:
            raise AssertionError(
                f"message {n} {data.hex()} crashed the decoder: {error!r}"
            ) from error
        if n % 10000 == 0 and time.monotonic() > deadline:
            break
    return outcomes


def run_live(host: str, port: int, count: int, seed: int, duration: float) -> int:
    """Send up to ``count`` messages (mostly UDP, every 20th over a TCP connection of its own);
    how many were sent."""
    sent = 0
    deadline = time.monotonic() + duration
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setblocking(False)
        for data in messages(count, seed):
            if time.monotonic() > deadline:
                break
            sent += 1
            if sent % 20 == 0:
                try:
                    with socket.create_connection((host, port), timeout=2) as conn:
                        conn.sendall(data)
                        conn.shutdown(socket.SHUT_WR)
                        conn.settimeout(2)
                        conn.recv(65536)
                except OSError:
                    pass
                continue
            try:
                udp.sendto(data, (host, port))
            except (BlockingIOError, OSError):
                time.sleep(0.001)
            if sent % 100 == 0:
                _drain(udp)
                time.sleep(0.002)  # the node shares these cores: let it keep up
    return sent


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65536)
        except (BlockingIOError, OSError):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.fuzz_handle")
    parser.add_argument("mode", choices=["decoder", "live"])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds at most")
    parser.add_argument("--target", default="127.0.0.1:2641", help="live: HOST:PORT")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.mode == "decoder":
        outcomes = run_decoder(args.count, args.seed, args.duration)
        total = sum(outcomes.values())
        print(f"{total} messages in {time.monotonic() - started:.1f}s, no crash:")
        for name, number in outcomes.most_common():
            print(f"  {name}: {number}")
        return 0
    host, _, port = args.target.rpartition(":")
    sent = run_live(host, int(port), args.count, args.seed, args.duration)
    from loadtests import handle_client as hc

    reply = hc.udp(host, int(port), hc.resolution("88.100.1/ABC123", request_id=424242))
    print(
        f"{sent} messages sent in {time.monotonic() - started:.1f}s; node answers code {reply.code}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
