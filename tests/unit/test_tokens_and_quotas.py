"""Scoped identities, tokens (in-memory store) and quota counting, without processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

import pytest

from nodes.snms.api import dated_password
from registry.authorization import ALL_RIGHTS, Right, Scoped, in_scope, rights
from registry.quotas import Key, QuotaLimits, Quotas
from registry.stores.tokens import MemoryTokens
from registry.tokens import Tokens
from resolver.errors import InsufficientPermissions, InvalidValue, QuotaExceeded
from resolver.identifiers import Handle
from resolver.values import AdminRef, Data, HandleValue, Record, Ref

ME = Ref("88.100/ADMIN", 300)


def owned(handle: str) -> Record:
    admin = AdminRef(ME.handle, ME.index, ALL_RIGHTS)
    return Record(handle, (HandleValue(100, "HS_ADMIN", Data("admin", admin)),))


async def fetch(key: str) -> Record | None:
    return owned(key) if key.startswith(("0.NA/88.100", "88.100")) else None


def test_scope_covers_the_prefix_its_derived_prefixes_and_their_prefix_records() -> None:
    assert in_scope("88.100/x", "88.100") and in_scope("88.100.7/x", "88.100")
    assert in_scope("0.NA/88.100", "88.100") and in_scope("0.NA/88.100.7", "88.100")
    assert not in_scope("88.1001/x", "88.100") and not in_scope("0.NA/88", "88.100")
    assert in_scope("99/x", "")


async def test_a_scoped_identity_holds_its_own_rights_within_the_mask_and_prefix() -> None:
    scoped = Scoped(ME.handle, ME.index, prefix="88.100", mask=int(Right.ADD_HANDLE))
    assert await rights(ME, owned("88.100/a"), fetch) == ALL_RIGHTS
    assert await rights(scoped, owned("88.100/a"), fetch) == Right.ADD_HANDLE
    assert await rights(scoped, owned("88.101/a"), fetch) == 0
    assert str(scoped) == str(ME)


async def test_tokens_issue_check_and_revoke() -> None:
    clock = [1000.0]
    tokens = Tokens(MemoryTokens(), fetch, clock=lambda: clock[0])
    text, token = await tokens.issue(ME, prefix="88.100", mask=int(Right.READ_VALUE), ttl=60)
    assert token.digest != text and len(text) >= 40
    scoped = await tokens.authenticate(text)
    assert scoped is not None and scoped.mask == Right.READ_VALUE and scoped.prefix == "88.100"
    assert await tokens.authenticate(text + "x") is None
    with pytest.raises(InsufficientPermissions):
        await tokens.issue(scoped, prefix="88.100", mask=1, ttl=60)
    with pytest.raises(InsufficientPermissions):
        await tokens.issue(ME, prefix="99", mask=1, ttl=60)
    with pytest.raises(InvalidValue):
        await tokens.issue(ME, prefix="88.100", mask=0, ttl=60)
    assert [t.id for t in await tokens.list(ME)] == [token.id]
    assert not await tokens.revoke(Ref("88.100/OTHER", 300), token.id)
    assert await tokens.revoke(ME, token.id)
    assert await tokens.authenticate(text) is None
    second, _ = await tokens.issue(ME, prefix="", mask=ALL_RIGHTS, ttl=60)
    clock[0] += 61
    assert await tokens.authenticate(second) is None  # expired


class DictCounters:
    def __init__(self) -> None:
        self.counts: Counter[Key] = Counter()
        self.calls = 0

    async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
        self.calls += 1
        for key, n in deltas.items():
            self.counts[key] += n
        return {key: self.counts[key] for key in deltas}

    async def close(self) -> None:
        return None


async def test_daily_resolutions_are_counted_locally_and_shared_by_flushing() -> None:
    shared = DictCounters()
    limits = QuotaLimits(resolutions_per_prefix=5, flush_seconds=3600)
    one, two = Quotas(limits, shared, shared), Quotas(limits, shared, shared)
    for _ in range(3):
        one.resolved("88.100/a")
    assert shared.calls == 0  # nothing leaves the worker per request
    await one.flush()
    await two.flush()  # learns nothing yet: it follows no subject
    two.resolved("88.100/b")
    await two.flush()  # now it knows the 3 of the other worker
    assert two.admit("88.100/c")
    assert not two.admit("88.100/d")  # 3 + 2 = 5
    with pytest.raises(QuotaExceeded) as refused:
        two.resolved("88.100/e")
    assert refused.value.code == 603
    assert two.admit("99/a")  # another prefix
    await one.close()
    await two.close()


class SlowCounters(DictCounters):
    """Counters whose answer takes until ``answer`` is set: a flush in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
        await self.answer.wait()
        return await super().add(deltas)


async def test_counts_on_their_way_to_the_store_still_count() -> None:
    """A worker alone must stop at exactly its quota, even while a flush is in flight: the
    counts it sent are neither pending nor in the totals the store has not answered yet."""
    slow = SlowCounters()
    quotas = Quotas(QuotaLimits(resolutions_per_identity=5, flush_seconds=3600), slow, slow)
    me = Ref("88.100/ADMIN", 300)
    assert all(quotas.admit("88.100/a", me) for _ in range(3))
    flushing = asyncio.create_task(quotas.flush())
    await asyncio.sleep(0)  # the flush now waits for the store's answer
    admitted = sum(quotas.admit("88.100/a", me) for _ in range(5))
    slow.answer.set()
    await flushing
    admitted += sum(quotas.admit("88.100/a", me) for _ in range(5))
    assert 3 + admitted == 5
    await quotas.close()


async def test_a_failed_flush_keeps_its_counts_once() -> None:
    """A store that fails: the counts go back to pending, not also into the totals."""

    class Failing(DictCounters):
        async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
            raise OSError("down")

    failing = Failing()
    quotas = Quotas(QuotaLimits(resolutions_per_identity=5, flush_seconds=3600), failing, failing)
    me = Ref("88.100/ADMIN", 300)
    assert all(quotas.admit("88.100/a", me) for _ in range(3))
    await quotas.flush()
    assert sum(quotas.admit("88.100/a", me) for _ in range(5)) == 2
    await quotas.close()


async def test_registrations_are_reserved_all_or_none_and_released() -> None:
    counters = DictCounters()
    limits = QuotaLimits(registrations_per_prefix=3, prefixes_per_identity=1)
    quotas = Quotas(limits, counters, counters)
    handles = [Handle.parse(f"88.100/{n}") for n in range(3)]
    await quotas.reserve(ME, handles[:2])
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(ME, handles[:2])
    assert refused.value.code == 604
    assert counters.counts[("registrations:prefix:88.100", "")] == 2  # the refusal gave back
    await quotas.release(ME, handles[:1], deleted=True)
    await quotas.reserve(ME, handles[2:])
    await quotas.reserve(ME, [Handle.parse("0.NA/88.100.1")])
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(ME, [Handle.parse("0.NA/88.100.2")])
    assert refused.value.code == 605


def test_the_dated_password_is_a_double_sha256() -> None:
    # sha256("secret") then sha256 of its hex with the day appended.
    inner = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    import hashlib

    expected = hashlib.sha256((inner + "2026-12-06").encode()).hexdigest()
    assert dated_password("secret", "2026-12-06") == expected
