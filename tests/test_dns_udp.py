"""DNS over UDP both ways: the C batch reader (built with the package) and uvloop's protocol."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from loadtests.fuzz_dns import PREFIX, ZONE, memory_node
from nodes.dns import udp
from nodes.dns.server import DnsFront
from nodes.processes import free_ports
from resolver.values import Data, HandleValue, Record

NAME = f"abc._.1.100.88.{ZONE}."


def test_the_c_reader_is_built() -> None:
    """``pip install -e .`` builds it where the tests run; a build that failed quietly would
    leave DNS at the Python floor, and it untested."""
    assert udp._udp is not None


def uris(message: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in message.answer for rd in rrset]


@pytest.mark.parametrize("batches", [True, False])
async def test_answers_hits_misses_writes_and_junk(tmp_path: Path, batches: bool) -> None:
    node = await memory_node(tmp_path)
    front = DnsFront(node, ZONE, "127.0.0.1")
    port = free_ports(1)[0]
    stop = await udp.serve_udp(front, "127.0.0.1", port, socket.AF_INET, batches=batches)
    try:

        async def ask(name: str = NAME) -> dns.message.Message:
            query = dns.message.make_query(name, "URI")
            return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=5)

        for _ in range(3):  # a miss, then hits: the last ones from the exact-bytes level
            assert uris(await ask()) == ['10 1 "https://example.com/p/abc"']
        assert front.cache.exact_udp
        key = f"{PREFIX}/ABC"
        record = await node.store.get(key)
        value = HandleValue(1, "URL", Data("string", "https://example.com/v2"))
        assert await node.store.put(key, Record(key, (value,)), record.version)
        node.generations.bump([key])
        assert uris(await ask()) == ['10 1 "https://example.com/v2"']
        assert (await ask(f"nope._.1.100.88.{ZONE}.")).rcode() == dns.rcode.NXDOMAIN
        # Junk among the queries: answered FORMERR or dropped, and the server goes on.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for junk in (b"", b"\x01", b"\xbe\xef" + bytes(10), b"\xbe\xef\x01\x00" + b"\xff" * 60):
                sock.sendto(junk, ("127.0.0.1", port))
            await asyncio.sleep(0.2)
        assert uris(await ask()) == ['10 1 "https://example.com/v2"']
    finally:
        stop()


async def test_mutated_datagrams_through_the_c_reader(tmp_path: Path) -> None:
    """Mutated queries over a real socket in batches; the server answers a good one after."""
    import random

    from loadtests.fuzz_dns import mutate, seeds

    node = await memory_node(tmp_path)
    front = DnsFront(node, ZONE, "127.0.0.1")
    port = free_ports(1)[0]
    stop = await udp.serve_udp(front, "127.0.0.1", port, socket.AF_INET, batches=True)
    rng = random.Random(5)
    corpus = [query for query, tcp in seeds() if not tcp]
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for number in range(5000):
                base = corpus[rng.randrange(len(corpus))]
                sock.sendto(base if number % 10 == 0 else mutate(base, rng), ("127.0.0.1", port))
                if number % 100 == 0:
                    await asyncio.sleep(0.01)  # let the server read; the socket buffer is finite
        await asyncio.sleep(0.5)
        query = dns.message.make_query(NAME, "URI")
        answer = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=5)
        assert uris(answer) == ['10 1 "https://example.com/p/abc"']
        assert errors == []
    finally:
        stop()
