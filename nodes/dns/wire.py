"""The DNS hot path: pre-rendered answers keyed by the normalised query, ID patched in.

DESIGN.md section 4: parsing and building a message with dnspython per query runs at ~4k q/s,
sending bytes rendered once with the query's ID patched in at ~210k q/s.  So a query is first
read here by hand, only as far as needed to key it: a single question, no records but at most
one OPT, plain labels (no compression pointers).  Anything else, and every miss, goes to the
slow path (:mod:`nodes.dns.answers`), which parses with dnspython and renders the answer that
is then kept here.

The key is the query's flags, its question with the name lower-cased (ASCII only, as DNS
compares names), and the answer's size class: the UDP payload limit (or the TCP one) and the
EDNS presence and DO bit.  A response is rendered with the question as the first query gave
it; a hit sends ``ID + header + the query's own question + the rest``, so the question, and the
answer names compressed to point at it, keep the case each client sent (0x20 randomisation).

An entry is served while it has not expired and the write generation of the identifier key
it answered is still the one noted before the answer was read (``resolver.ports.Generations``):
a write anywhere on the node makes the next query miss, as for REST.

With a daily resolution quota (registry/quotas.py), each answer served is counted against the
prefix of the identifier it answers, as on every door, and a query past the limit is answered
REFUSED: DNS has no code for "quota spent", and REFUSED is what a server says when policy
stops it answering (RFC 1035 section 4.1.1), without naming the data as absent or broken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from registry.quotas import Quotas
from resolver.ports import Generations

MAX_UDP = 1232
"""The largest UDP answer sent, whatever a client advertises (DNS flag day 2020)."""
TCP_LIMIT = 65535
STATIC_KEY = "\x00dns"
"""The generation key of answers that depend on no record (the apex, names in no form)."""
OPT = b"\x00\x00\x29" + MAX_UDP.to_bytes(2, "big") + bytes(6)
"""The OPT record of an answer to an EDNS query: version 0, no flags, no options."""
REFUSED = 5
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"
_OPT_TYPE = b"\x00\x29"


@dataclass(frozen=True, slots=True)
class QueryShape:
    """What :func:`shape` read: the cache key, where the question ends, the size limit."""

    key: bytes
    question_end: int
    limit: int


def shape(data: bytes, tcp: bool) -> QueryShape | None:
    """The shape of a plain query (see the module's docstring), or None to take the slow path."""
    size = len(data)
    if size < 17 or data[4:10] != _ONE_QUESTION or data[2] & 0xF8:  # QR, opcode
        return None
    at = 12
    while True:
        if at >= size:
            return None
        length = data[at]
        if length == 0:
            break
        if length > 63:  # a pointer or a reserved label type
            return None
        at += length + 1
    name_end = at + 1
    end = name_end + 4
    additional = data[10:12]
    if additional == b"\x00\x00":
        if end != size:
            return None
        limit = TCP_LIMIT if tcp else 512
        edns = b"\x00"
    elif additional == b"\x00\x01":
        limits = _opt(data, end, size)
        if limits is None:
            return None
        payload, do = limits
        limit = TCP_LIMIT if tcp else min(max(payload, 512), MAX_UDP)
        edns = b"\x81" if do else b"\x01"
    else:
        return None
    key = b"".join(
        (data[2:4], data[12:name_end].lower(), data[name_end:end], limit.to_bytes(2, "big"), edns)
    )
    return QueryShape(key, end, limit)


def refusal(data: bytes, query: QueryShape, *, recursive: bool) -> bytes:
    """REFUSED to the plain query ``data``, as a daily resolution quota (603) is answered in
    DNS: its ID, RD as asked, its question, and an OPT record if it sent one."""
    flags = 0x8000 | (data[2] & 0x01) << 8 | REFUSED  # QR, RD as asked
    if recursive:
        flags |= 0x0080
    edns = data[10:12] == b"\x00\x01"
    counts = _ONE_QUESTION + (b"\x00\x01" if edns else b"\x00\x00")
    question = data[12 : query.question_end]
    return data[:2] + flags.to_bytes(2, "big") + counts + question + (OPT if edns else b"")


def _opt(data: bytes, at: int, size: int) -> tuple[int, bool] | None:
    """The payload size and DO bit of an OPT record at ``at`` that ends the message exactly."""
    if size < at + 11 or data[at] != 0 or data[at + 1 : at + 3] != _OPT_TYPE:
        return None
    if data[at + 5] != 0 or data[at + 6] != 0:  # extended rcode, version 0 only
        return None
    end = at + 11 + int.from_bytes(data[at + 9 : at + 11], "big")
    if end != size:
        return None
    option = at + 11
    while option < end:  # the options' own lengths must add up, or the query is malformed
        if option + 4 > end:
            return None
        option += 4 + int.from_bytes(data[option + 2 : option + 4], "big")
    if option != end:
        return None
    return int.from_bytes(data[at + 3 : at + 5], "big"), bool(data[at + 7] & 0x80)


Entry = tuple[bytes, float, str, int]
"""A kept answer: its wire form, when it expires (wall clock), the generation key it depends
on and that key's generation when the answer was read."""


class WireCache:
    """Rendered answers by query key; bounded, the oldest insertion evicted first.

    In front of the keyed entries sits a map from a query's exact bytes after its ID to the
    answer's bytes after the ID: a client repeating a query (the same name in the same case,
    the same EDNS options) is answered with one dictionary lookup and no reading at all.
    """

    def __init__(
        self,
        generations: Generations,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
        *,
        quotas: Quotas | None = None,
        recursive: bool = False,
    ) -> None:
        """``quotas``: the node's, when they limit daily resolutions per prefix (DNS queries
        carry no identity): every answer served here is counted, and one past the limit is
        REFUSED (:func:`refusal`) instead."""
        self._entries: dict[bytes, Entry] = {}
        self._exact: tuple[dict[bytes, Entry], dict[bytes, Entry]] = ({}, {})
        """By transport (UDP, TCP): query bytes after the ID -> answer bytes after the ID."""
        self.exact_udp = self._exact[0]
        """The UDP level, which nodes/dns/udp.py's C part reads too."""
        self.generations = generations
        self._generations = generations
        self._max = max_entries
        self._clock = clock
        self._quotas = quotas
        self._recursive = recursive
        self.current: Callable[[str], int] = (
            generations.current if quotas is None else self._counted_current
        )
        """The generation check the C part makes of an exact hit: with quotas it counts the
        resolution too, and answers a generation no entry holds (a miss, answered in Python
        with the refusal) when the day is spent."""

    def _counted_current(self, key: str) -> int:
        assert self._quotas is not None
        if key != STATIC_KEY and not self._quotas.admit(key, note=False):
            return -1
        return self._generations.current(key)

    def _admitted(self, data: bytes, tcp: bool, key: str, answer: bytes) -> bytes | None:
        """``answer`` if the quotas admit a resolution of ``key``, else the refusal."""
        quotas = self._quotas
        assert quotas is not None
        if key == STATIC_KEY or quotas.admit(key):
            return answer
        query = shape(data, tcp)
        return None if query is None else refusal(data, query, recursive=self._recursive)

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, data: bytes, tcp: bool) -> bytes | None:
        """The kept answer to the query ``data`` with its ID (and question) patched in."""
        exact = self._exact[tcp]
        tail = data[2:]
        entry = exact.get(tail)
        if entry is not None:
            if entry[1] > self._clock() and self._generations.current(entry[2]) == entry[3]:
                if self._quotas is None:  # the common case: no call more per answer
                    return data[:2] + entry[0]
                return self._admitted(data, tcp, entry[2], data[:2] + entry[0])
            del exact[tail]
        query = shape(data, tcp)
        if query is None:
            return None
        entry = self._entries.get(query.key)
        if entry is None:
            return None
        wire, expires, generation_key, generation = entry
        if expires <= self._clock() or self._generations.current(generation_key) != generation:
            del self._entries[query.key]
            return None
        end = query.question_end
        answer = data[:2] + wire[2:12] + data[12:end] + wire[end:]
        _bounded_put(exact, tail, (answer[2:], expires, generation_key, generation), self._max)
        if self._quotas is None:
            return answer
        return self._admitted(data, tcp, generation_key, answer)

    def put(
        self, query: QueryShape, wire: bytes, expires: float, key: str, generation: int
    ) -> None:
        _bounded_put(self._entries, query.key, (wire, expires, key, generation), self._max)


def _bounded_put(entries: dict[bytes, Entry], key: bytes, entry: Entry, limit: int) -> None:
    if limit <= 0:
        return
    if key not in entries and len(entries) >= limit:
        del entries[next(iter(entries))]
    entries[key] = entry
