"""The recursive walker: referrals, remembered sites, and the early request for the handle."""

from __future__ import annotations

import asyncio

import pytest

from resolver.answers import Outcome, TtlPolicy
from resolver.errors import UpstreamUnavailable
from resolver.sites import HS_SITE_PREFIX, Site, site_data
from resolver.values import HS_SITE, Data, HandleValue
from resolver.walk import PeerAnswer, PeerUnavailable, Walker

TOP = "http://top:8000"
SECONDARY = "http://secondary:8000"
SECONDARY_2 = "http://secondary-2:8000"
ENTERPRISE = "http://enterprise:8000"


def site(*urls: str, type_: str = HS_SITE, index: int = 1) -> HandleValue:
    return HandleValue(index, type_, Data("site", site_data(list(urls))))


def url_value(text: str) -> HandleValue:
    return HandleValue(1, "URL", Data("string", text))


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Peers:
    """Answers from a table keyed by (server, handle); for anything else, what a node holding
    nothing about it answers."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], PeerAnswer | Exception] = {}
        self.asked: list[tuple[str, str, bool]] = []

    async def query(self, base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        self.asked.append((base_url, handle, fresh))
        await asyncio.sleep(0)
        # A prefix record not found (the node would administer it), a handle under a prefix
        # not homed there.
        unknown = 100 if handle.startswith("0.NA/") else 301
        answer = self.table.get((base_url, handle), PeerAnswer(unknown, handle, ()))
        if isinstance(answer, Exception):
            raise answer
        return answer


def federation(peers: Peers, *, hosted_by: str = SECONDARY) -> None:
    """The top level refers 88.100.* to the secondary; 88.100.1 has one identifier, served by
    ``hosted_by`` (the secondary itself, or a node its prefix record names)."""
    referral = (site(SECONDARY, SECONDARY_2, type_=HS_SITE_PREFIX, index=2),)
    peers.table[(TOP, "0.NA/88.100.1")] = PeerAnswer(303, "0.NA/88.100.1", referral, "0.NA/88.100")
    record = () if hosted_by == SECONDARY else (site(hosted_by),)
    for server in (SECONDARY, SECONDARY_2):
        peers.table[(server, "0.NA/88.100.1")] = PeerAnswer(1, "0.NA/88.100.1", record)
    answer = PeerAnswer(1, "88.100.1/A", (url_value("https://example.com/a"),))
    peers.table[(hosted_by, "88.100.1/A")] = answer
    if hosted_by != SECONDARY:
        peers.table[(SECONDARY, "88.100.1/A")] = PeerAnswer(302, "88.100.1/A", record)


def walker(peers: Peers, clock: Clock | None = None, **kw: bool) -> Walker:
    return Walker(peers, [Site((TOP,))], TtlPolicy(), clock or Clock(), **kw)


def enterprise_prefix(peers: Peers, prefix: str, server: str = SECONDARY) -> str:
    """Another enterprise prefix under 88.100, hosted by ``server``, with one identifier."""
    peers.table[(server, f"0.NA/{prefix}")] = PeerAnswer(1, f"0.NA/{prefix}", ())
    peers.table[(server, f"{prefix}/A")] = PeerAnswer(1, f"{prefix}/A", (url_value(prefix),))
    return f"{prefix}/A"


async def test_a_full_walk_asks_the_top_for_the_prefix_and_its_administrator_for_the_handle() -> (
    None
):
    peers = Peers()
    federation(peers)
    peers.table[(SECONDARY, "88.100.1/B")] = PeerAnswer(1, "88.100.1/B", (url_value("b"),))
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.outcome is Outcome.FOUND
    assert answer.record is not None and answer.record.values[0].data.value.endswith("/a")
    # The secondary holds 0.NA/88.100.1: its answer for the handle stands without the record.
    assert answer.source == f"{TOP} 0.NA/88.100.1:303 -> {SECONDARY} 88.100.1/A:1"
    assert [(url, handle) for url, handle, _ in peers.asked] == [
        (TOP, "0.NA/88.100.1"),
        (SECONDARY, "88.100.1/A"),
    ]
    assert (walk.upstream_requests, walk.early_used, walk.early_settled) == (2, 1, 1)
    # The site that answered is remembered as 88.100.1's.
    peers.asked.clear()
    again = await walk("88.100.1/B", False)
    assert again.source == f"0.NA/88.100.1 cached -> {SECONDARY} 88.100.1/B:1"
    assert peers.asked == [(SECONDARY, "88.100.1/B", False)]


async def test_an_early_service_referral_is_followed_without_waiting_for_the_record() -> None:
    peers = Peers()
    federation(peers, hosted_by=ENTERPRISE)
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.outcome is Outcome.FOUND
    assert answer.source == (
        f"{TOP} 0.NA/88.100.1:303 -> {SECONDARY} 88.100.1/A:302 -> {ENTERPRISE} 88.100.1/A:1"
    )
    assert walk.early_settled == 1
    assert (SECONDARY, "0.NA/88.100.1", False) not in peers.asked
    # The sites the referral named are remembered as 88.100.1's.
    peers.asked.clear()
    await walk("88.100.1/A", True)
    assert [url for url, _, _ in peers.asked] == [TOP, SECONDARY, ENTERPRISE]
    peers.asked.clear()
    await walk("88.100.1/A", False)
    assert [url for url, _, _ in peers.asked] == [ENTERPRISE]


@pytest.mark.parametrize("code", [Outcome.NOT_HOMED, Outcome.PREFIX_REFERRAL])
async def test_an_early_answer_not_speaking_for_the_prefix_waits_for_its_record(code: int) -> None:
    peers = Peers()
    federation(peers, hosted_by=ENTERPRISE)
    peers.table[(SECONDARY, "88.100.1/A")] = PeerAnswer(code, "88.100.1/A", ())
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.outcome is Outcome.FOUND
    assert answer.source == (
        f"{TOP} 0.NA/88.100.1:303 -> {SECONDARY} 0.NA/88.100.1:1 -> {ENTERPRISE} 88.100.1/A:1"
    )
    assert [(url, handle) for url, handle, _ in peers.asked] == [
        (TOP, "0.NA/88.100.1"),
        (SECONDARY, "88.100.1/A"),
        (SECONDARY, "0.NA/88.100.1"),
        (ENTERPRISE, "88.100.1/A"),
    ]
    assert (walk.early_used, walk.early_settled, walk.early_dropped) == (0, 0, 1)


async def test_an_early_not_found_under_a_prefix_homed_at_the_site_stands() -> None:
    peers = Peers()
    federation(peers)
    peers.table[(SECONDARY, "88.100.1/NONE")] = PeerAnswer(100, "88.100.1/NONE", ())
    walk = walker(peers)

    answer = await walk("88.100.1/NONE", False)

    assert answer.outcome is Outcome.NOT_FOUND
    assert answer.source == f"{TOP} 0.NA/88.100.1:303 -> {SECONDARY} 88.100.1/NONE:100"
    assert walk.early_settled == 1


async def test_without_early_requests_the_walk_asks_one_after_the_other() -> None:
    peers = Peers()
    federation(peers)
    walk = walker(peers, early=False)

    answer = await walk("88.100.1/A", False)

    assert answer.outcome is Outcome.FOUND
    assert [(url, handle) for url, handle, _ in peers.asked] == [
        (TOP, "0.NA/88.100.1"),
        (SECONDARY, "0.NA/88.100.1"),
        (SECONDARY, "88.100.1/A"),
    ]
    assert (walk.upstream_requests, walk.early_used) == (3, 0)


async def test_a_failed_early_request_moves_on_to_the_next_server_of_the_site() -> None:
    peers = Peers()
    federation(peers)
    peers.table[(SECONDARY, "88.100.1/A")] = PeerUnavailable("down")
    peers.table[(SECONDARY_2, "88.100.1/A")] = PeerAnswer(1, "88.100.1/A", (url_value("b"),))
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.record is not None and answer.record.values[0].data.value == "b"
    # The early request counts as the attempt at the first server: it is not asked again,
    # neither for the handle nor for the prefix record.
    assert peers.asked.count((SECONDARY, "88.100.1/A", False)) == 1
    assert (SECONDARY, "0.NA/88.100.1", False) not in peers.asked
    assert answer.source == (
        f"{TOP} 0.NA/88.100.1:303 -> {SECONDARY} unreachable"
        f" -> {SECONDARY_2} 0.NA/88.100.1:1 -> {SECONDARY_2} 88.100.1/A:1"
    )


async def test_a_remembered_site_is_asked_directly_without_early_requests() -> None:
    peers = Peers()
    federation(peers)
    peers.table[(SECONDARY, "88.100.1/B")] = PeerAnswer(1, "88.100.1/B", (url_value("b"),))
    walk = walker(peers)
    await walk("88.100.1/A", False)
    peers.asked.clear()

    answer = await walk("88.100.1/B", False)

    assert answer.outcome is Outcome.FOUND
    assert peers.asked == [(SECONDARY, "88.100.1/B", False)]
    assert answer.source == f"0.NA/88.100.1 cached -> {SECONDARY} 88.100.1/B:1"


async def test_a_fresh_walk_asks_every_step_fresh_including_the_early_request() -> None:
    peers = Peers()
    federation(peers)
    walk = walker(peers)
    await walk("88.100.1/A", False)
    peers.asked.clear()

    await walk("88.100.1/A", True)

    assert peers.asked == [(TOP, "0.NA/88.100.1", True), (SECONDARY, "88.100.1/A", True)]


async def test_an_unknown_prefix_is_not_found() -> None:
    peers = Peers()
    federation(peers)
    del peers.table[(SECONDARY, "0.NA/88.100.1")], peers.table[(SECONDARY, "88.100.1/A")]
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.outcome is Outcome.NOT_FOUND
    assert answer.source == f"{TOP} 0.NA/88.100.1:303 -> {SECONDARY} 0.NA/88.100.1:100"
    assert [(url, handle) for url, handle, _ in peers.asked] == [
        (TOP, "0.NA/88.100.1"),
        (SECONDARY, "88.100.1/A"),
        (SECONDARY, "0.NA/88.100.1"),
    ]


async def test_a_cancelled_walk_leaves_no_request_behind() -> None:
    peers = Peers()
    federation(peers)
    asked, never = asyncio.Event(), asyncio.Event()

    async def slow(base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        if handle == "88.100.1/A":
            asked.set()
            await never.wait()  # only a cancellation ends this
        return await Peers.query(peers, base_url, handle, fresh=fresh)

    peers.query = slow  # type: ignore[method-assign]
    walk = asyncio.ensure_future(walker(peers)("88.100.1/A", False))
    await asyncio.wait_for(asked.wait(), timeout=1.0)

    walk.cancel()
    with pytest.raises(asyncio.CancelledError):
        await walk
    await asyncio.sleep(0)

    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []


async def test_no_server_answering_is_upstream_unavailable() -> None:
    peers = Peers()
    peers.table[(TOP, "0.NA/88.100.1")] = PeerUnavailable("down")
    with pytest.raises(UpstreamUnavailable):
        await walker(peers)("88.100.1/A", False)


async def test_a_remembered_delegation_skips_the_top_level_for_a_new_prefix() -> None:
    peers = Peers()
    federation(peers)
    handle = enterprise_prefix(peers, "88.100.2")
    walk = walker(peers)
    await walk("88.100.1/A", False)
    peers.asked.clear()

    answer = await walk(handle, False)

    assert answer.record is not None and answer.record.values[0].data.value == "88.100.2"
    assert peers.asked == [(SECONDARY, handle, False)]
    assert answer.source == f"0.NA/88.100 delegation cached -> {SECONDARY} {handle}:1"


@pytest.mark.parametrize("why", ["expired", "fresh"])
async def test_a_walk_starts_at_the_top_past_the_delegation_ttl_or_when_fresh(why: str) -> None:
    peers = Peers()
    federation(peers)
    clock = Clock()
    walk = walker(peers, clock)
    await walk("88.100.1/A", False)
    if why == "expired":
        clock.now += 86_400 + 1  # the referral's values carry the default TTL
    handle = enterprise_prefix(peers, "88.100.3")
    peers.table[(TOP, "0.NA/88.100.3")] = peers.table[(TOP, "0.NA/88.100.1")]
    peers.asked.clear()
    fresh = why == "fresh"

    answer = await walk(handle, fresh)

    assert answer.outcome is Outcome.FOUND
    assert peers.asked[0] == (TOP, "0.NA/88.100.3", fresh)


async def test_an_unreachable_delegation_is_forgotten_and_the_walk_restarts_at_the_top() -> None:
    peers = Peers()
    federation(peers)
    walk = walker(peers)
    await walk("88.100.1/A", False)
    # 88.100 moved to ENTERPRISE's node; the old servers are gone.
    handle = enterprise_prefix(peers, "88.100.5", server=ENTERPRISE)
    moved = (site(ENTERPRISE, type_=HS_SITE_PREFIX, index=2),)
    peers.table[(TOP, "0.NA/88.100.5")] = PeerAnswer(303, "0.NA/88.100.5", moved, "0.NA/88.100")
    for server in (SECONDARY, SECONDARY_2):
        for asked in ("0.NA/88.100.5", handle):
            peers.table[(server, asked)] = PeerUnavailable("down")
    peers.asked.clear()

    answer = await walk(handle, False)

    assert answer.record is not None and answer.record.values[0].data.value == "88.100.5"
    assert f"{SECONDARY_2} unreachable -> {TOP} 0.NA/88.100.5:303" in answer.source
    peers.asked.clear()
    await walk(enterprise_prefix(peers, "88.100.6", server=ENTERPRISE), False)
    assert peers.asked[0][0] == ENTERPRISE, "the new delegation is the one remembered"


@pytest.mark.parametrize(
    ("stated", "why"),
    [
        ("0.NA/88", "a delegated site may not delegate above what it was given"),
        ("0.NA/88.100", "nor what it was given itself"),
        ("0.NA/88.101", "a referral only speaks for prefixes the question derives from"),
        ("88.100/X", "only prefix records delegate"),
    ],
)
async def test_out_of_bailiwick_delegations_are_not_remembered(stated: str, why: str) -> None:
    peers = Peers()
    federation(peers)
    # The secondary, delegated 88.100, refers 0.NA/88.100.7 onward with a claim of its own.
    rogue = (site(ENTERPRISE, type_=HS_SITE_PREFIX, index=2),)
    handle = enterprise_prefix(peers, "88.100.7", server=ENTERPRISE)
    peers.table[(SECONDARY, "0.NA/88.100.7")] = PeerAnswer(303, "0.NA/88.100.7", rogue, stated)
    walk = walker(peers)
    await walk("88.100.1/A", False)
    await walk(handle, False)
    peers.asked.clear()

    answer = await walk(enterprise_prefix(peers, "88.100.8"), False)
    other = await walk("88.101.1/A", False)

    assert answer.outcome is Outcome.FOUND, why
    assert other.outcome is Outcome.NOT_FOUND, why
    assert [url for url, _, _ in peers.asked] == [SECONDARY, TOP], why


async def test_a_delegation_below_the_one_followed_is_remembered() -> None:
    peers = Peers()
    federation(peers)
    # The secondary delegates prefixes derived from 88.100.9 to the enterprise's node.
    below = (site(ENTERPRISE, type_=HS_SITE_PREFIX, index=2),)
    peers.table[(SECONDARY, "0.NA/88.100.9.1")] = PeerAnswer(
        303, "0.NA/88.100.9.1", below, "0.NA/88.100.9"
    )
    first = enterprise_prefix(peers, "88.100.9.1", server=ENTERPRISE)
    peers.table[(SECONDARY, first)] = PeerAnswer(303, first, below, "0.NA/88.100.9")
    walk = walker(peers)
    await walk("88.100.1/A", False)
    assert (await walk(first, False)).outcome is Outcome.FOUND
    peers.asked.clear()

    await walk(enterprise_prefix(peers, "88.100.9.2", server=ENTERPRISE), False)

    assert peers.asked[0][0] == ENTERPRISE


async def test_a_root_referral_speaks_only_for_prefixes_the_question_derives_from() -> None:
    peers = Peers()
    federation(peers)
    referral = peers.table[(TOP, "0.NA/88.100.1")]
    assert isinstance(referral, PeerAnswer)
    peers.table[(TOP, "0.NA/88.100.1")] = PeerAnswer(
        303, referral.handle, referral.values, "0.NA/88.101"
    )
    walk = walker(peers)
    await walk("88.100.1/A", False)
    peers.asked.clear()

    await walk("88.101.1/A", False)

    assert peers.asked[0] == (TOP, "0.NA/88.101.1", False)
