"""A bounded run of the DNS fuzzer (loadtests/fuzz_dns.py; a million by hand, see its doc)."""

from __future__ import annotations

from loadtests.fuzz_dns import fuzz


async def test_mutated_and_random_queries_never_break_the_dns_front_end() -> None:
    tally = await fuzz(10_000, seed=7)
    assert tally.failures == []
    assert tally.queries == 10_000
    # The run reached every kind of answer, not only the parser's refusals.
    assert {"FORMERR", "NOERROR", "NXDOMAIN", "REFUSED", "NOTIMP"} <= set(tally.rcodes)
    assert tally.dropped > 0
