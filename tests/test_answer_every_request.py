"""A keep-alive client gets an answer to every request it sent, even after a 500.

The node's own 500s are bugs that get fixed one by one, so this runs the server the node runs
(uvicorn with :class:`nodes.http.limits.LimitedHttpToolsProtocol`) in this process around an
application failing on purpose, behind :class:`nodes.http.boundary.AnswerEveryRequest`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from nodes.http.boundary import AnswerEveryRequest
from nodes.http.limits import LimitedHttpToolsProtocol
from nodes.processes import free_ports


def failing_api() -> FastAPI:
    """Like the node's API: a handler for unexpected exceptions that answers 500."""
    app = FastAPI()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        return Response(b'{"responseCode":2}', 500, media_type="application/json")

    @app.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("a bug")

    @app.get("/ok")
    async def ok() -> Response:
        return Response(b"ok", media_type="text/plain")

    return app


async def raw_failing(scope: Any, receive: Any, send: Any) -> None:
    """Fails before any answer on /boom (no framework to answer for it)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        raise RuntimeError("a bug")
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def serve(app: Any) -> Iterator[int]:
    port = free_ports(1)[0]
    config = uvicorn.Config(
        AnswerEveryRequest(app),
        host="127.0.0.1",
        port=port,
        http=LimitedHttpToolsProtocol,
        loop="asyncio",
        lifespan="off",
        log_level="critical",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(params=["framework", "raw"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    yield from serve(failing_api() if request.param == "framework" else raw_failing)


def statuses(conn: socket.socket, count: int) -> list[int]:
    """The statuses of the next ``count`` responses (each with a content-length)."""
    data, found = b"", []
    conn.settimeout(20)
    while len(found) < count:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            assert chunk, f"closed after {found}"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(
            next(
                line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
            ).split(b":")[1]
        )
        while len(data) < length:
            chunk = conn.recv(65536)
            assert chunk, f"closed in a body after {found}"
            data += chunk
        data = data[length:]
        assert b"connection: close" not in head.lower(), head
        found.append(int(head.split(b" ", 2)[1]))
    return found


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_pipelined_requests_after_a_500_are_answered(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(get("/boom") + get("/ok") + get("/boom") + get("/ok"))
        assert statuses(conn, 4) == [500, 200, 500, 200]


def test_next_request_after_a_500_is_answered(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        for _ in range(3):
            conn.sendall(get("/boom"))
            assert statuses(conn, 1) == [500]
            conn.sendall(get("/ok"))
            assert statuses(conn, 1) == [200]
