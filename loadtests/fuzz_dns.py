"""Fuzzing the DNS front end's parser and answerer with mutated and generated queries.

``python -m loadtests.fuzz_dns --count 1000000`` feeds queries to the same code a DNS worker
runs per datagram (:class:`nodes.dns.server.DnsFront`: the hot-path reader and wire cache,
then the dnspython slow path) over an in-memory node (the resolve chain on
:class:`resolver.memory.MemoryStore`), in-process, so that a million run in minutes.  Queries
are valid ones from a seed corpus (every record type, EDNS or not, UDP and TCP limits) put
through random mutations (bit flips, byte changes, truncation, insertion, header counts,
compression pointers and loops, label lengths) and pure random bytes.

Every answer must be nothing (dropped) or a message dnspython parses, with the query's ID, no
larger than the limit of its transport; no exception may escape, and the answerer must log no
internal error.  The test suite runs a bounded number (tests/test_dns_fuzz.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dns.flags
import dns.message
import dns.rcode

from nodes.dns.server import DnsFront
from nodes.dns.wire import MAX_UDP, TCP_LIMIT
from nodes.settings import Settings
from resolver import chain
from resolver.answers import TtlPolicy
from resolver.cache import MemoryCache
from resolver.homes import Homes
from resolver.memory import LocalGenerations, MemoryStore
from resolver.values import Data, HandleValue, Record

ZONE = "idis.example"
PREFIX = "88.100.1"
NAMES = [
    "abc._.1.100.88.idis.example.",
    "ABC._.1.100.88.IDIS.example.",
    "nope._.1.100.88.idis.example.",
    "1.100.88.idis.example.",
    "_.1.100.88.idis.example.",
    "idis.example.",
    "ns.idis.example.",
    "x._.7.1.100.88.idis.example.",
    "3.156.2.1.oid.1.100.88.idis.example.",
    "b32--i5jmhnwdt5csany._.1.100.88.idis.example.",
    "other.example.",
]
TYPES = ["NAPTR", "URI", "TXT", "ANY", "SOA", "NS", "A", "AAAA", "AXFR", "CNAME"]


async def memory_node(data_dir: Path) -> Any:
    """A node enough for the DNS front end: the authoritative chain over a memory store, with
    a few records and one delegated prefix (88.100.1.7)."""
    store, generations = MemoryStore(), LocalGenerations()
    await store.home_prefix(PREFIX)
    url = HandleValue(1, "URL", Data("string", "https://example.com/p/abc"))
    big = HandleValue(2, "DESC", Data("string", "x" * 1500))
    await store.put(f"{PREFIX}/ABC", Record(f"{PREFIX}/ABC", (url, big)), None)
    await store.put(f"{PREFIX}/1.2.156.3", Record(f"{PREFIX}/1.2.156.3", (url,)), None)
    site = {"servers": [{"serverId": 1, "address": "127.0.0.7", "interfaces": []}]}
    delegated = Record("0.NA/88.100.1.7", (HandleValue(1, "HS_SITE", Data("site", site)),))
    await store.put("0.NA/88.100.1.7", delegated, None)
    homes = Homes(store, generations)
    cache = MemoryCache(generations)
    layers: list[chain.Layer] = [chain.MemoryLayer(cache, generations), chain.CoalesceLayer()]
    resolve = chain.build(layers, chain.StoreLookup(store, homes, TtlPolicy()))
    settings = Settings(data_dir=data_dir, dns="127.0.0.1:53", dns_zone=ZONE)
    return SimpleNamespace(
        settings=settings,
        generations=generations,
        resolve=resolve,
        homes=homes,
        store=store,
        quotas=None,
    )


def seeds() -> list[tuple[bytes, bool]]:
    """Valid queries: each name and type, with and without EDNS, for UDP and TCP."""
    out = []
    for name in NAMES:
        for rdtype in TYPES:
            for edns in (-1, 0):
                query = dns.message.make_query(name, rdtype, use_edns=edns, payload=4096)
                out.append((query.to_wire(), False))
                out.append((query.to_wire(), True))
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one to four random mutations."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(9)
        at = rng.randrange(len(buf)) if buf else 0
        if kind == 0 and buf:  # flip a bit
            buf[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:  # change a byte
            buf[at] = rng.randrange(256)
        elif kind == 2:  # truncate
            del buf[rng.randrange(len(buf) + 1) :]
        elif kind == 3:  # insert bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 4 and len(buf) >= 12:  # header counts
            field_at = rng.choice((4, 6, 8, 10))
            buf[field_at : field_at + 2] = rng.randrange(65536).to_bytes(2, "big")
        elif kind == 5 and len(buf) > 14:  # a compression pointer, often a loop to itself
            target = rng.choice((at, 12, rng.randrange(len(buf))))
            buf[at : at + 2] = (0xC000 | target & 0x3FFF).to_bytes(2, "big")
        elif kind == 6 and len(buf) > 12:  # a label length past the end or reserved
            buf[12] = rng.choice((63, 64, 0x40, 0x80, 0xFF, len(buf)))
        elif kind == 7 and len(buf) >= 4:  # flags: QR, opcodes, Z
            buf[2], buf[3] = rng.randrange(256), rng.randrange(256)
        elif kind == 8:  # append junk
            buf += rng.randbytes(rng.randint(1, 16))
    return bytes(buf)


@dataclass
class Tally:
    queries: int = 0
    answered: int = 0
    dropped: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def check(query: bytes, answer: bytes | None, tcp: bool, tally: Tally) -> None:
    tally.queries += 1
    if answer is None:
        tally.dropped += 1
        return
    tally.answered += 1
    problem = None
    try:
        message = dns.message.from_wire(answer)
        rcode = dns.rcode.to_text(message.rcode())
        tally.rcodes[rcode] = tally.rcodes.get(rcode, 0) + 1
        if answer[:2] != query[:2]:
            problem = "ID not the query's"
        elif not message.flags & dns.flags.QR:
            problem = "answer without QR"
        elif len(answer) > (TCP_LIMIT if tcp else MAX_UDP):
            problem = f"{len(answer)} bytes over the limit"
    except Exception as error:
        problem = f"answer dnspython cannot parse: {error!r}"
    if problem and len(tally.failures) < 20:
        tally.failures.append(f"{problem}: query {query.hex()} answer {answer.hex()}")


async def fuzz(count: int, seed: int = 1, report_every: float = 0.0) -> Tally:
    """Run ``count`` queries; the tally (failures lists what went wrong, at most 20)."""
    rng = random.Random(seed)
    corpus = seeds()
    errors = _Errors()
    logging.getLogger("nodes.dns").addHandler(errors)
    tally = Tally()
    started = last = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        front = DnsFront(await memory_node(Path(tmp)), ZONE, "127.0.0.1")
        try:
            for number in range(count):
                base, tcp = corpus[rng.randrange(len(corpus))]
                roll = rng.random()
                if roll < 0.05:
                    query = base  # valid ones keep the cache and the answers exercised
                elif roll < 0.10:
                    query = rng.randbytes(rng.randrange(64))
                else:
                    query = mutate(base, rng)
                answer = front.cache.answer(query, tcp)
                if answer is None:
                    answer = await front.answer(query, tcp)
                check(query, answer, tcp, tally)
                if report_every and time.monotonic() - last > report_every:
                    last = time.monotonic()
                    rate = number / (last - started)
                    print(f"{number} queries, {rate:.0f}/s", file=sys.stderr, flush=True)
        finally:
            logging.getLogger("nodes.dns").removeHandler(errors)
    tally.failures.extend(f"logged error: {text}" for text in errors.records[:20])
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    tally = asyncio.run(fuzz(args.count, args.seed, report_every=10.0))
    seconds = time.monotonic() - started
    print(
        f"{tally.queries} queries in {seconds:.0f}s: {tally.answered} answered, "
        f"{tally.dropped} dropped; rcodes {dict(sorted(tally.rcodes.items()))}"
    )
    for failure in tally.failures:
        print("FAILURE", failure)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
