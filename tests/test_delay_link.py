"""The emulated inter-city link of the national tier (nodes.national.link): a round trip
through it takes at least twice its one-way delay, bytes arrive whole and in order, and
stopping it leaves nothing listening."""

from __future__ import annotations

import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from nodes.national.link import DelayLink
from nodes.processes import HOST


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer((HOST, 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        chunk = conn.recv(size - len(got))
        assert chunk, "the link closed the connection"
        got += chunk
    return got


def _round_trips(port: int, count: int) -> list[float]:
    """Seconds of each of ``count`` one-byte round trips on one connection."""
    times = []
    with socket.create_connection((HOST, port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for n in range(count):
            started = time.perf_counter()
            conn.sendall(bytes([n]))
            assert _recv_exactly(conn, 1) == bytes([n])
            times.append(time.perf_counter() - started)
    return times


def test_round_trip_pays_the_delay_both_ways_and_bytes_stay_in_order(echo_port: int) -> None:
    link = DelayLink(one_way=0.010)
    try:
        port = link.relay(echo_port)
        # A delay is a floor, never a ceiling: only the lower bound is asserted.
        assert min(_round_trips(port, 10)) >= 0.0195
        payload = bytes(range(256)) * 4096  # 1 MiB, many chunks, pipelined through the delay
        with socket.create_connection((HOST, port), timeout=30) as conn:
            deadline = time.monotonic() + 10
            while link.connections(echo_port) != 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert link.connections(echo_port) == 1
            sender = threading.Thread(target=conn.sendall, args=(payload,))
            sender.start()
            assert _recv_exactly(conn, len(payload)) == payload
            sender.join(30)
        deadline = time.monotonic() + 10
        while link.connections(echo_port) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.connections(echo_port) == 0
        link.one_way = 0.0  # applies at once, to the next chunks
        assert statistics.median(_round_trips(port, 10)) < 0.0195
    finally:
        link.stop()
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=5).close()
    link.stop()  # idempotent
    assert not any(t.name == "idis-link" for t in threading.enumerate())
