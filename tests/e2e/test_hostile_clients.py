"""Hostile HTTP clients against a real ``idis serve``: each over a limit gets its status (or its
connection closed) and everyone else is still served (nodes/http/limits.py).

Raw sockets, so that a test controls every byte and its timing.  The node runs with small
limits and short timeouts so that every test is quick; every wait is bounded and generous.
"""

from __future__ import annotations

import base64
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from nodeproc import PREFIX, NodeProcess

MAX_BODY = 4096
MAX_HEAD = 8192
MAX_TARGET = 2048
MAX_HEADERS = 30
HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
IDLE = 3.0
PER_SOURCE = 400
WAIT = 20.0
"""Seconds any answer may take on a loaded 2-core machine before a test gives up."""

HANDLE = f"{PREFIX}/ADMIN"
RESOLVE = f"GET /api/handles/{HANDLE} HTTP/1.1\r\nHost: idis\r\n\r\n".encode()


def limits_env(**overrides: str) -> dict[str, str]:
    env = {
        "IDIS_MAX_BODY_BYTES": str(MAX_BODY),
        "IDIS_LIMITS__MAX_HEADER_BYTES": str(MAX_HEAD),
        "IDIS_LIMITS__MAX_REQUEST_LINE_BYTES": str(MAX_TARGET),
        "IDIS_LIMITS__MAX_HEADERS": str(MAX_HEADERS),
        "IDIS_LIMITS__HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "IDIS_LIMITS__BODY_TIMEOUT": str(BODY_TIMEOUT),
        "IDIS_LIMITS__KEEP_ALIVE_TIMEOUT": str(IDLE),
        "IDIS_LIMITS__MAX_CONNECTIONS_PER_SOURCE": str(PER_SOURCE),
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def node(node_factory) -> Iterator[NodeProcess]:
    started = node_factory(extra_env=limits_env())
    yield started
    log = started.log()
    started.stop()
    assert "Traceback" not in log, log


def authorization(node: NodeProcess) -> str:
    """The prefix administrator's Authorization header line."""
    credentials = f"{node.identity.replace(':', '%3A', 1)}:{node.secret}".encode()
    return f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"


def address(node: NodeProcess) -> tuple[str, int]:
    host, port = node.env["IDIS_HTTP"].rsplit(":", 1)
    return host, int(port)


def connect(node: NodeProcess, source: str = "127.0.0.1") -> socket.socket:
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(WAIT)
    conn.bind((source, 0))
    conn.connect(address(node))
    return conn


_unread: dict[int, bytes] = {}
"""What :func:`read_response` read past the response it returned, by socket file number."""


def read_response(conn: socket.socket) -> tuple[int, bytes, bytes]:
    """The next response: (status, head, body); status 0 if the connection ended before one."""
    data = _unread.pop(conn.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return 0, data, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    if len(body) > length:
        _unread[conn.fileno()] = body[length:]
    return int(head.split(b" ", 2)[1]), head, body[:length]


def closed(conn: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset) with nothing more to read."""
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True


def still_serving(node: NodeProcess, source: str = "127.0.0.1") -> None:
    with connect(node, source) as conn:
        conn.sendall(RESOLVE)
        status, _, body = read_response(conn)
    assert status == 200, body
    assert json.loads(body)["handle"] == HANDLE


def refused(conn: socket.socket, status: int) -> dict:
    """The refusal's JSON body after checking it said ``status`` and closed the connection."""
    got, head, body = read_response(conn)
    assert got == status, head + body
    assert b"connection: close" in head.lower(), head
    assert closed(conn)
    return json.loads(body)


def test_oversized_header_is_431(node: NodeProcess) -> None:
    with connect(node) as conn:
        conn.sendall(b"GET /api/handles/" + HANDLE.encode() + b" HTTP/1.1\r\nHost: idis\r\n")
        conn.sendall(b"X-Big: " + b"a" * (MAX_HEAD + 100) + b"\r\n\r\n")
        assert refused(conn, 431)["responseCode"] == 4
    still_serving(node)


def test_endless_header_is_cut_off(node: NodeProcess) -> None:
    # A header that never ends: refused once the head passes the limit, not buffered for ever.
    with connect(node) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: idis\r\nX-Endless: ")
        try:
            for _ in range(16):
                conn.sendall(b"b" * 65536)
        except OSError:
            pass  # closed after its refusal: fine too
        assert refused(conn, 431)["responseCode"] == 4
    still_serving(node)


def test_requests_before_a_refused_one_are_answered(node: NodeProcess) -> None:
    # Heads are counted by the read: one that begins in the read that completes another
    # request may take up to twice the limit before it is refused.
    oversized = b"GET / HTTP/1.1\r\nHost: idis\r\nX-Big: " + b"a" * (3 * MAX_HEAD) + b"\r\n\r\n"
    with connect(node) as conn:
        conn.sendall(RESOLVE + RESOLVE + oversized)
        assert read_response(conn)[0] == 200
        assert read_response(conn)[0] == 200
        try:
            status = read_response(conn)[0]
        except ConnectionResetError:
            status = 0
        assert status in (431, 0)  # refused, or closed once the two were answered
    still_serving(node)


def test_too_many_headers_is_431(node: NodeProcess) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADERS + 5))
    with connect(node) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: idis\r\n" + fields + b"\r\n")
        assert refused(conn, 431)["responseCode"] == 4
    still_serving(node)


def test_long_request_line_is_414(node: NodeProcess) -> None:
    with connect(node) as conn:
        conn.sendall(b"GET /api/handles/" + b"A" * (MAX_TARGET + 10) + b" HTTP/1.1\r\n\r\n")
        assert refused(conn, 414)["responseCode"] == 4
    still_serving(node)


def test_limits_leave_ordinary_requests_alone(node: NodeProcess) -> None:
    # Just under each limit, on one keep-alive connection, several requests in one write.
    target = b"/api/handles/" + HANDLE.encode() + b"?x=" + b"y" * (MAX_TARGET - 200)
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADERS - 2))
    request = b"GET " + target + b" HTTP/1.1\r\nHost: idis\r\n" + fields + b"\r\n"
    with connect(node) as conn:
        conn.sendall(request * 3)
        for _ in range(3):
            status, _, body = read_response(conn)
            assert status == 200, body


def test_body_over_the_limit_is_413(node: NodeProcess) -> None:
    request = (
        f"PUT /api/handles/{PREFIX}/BIG HTTP/1.1\r\nHost: idis\r\n"
        f"Content-Type: application/json\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n"
    ).encode()
    with connect(node) as conn:
        conn.sendall(request)  # refused on its declared length, before the body comes
        assert refused(conn, 413)["responseCode"] == 4
    still_serving(node)


def slow_sender(conn: socket.socket, first: bytes, drip: bytes, stop: threading.Event) -> None:
    """Send ``first``, then one byte of ``drip`` every 0.3 s until refused or stopped."""
    try:
        conn.sendall(first)
        for byte in drip:
            if stop.wait(0.3):
                return
            conn.sendall(bytes([byte]))
    except OSError:
        return


def test_slow_header_client_gets_408_while_others_are_served(node: NodeProcess) -> None:
    stop = threading.Event()
    with connect(node) as slow:
        started = time.monotonic()
        dripper = threading.Thread(
            target=slow_sender,
            args=(slow, b"GET / HTTP/1.1\r\nHost: idis\r\n", b"X-Slow: " + b"s" * 200, stop),
        )
        dripper.start()
        try:
            still_serving(node)  # while the slow head trickles in
            body = refused(slow, 408)
        finally:
            stop.set()
            dripper.join()
        took = time.monotonic() - started
    assert body["responseCode"] == 4
    # The deadline counts from the first byte, not from the last: the drip did not extend it.
    assert HEAD_TIMEOUT * 0.8 <= took < WAIT, took
    still_serving(node)


def test_slow_body_gets_408(node: NodeProcess) -> None:
    stop = threading.Event()
    head = (
        f"PUT /api/handles/{PREFIX}/SLOW HTTP/1.1\r\nHost: idis\r\n{authorization(node)}"
        f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with connect(node) as slow:
        dripper = threading.Thread(
            target=slow_sender, args=(slow, head + b'{"values": [', b" " * 900, stop)
        )
        dripper.start()
        try:
            still_serving(node)
            body = refused(slow, 408)
        finally:
            stop.set()
            dripper.join()
    assert body["responseCode"] == 4
    still_serving(node)


def test_silent_connection_is_closed_after_the_idle_time(node: NodeProcess) -> None:
    with connect(node) as conn:
        started = time.monotonic()
        assert closed(conn)  # never sent a byte: closed, without an answer
        assert time.monotonic() - started >= IDLE * 0.8
    with connect(node) as conn:  # and after an answer, the same
        conn.sendall(RESOLVE)
        assert read_response(conn)[0] == 200
        assert closed(conn)


def test_keep_alive_after_an_error(node_factory) -> None:
    """Every request sent on a keep-alive connection is answered, an error's included.

    ``page=10**30`` made the listing fail with a 500, after which the connection was closed
    without answering the requests behind it; a listing without a prefix is a client error.
    (A node of its own: that 500 logs its traceback.)
    """
    node = node_factory(extra_env=limits_env())
    failing = [
        f"/api/handles?prefix={PREFIX}&page={10**30}",
        "/api/handles",
        "/api/handles/no-slash-here",
    ]

    def request(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: idis\r\n{authorization(node)}\r\n".encode()

    requests = b"".join(request(path) for path in failing)
    with connect(node) as conn:
        conn.sendall(requests + RESOLVE)  # pipelined: all in before the first answer
        statuses = [read_response(conn)[0] for _ in range(len(failing) + 1)]
        assert all(status >= 400 for status in statuses[:-1]), statuses
        assert statuses[-1] == 200, statuses
        for path in failing:  # and one at a time, after each answer
            conn.sendall(request(path))
            assert read_response(conn)[0] >= 400
            conn.sendall(RESOLVE)
            assert read_response(conn)[0] == 200


# --- floods ----------------------------------------------------------------------------------


def room_for(sockets: int) -> int:
    """How many sockets this process may open (raising its own soft limit as far as it may)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = sockets + 256
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
        return sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard - 256


def open_many(node: NodeProcess, count: int, source: str) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        try:
            conns.append(connect(node, source))
        except OSError:
            break  # refused so early that the handshake failed: counted as refused
    return conns


def sort_out(
    conns: list[socket.socket], cap: int, within: float
) -> tuple[list[socket.socket], int]:
    """(still open and silent, refused with 503 or closed), once no more than ``cap`` are
    silent or after ``within`` seconds: a node under load takes a while to refuse them all."""
    open_, refused_ = list(conns), 0
    deadline = time.monotonic() + within
    while True:
        silent = []
        for conn in open_:
            conn.setblocking(False)
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                silent.append(conn)
                continue
            except ConnectionResetError:
                data = b""
            assert data == b"" or data.startswith(b"HTTP/1.1 503"), data[:200]
            refused_ += 1
            conn.close()
        open_ = silent
        if len(open_) <= cap or time.monotonic() > deadline:
            return open_, refused_
        time.sleep(0.2)


def test_connection_flood_from_one_source(node: NodeProcess) -> None:
    total = min(2000, room_for(2100))
    assert total > PER_SOURCE + 100, "the test process may not open enough sockets"
    conns = open_many(node, total, "127.0.0.2")
    try:
        kept, refused_ = sort_out(conns, PER_SOURCE, IDLE * 0.8)
        refused_ += total - len(conns)
        assert len(kept) == PER_SOURCE, (len(kept), refused_)
        assert refused_ == total - PER_SOURCE
        still_serving(node)  # everyone else: another address
        for conn in kept:
            conn.setblocking(True)
            conn.settimeout(WAIT)
        deadline = time.monotonic() + IDLE + WAIT
        for conn in kept:  # every idle one closed after the idle time
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            assert closed(conn)
        # Once they are gone the source may connect again.
        still_serving(node, "127.0.0.2")
    finally:
        for conn in conns:
            conn.close()


def test_connection_cap_of_the_node(node_factory) -> None:
    cap = 300
    node = node_factory(
        extra_env=limits_env(
            IDIS_LIMITS__MAX_CONNECTIONS=str(cap), IDIS_LIMITS__KEEP_ALIVE_TIMEOUT="30"
        )
    )
    room_for(cap + 200)
    conns = open_many(node, cap // 2, "127.0.0.3") + open_many(node, cap, "127.0.0.4")
    try:
        kept, refused_ = sort_out(conns, cap, WAIT)
        assert len(kept) == cap, (len(kept), refused_)
        with connect(node, "127.0.0.5") as late:  # full: refused whoever it is
            try:
                status, head, body = read_response(late)
            except ConnectionResetError:
                status, head, body = 0, b"", b""
            assert status in (503, 0), head + body
            if status:
                assert b"retry-after" in head.lower()
                assert json.loads(body)["responseCode"] == 3
        for conn in kept[:10]:
            conn.close()
        time.sleep(0.5)
        still_serving(node, "127.0.0.5")  # room again
    finally:
        for conn in conns:
            conn.close()
        assert "Traceback" not in node.log()
