"""The peer client against a scripted HTTP server on loopback: reuse, framing, failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from nodes.peer_client import MAX_BODY_BYTES, HttpPeerClient
from resolver.walk import PeerUnavailable

ANSWER = orjson.dumps(
    {
        "responseCode": 303,
        "handle": "0.NA/88.100.1",
        "referral": "0.NA/88.100",
        "values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "x"}}],
    }
)

Reply = Callable[[bytes], bytes | None]
"""From the request head to the bytes written back (None: write nothing, keep waiting)."""


def plain(body: bytes = ANSWER, status: str = "200 OK", extra: str = "") -> Reply:
    head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
    return lambda _request: head + body


class Server:
    """Counts connections and requests; answers each request with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                out = self.reply(head)
                if out is None:
                    await asyncio.sleep(3600)
                writer.write(out or b"")
                await writer.drain()
                if b"connection: close" in (out or b"").lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[tuple[Server, str]]:
    server = Server(reply)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        for writer in server.writers:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def test_an_answer_is_parsed_and_the_connection_reused() -> None:
    async with serving(plain()) as (server, url):
        client = HttpPeerClient()
        for _ in range(3):
            answer = await client.query(url, "0.NA/88.100.1", fresh=False)
        await client.close()
    assert (answer.code, answer.handle, answer.referral) == (303, "0.NA/88.100.1", "0.NA/88.100")
    assert answer.values[0].data.value == "x"
    assert server.connections == 1 and len(server.requests) == 3
    assert server.requests[0].startswith(b"GET /api/handles/0.NA/88.100.1 HTTP/1.1\r\n")


async def test_a_fresh_query_asks_for_auth_and_the_handle_is_percent_encoded() -> None:
    async with serving(plain()) as (server, url):
        client = HttpPeerClient()
        await client.query(url + "/base/", "88.100.1/a b?#", fresh=True)
        await client.close()
    assert server.requests[0].startswith(
        b"GET /base/api/handles/88.100.1/a%20b%3F%23?auth=true HTTP/1.1\r\n"
    )


async def test_a_chunked_answer_is_read_whole() -> None:
    half = len(ANSWER) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        ANSWER[:half],
        len(ANSWER) - half,
        ANSWER[half:],
    )
    reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks
    async with serving(lambda _: reply) as (server, url):
        client = HttpPeerClient()
        answer = await client.query(url, "0.NA/88.100.1", fresh=False)
        await client.query(url, "0.NA/88.100.1", fresh=False)
        await client.close()
    assert answer.referral == "0.NA/88.100"
    assert server.connections == 1


async def test_connection_close_is_honoured() -> None:
    async with serving(plain(extra="connection: close\r\n")) as (server, url):
        client = HttpPeerClient()
        for _ in range(2):
            assert (await client.query(url, "0.NA/88.100.1", fresh=False)).code == 303
        await client.close()
    assert server.connections == 2


async def test_an_idle_connection_the_peer_closed_is_replaced_once() -> None:
    async with serving(plain()) as (server, url):
        client = HttpPeerClient()
        await client.query(url, "0.NA/88.100.1", fresh=False)
        for writer in server.writers:
            # The peer drops the idle connection; the client learns it only on its next turn
            # of the loop, after it took the connection for this query.
            writer.transport.abort()
        answer = await client.query(url, "0.NA/88.100.1", fresh=False)
        await client.close()
    assert answer.code == 303
    assert server.connections == 2


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (plain(status="500 Internal Server Error"), "a server error"),
        (plain(b"not json"), "a body that is no JSON"),
        (plain(b'{"values":[]}'), "an answer without a responseCode"),
        (lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: zz\r\n\r\n", "broken framing"),
        (lambda _: b"SMTP ready\r\n\r\n", "not HTTP"),
        (lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nabc", "cut"),
        (
            lambda _: (
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
                + b" " * (MAX_BODY_BYTES + 1)
            ),
            "an answer too large",
        ),
    ],
)
async def test_a_bad_answer_is_peer_unavailable(reply: Reply, why: str) -> None:
    async with serving(reply) as (_server, url):
        client = HttpPeerClient()
        with pytest.raises(PeerUnavailable):
            await client.query(url, "0.NA/88.100.1", fresh=False)
        await client.close()


async def test_a_silent_peer_times_out() -> None:
    async with serving(lambda _: None) as (_server, url):
        client = HttpPeerClient(timeout=0.2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(PeerUnavailable):
            await client.query(url, "0.NA/88.100.1", fresh=False)
        assert asyncio.get_running_loop().time() - started < 1.0
        await client.close()


async def test_a_refused_connection_is_peer_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HttpPeerClient()
    with pytest.raises(PeerUnavailable):
        await client.query(f"http://127.0.0.1:{port}", "0.NA/88.100.1", fresh=False)


async def test_a_cancelled_query_does_not_leave_its_connection_for_reuse() -> None:
    answered = asyncio.Event()

    def reply(request: bytes) -> bytes | None:
        if b"/SLOW" in request:
            return None
        answered.set()
        return plain()(request)

    async with serving(reply) as (server, url):
        client = HttpPeerClient()
        slow = asyncio.ensure_future(client.query(url, "88.100.1/SLOW", fresh=False))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        answer = await client.query(url, "0.NA/88.100.1", fresh=False)
        await client.close()
    assert answer.code == 303
    assert server.connections == 2, "the cancelled request's connection was not reused"


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1:21", "http://127.0.0.1:99999", "http://[::1", "http://", "x"]
)
async def test_only_http_urls_are_peers(url: str) -> None:
    client = HttpPeerClient()
    with pytest.raises(PeerUnavailable):
        await client.query(url, "0.NA/88", fresh=False)
