"""The DNS hot path: query shapes, keys, and when a kept answer may be sent again."""

from __future__ import annotations

import dns.message
import dns.rcode

from nodes.dns.wire import MAX_UDP, TCP_LIMIT, WireCache, shape
from registry.quotas import QuotaLimits, Quotas
from registry.stores.counters import MemoryCounters
from resolver.memory import LocalGenerations


def wire(name: str, rdtype: str = "NAPTR", **kwargs: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kwargs).to_wire()  # type: ignore[arg-type]


def test_keys_fold_the_name_only() -> None:
    lower, upper = shape(wire("abc.idis.example."), False), shape(wire("ABC.idis.EXAMPLE."), False)
    assert lower is not None and upper is not None
    assert lower.key == upper.key
    # Type 65 is byte 0x41, "A": the question's type and class are never case-folded.
    assert (
        shape(wire("abc.idis.example.", "TYPE65"), False).key
        != shape(  # type: ignore[union-attr]
            wire("abc.idis.example.", "TYPE97"), False
        ).key
    )


def test_limits_follow_transport_and_edns() -> None:
    assert shape(wire("a.example.", use_edns=False), False).limit == 512  # type: ignore[union-attr]
    big = wire("a.example.", use_edns=0, payload=4096)
    assert shape(big, False).limit == MAX_UDP  # type: ignore[union-attr]
    assert shape(big, True).limit == TCP_LIMIT  # type: ignore[union-attr]
    small = shape(wire("a.example.", use_edns=0, payload=100), False)
    assert small is not None and small.limit == 512


def test_anything_unusual_takes_the_slow_path() -> None:
    query = wire("a.example.", use_edns=0)
    assert shape(query + b"x", False) is None  # trailing bytes
    assert shape(query[:-3], False) is None  # cut short
    assert shape(bytes([*query[:2], query[2] | 0x80, *query[3:]]), False) is None  # a response
    bad_option = query[:-2] + b"\x00\x04" + b"\x00\x0a\x00\x09"  # option longer than the record
    assert shape(bad_option, False) is None
    assert shape(b"\x00" * 11, False) is None


def test_kept_answers_end_with_a_write_or_their_expiry() -> None:
    generations, now = LocalGenerations(), [1000.0]
    cache = WireCache(generations, clock=lambda: now[0])
    query = wire("abc.idis.example.")
    shaped = shape(query, False)
    assert shaped is not None
    answer = b"\x00\x00\x81\x80" + query[4:]
    cache.put(shaped, answer, 1010.0, "88.100.1/ABC", generations.current("88.100.1/ABC"))
    again = bytes([0x12, 0x34]) + query[2:]
    assert cache.answer(again, False) == bytes([0x12, 0x34]) + answer[2:]
    assert cache.answer(again, False) is not None  # from the exact-bytes level now
    mixed = wire("AbC.idis.example.")
    hit = cache.answer(mixed, False)
    assert hit is not None and hit[12 : len(mixed) - 4] == mixed[12:-4]  # the client's case
    assert cache.answer(again, True) is None  # another transport, another limit
    generations.bump(["88.100.1/ABC"])
    assert cache.answer(again, False) is None and cache.answer(mixed, False) is None
    cache.put(shaped, answer, 1010.0, "88.100.1/ABC", generations.current("88.100.1/ABC"))
    now[0] = 1010.0
    assert cache.answer(again, False) is None


async def test_kept_answers_count_against_the_daily_quota_and_are_refused_past_it() -> None:
    """Every answer served from the wire cache counts one resolution of its identifier; past
    the prefix's daily quota the query gets REFUSED with its own ID and question, and the
    generation check the C part makes of an exact hit says "stale" (so it never answers)."""
    counters = MemoryCounters()
    quotas = Quotas(QuotaLimits(resolutions_per_prefix=2, flush_seconds=3600), counters, counters)
    generations = LocalGenerations()
    cache = WireCache(generations, quotas=quotas)
    query = wire("abc.idis.example.", use_edns=0)
    shaped = shape(query, False)
    assert shaped is not None
    answer = b"\x00\x00\x81\x80" + query[4:]
    key = "88.100.1/ABC"
    cache.put(shaped, answer, 2e9, key, generations.current(key))
    assert cache.answer(query, False) == query[:2] + answer[2:]  # 1: the keyed level
    assert cache.current(key) == generations.current(key)  # 2: the C part's exact hit
    assert cache.current(key) == -1  # spent: the C part leaves it to Python
    assert quotas.stats() == {}  # ... which is where the refusal is noted, once
    refused = dns.message.from_wire(cache.answer(query, False) or b"")
    assert refused.rcode() == dns.rcode.REFUSED and refused.id == dns.message.from_wire(query).id
    assert refused.question == dns.message.from_wire(query).question and refused.edns == 0
    assert not refused.answer
    assert quotas.stats() == {"603": 1}
    assert cache.current("\x00dns") == generations.current("\x00dns")  # the apex: no record
    await quotas.close()
