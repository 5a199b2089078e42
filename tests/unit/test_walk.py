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
    """Answers from a table keyed by (server, handle); not-found for anything else.

    ``hold`` makes the answer to a (server, handle) wait until another (server, handle) has
    been asked: a walk that asks them one after the other stops there (and times out).
    """

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], PeerAnswer | Exception] = {}
        self.asked: list[tuple[str, str, bool]] = []
        self.hold: dict[tuple[str, str], tuple[str, str]] = {}
        self._seen: dict[tuple[str, str], asyncio.Event] = {}

    def seen(self, key: tuple[str, str]) -> asyncio.Event:
        return self._seen.setdefault(key, asyncio.Event())

    async def query(self, base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        self.asked.append((base_url, handle, fresh))
        self.seen((base_url, handle)).set()
        await asyncio.sleep(0)
        wait_for = self.hold.get((base_url, handle))
        if wait_for is not None:
            await asyncio.wait_for(self.seen(wait_for).wait(), timeout=1.0)
        answer = self.table.get((base_url, handle), PeerAnswer(100, handle, ()))
        if isinstance(answer, Exception):
            raise answer
        return answer


def federation(peers: Peers, *, hosted_by: str = SECONDARY) -> None:
    """The top level refers 88.100.* to the secondary; 88.100.1 has one identifier, served by
    ``hosted_by`` (the secondary itself, or a node its prefix record names)."""
    referral = (site(SECONDARY, SECONDARY_2, type_=HS_SITE_PREFIX, index=2),)
    peers.table[(TOP, "0.NA/88.100.1")] = PeerAnswer(303, "0.NA/88.100.1", referral)
    record = () if hosted_by == SECONDARY else (site(hosted_by),)
    for server in (SECONDARY, SECONDARY_2):
        peers.table[(server, "0.NA/88.100.1")] = PeerAnswer(1, "0.NA/88.100.1", record)
    answer = PeerAnswer(1, "88.100.1/A", (url_value("https://example.com/a"),))
    peers.table[(hosted_by, "88.100.1/A")] = answer
    if hosted_by != SECONDARY:
        peers.table[(SECONDARY, "88.100.1/A")] = PeerAnswer(302, "88.100.1/A", record)


def walker(peers: Peers, **kw: bool) -> Walker:
    return Walker(peers, [Site((TOP,))], TtlPolicy(), Clock(), **kw)


async def test_a_full_walk_asks_for_the_handle_alongside_the_prefix_record() -> None:
    peers = Peers()
    federation(peers)
    # The secondary answers 0.NA/88.100.1 only once it has also been asked for the handle.
    peers.hold[(SECONDARY, "0.NA/88.100.1")] = (SECONDARY, "88.100.1/A")
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.outcome is Outcome.FOUND
    assert answer.record is not None and answer.record.values[0].data.value.endswith("/a")
    assert [(url, handle) for url, handle, _ in peers.asked] == [
        (TOP, "0.NA/88.100.1"),
        (SECONDARY, "0.NA/88.100.1"),
        (SECONDARY, "88.100.1/A"),
    ]
    assert answer.source == (
        f"{TOP} 0.NA/88.100.1:303 -> {SECONDARY} 0.NA/88.100.1:1 -> {SECONDARY} 88.100.1/A:1"
    )
    assert (walk.upstream_requests, walk.early_used, walk.early_dropped) == (3, 1, 0)


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


async def test_the_early_answer_is_dropped_when_the_prefix_is_served_elsewhere() -> None:
    peers = Peers()
    federation(peers, hosted_by=ENTERPRISE)
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.outcome is Outcome.FOUND
    assert answer.source.endswith(f"{SECONDARY} 0.NA/88.100.1:1 -> {ENTERPRISE} 88.100.1/A:1")
    assert (ENTERPRISE, "88.100.1/A", False) in peers.asked
    assert (walk.early_used, walk.early_dropped) == (0, 1)


async def test_a_failed_early_request_moves_on_to_the_next_server_of_the_site() -> None:
    peers = Peers()
    federation(peers)
    peers.table[(SECONDARY, "88.100.1/A")] = PeerUnavailable("down")
    peers.table[(SECONDARY_2, "88.100.1/A")] = PeerAnswer(1, "88.100.1/A", (url_value("b"),))
    walk = walker(peers)

    answer = await walk("88.100.1/A", False)

    assert answer.record is not None and answer.record.values[0].data.value == "b"
    # The early request counts as the attempt at the first server: it is not asked again.
    assert peers.asked.count((SECONDARY, "88.100.1/A", False)) == 1
    assert f"{SECONDARY} unreachable -> {SECONDARY_2} 88.100.1/A:1" in answer.source


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

    assert [fresh for _, _, fresh in peers.asked] == [True, True, True]
    assert len(peers.asked) == 3


async def test_an_unknown_prefix_cancels_the_early_request() -> None:
    peers = Peers()
    federation(peers)
    del peers.table[(SECONDARY, "0.NA/88.100.1")]
    never = asyncio.Event()

    async def slow(base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        if handle == "88.100.1/A":
            await never.wait()  # only a cancellation ends this
        return await Peers.query(peers, base_url, handle, fresh=fresh)

    peers.query = slow  # type: ignore[method-assign]
    walk = walker(peers)

    answer = await asyncio.wait_for(walk("88.100.1/A", False), timeout=1.0)
    await asyncio.sleep(0)

    assert answer.outcome is Outcome.NOT_FOUND
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []


async def test_no_server_answering_is_upstream_unavailable() -> None:
    peers = Peers()
    peers.table[(TOP, "0.NA/88.100.1")] = PeerUnavailable("down")
    with pytest.raises(UpstreamUnavailable):
        await walker(peers)("88.100.1/A", False)
