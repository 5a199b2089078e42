"""The resolution chain: memory cache, coalescing, shared cache, store lookup and TTL policy."""

from __future__ import annotations

import asyncio
import gc

import orjson
import pytest

from resolver.answers import Answer, Outcome, TtlPolicy
from resolver.cache import MemoryCache, keep, restore
from resolver.chain import CoalesceLayer, MemoryLayer, SharedLayer, StoreLookup, build
from resolver.codecs.stored import decode_record, encode_values
from resolver.errors import UpstreamUnavailable
from resolver.homes import HOMES_KEY, Homes
from resolver.memory import LocalGenerations, MemorySharedCache, MemoryStore
from resolver.render import public_resolution
from resolver.values import AdminRef, Data, HandleValue, Record, Ref
from resolver.walk import StaleLayer


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting:
    """A terminal that answers FOUND for every key and counts its calls."""

    def __init__(self, clock: Clock, ttl: float = 60.0) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.clock = clock
        self.ttl = ttl

    async def __call__(self, key: str, fresh: bool) -> Answer:
        self.calls.append((key, fresh))
        record = Record(key, (HandleValue(1, "URL", Data("string", f"#{len(self.calls)}")),))
        return Answer(key, Outcome.FOUND, record, self.clock() + self.ttl, "store")


def answer(key: str = "88/A", expires: float = 2_000_000.0, marker: str = "x") -> Answer:
    record = Record(key, (HandleValue(1, "URL", Data("string", marker)),), version=3)
    return Answer(key, Outcome.FOUND, record, expires, "store")


def marker(result: Answer) -> str:
    assert result.record is not None
    return str(result.record.values[0].data.value)


# --- MemoryCache ---------------------------------------------------------------------------


def test_memory_cache_serves_until_expiry() -> None:
    clock = Clock(100.0)
    cache = MemoryCache(LocalGenerations(), clock=clock)
    cache.put(answer(expires=110.0), 0)
    clock.now = 109.9
    assert cache.get("88/A") is not None
    clock.now = 110.0
    assert cache.get("88/A") is None
    assert len(cache) == 0


def test_memory_cache_drops_entries_of_an_older_generation() -> None:
    generations = LocalGenerations()
    cache = MemoryCache(generations, clock=Clock(0.0))
    cache.put(answer(), generations.current("88/A"))
    assert cache.get("88/A") is not None
    generations.bump(["88/A"])
    assert cache.get("88/A") is None


def test_memory_cache_is_bounded_and_evicts_the_oldest_insertion() -> None:
    cache = MemoryCache(LocalGenerations(), max_entries=2, clock=Clock(0.0))
    for key in ("88/A", "88/B", "88/C"):
        cache.put(answer(key), 0)
    assert len(cache) == 2
    assert cache.get("88/A") is None
    assert cache.get("88/B") is not None
    assert cache.get("88/C") is not None


def test_memory_cache_replacing_a_key_does_not_evict_another() -> None:
    cache = MemoryCache(LocalGenerations(), max_entries=2, clock=Clock(0.0))
    cache.put(answer("88/A"), 0)
    cache.put(answer("88/B"), 0)
    cache.put(answer("88/A", marker="new"), 0)
    assert len(cache) == 2
    cached = cache.get("88/A")
    assert cached is not None and marker(cached) == "new"


def test_memory_cache_public_body_is_the_public_resolution() -> None:
    cache = MemoryCache(LocalGenerations(), clock=Clock(0.0))
    cache.put(answer(marker="https://x"), 0)
    hit = cache.public_body("88/A", "88/A")
    assert hit is not None
    body, source, generation, expires = hit
    assert orjson.loads(body)["values"][0]["data"]["value"] == "https://x"
    assert body == public_resolution(answer(marker="https://x").record)
    assert source == "store"
    assert (generation, expires) == (0, answer(marker="https://x").expires)
    again = cache.public_body("88/A", "88/A")
    assert again is not None and again[0] is body  # rendered once


def test_memory_cache_public_body_only_for_a_found_answer_of_that_text() -> None:
    cache = MemoryCache(LocalGenerations(), clock=Clock(0.0))
    cache.put(answer("88/A"), 0)
    assert cache.public_body("88/A", "88/a") is None  # the body names the handle as stored
    cache.put(Answer("88/B", Outcome.NOT_FOUND, None, 10.0, "store"), 0)
    assert cache.public_body("88/B", "88/B") is None
    referral = Answer("88/C", Outcome.SERVICE_REFERRAL, rich_record(), 10.0, "store")
    cache.put(referral, 0)
    assert cache.public_body("88/C", "88/A") is None
    assert cache.get("88/C") == referral


def test_memory_cache_public_body_is_checked_like_get() -> None:
    clock = Clock(100.0)
    generations = LocalGenerations()
    cache = MemoryCache(generations, clock=clock)
    cache.put(answer("88/A", expires=110.0), 0)
    cache.put(answer("88/B", expires=110.0), 0)
    generations.bump(["88/A"])
    assert cache.public_body("88/A", "88/A") is None
    clock.now = 110.0
    assert cache.public_body("88/B", "88/B") is None
    assert len(cache) == 0


def rich_record(stored: bool = False) -> Record:
    values = (
        HandleValue(100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88", 200, 0xFFF)), timestamp=7),
        HandleValue(
            1, "URL", Data("string", "u"), permissions=0b1010, references=(Ref("88/B", 1),)
        ),
        HandleValue(2, "HS_VLIST", Data("vlist", (Ref("88/C", 300),)), ttl=9, ttl_absolute=True),
        HandleValue(10, "HS_SITE", Data("site", {"servers": [{"id": 1}]})),
    )
    if stored:
        return decode_record("88/A", encode_values(values), 42)
    return Record("88/A", values, version=42)


def test_a_kept_answer_is_restored_as_it_was() -> None:
    for record in (rich_record(), rich_record(stored=True), None):
        outcome = Outcome.FOUND if record else Outcome.NOT_FOUND
        original = Answer("88/A", outcome, record, 123.0, "stale (walk)")
        restored = restore("88/A", keep(original))
        assert restored == original
        assert restored.outcome is outcome


def test_a_kept_answer_holds_the_stored_form_it_was_read_in() -> None:
    record = rich_record(stored=True)
    kept = keep(Answer("88/A", Outcome.FOUND, record, 123.0, "store"))
    assert record.stored is not None and record.stored in kept  # passed on, not encoded again
    again = restore("88/A", kept).record
    assert again is not None and again.stored is record.stored


def test_cached_answers_add_no_object_for_the_garbage_collector_to_visit() -> None:
    # A full collection visits every tracked object: a large cache of decoded records (a
    # dozen objects each) stalled a worker for a second.
    cache = MemoryCache(LocalGenerations(), clock=Clock(0.0))
    gc.collect()
    before = len(gc.get_objects())
    for n in range(1000):
        record = rich_record(stored=n % 2 == 0)
        cache.put(Answer(f"88/{n}", Outcome.FOUND, record, 123.0, "store"), 0)
        assert cache.public_body(f"88/{n}", "88/A") is not None
    assert cache.get("88/7") is not None
    gc.collect()
    assert len(gc.get_objects()) - before < 100


# --- build ------------------------------------------------------------------------------


class Tracing:
    def __init__(self, name: str, trace: list[str]) -> None:
        self.name = name
        self.trace = trace

    async def resolve(self, key, fresh, next):  # type: ignore[no-untyped-def]
        self.trace.append(f"{self.name}>")
        result = await next(key, fresh)
        self.trace.append(f"<{self.name}")
        return result


async def test_build_runs_layers_outermost_first_around_the_terminal() -> None:
    trace: list[str] = []

    async def terminal(key: str, fresh: bool) -> Answer:
        trace.append("terminal")
        return answer(key)

    resolve = build([Tracing("a", trace), Tracing("b", trace)], terminal)
    await resolve("88/A", False)
    assert trace == ["a>", "b>", "terminal", "<b", "<a"]


async def test_build_with_no_layers_is_the_terminal() -> None:
    terminal = Counting(Clock())
    assert build([], terminal) is terminal


# --- MemoryLayer -------------------------------------------------------------------------


def memory_chain(clock: Clock) -> tuple[MemoryLayer, Counting, LocalGenerations]:
    generations = LocalGenerations()
    layer = MemoryLayer(MemoryCache(generations, clock=clock), generations)
    return layer, Counting(clock), generations


async def test_memory_layer_miss_goes_down_and_hit_is_served_from_memory() -> None:
    clock = Clock()
    layer, terminal, _ = memory_chain(clock)
    resolve = build([layer], terminal)
    first = await resolve("88/A", False)
    second = await resolve("88/A", False)
    assert first.source == "store"
    assert second.source == "memory"
    assert marker(second) == marker(first)
    assert len(terminal.calls) == 1


async def test_memory_layer_keeps_a_stale_answer_marked_stale() -> None:
    clock = Clock()
    layer, _terminal, _ = memory_chain(clock)

    async def stale(key: str, fresh: bool) -> Answer:
        return answer(key, clock() + 2).with_source("stale (walk)")

    resolve = build([layer], stale)
    assert (await resolve("88/A", False)).source == "stale (walk)"
    assert (await resolve("88/A", False)).source == "stale (memory)"


async def test_memory_layer_fresh_bypasses_the_cache_and_refreshes_it() -> None:
    clock = Clock()
    layer, terminal, _ = memory_chain(clock)
    resolve = build([layer], terminal)
    await resolve("88/A", False)
    fresh = await resolve("88/A", True)
    assert fresh.source == "store"
    assert terminal.calls == [("88/A", False), ("88/A", True)]
    assert marker(await resolve("88/A", False)) == marker(fresh) == "#2"


async def test_memory_layer_misses_after_a_write_bumps_the_generation() -> None:
    clock = Clock()
    layer, terminal, generations = memory_chain(clock)
    resolve = build([layer], terminal)
    await resolve("88/A", False)
    generations.bump(["88/A"])
    assert (await resolve("88/A", False)).source == "store"
    assert len(terminal.calls) == 2


async def test_memory_layer_does_not_trust_an_answer_read_during_a_write() -> None:
    clock = Clock()
    generations = LocalGenerations()
    layer = MemoryLayer(MemoryCache(generations, clock=clock), generations)

    async def racing(key: str, fresh: bool) -> Answer:
        result = answer(key)
        generations.bump([key])  # a writer commits while this (now old) read is in flight
        return result

    resolve = build([layer], racing)
    await resolve("88/A", False)
    assert layer.cache.get("88/A") is None


async def test_memory_layer_misses_after_expiry() -> None:
    clock = Clock()
    layer, terminal, _ = memory_chain(clock)
    resolve = build([layer], terminal)
    await resolve("88/A", False)
    clock.now += terminal.ttl
    assert (await resolve("88/A", False)).source == "store"


# --- CoalesceLayer -------------------------------------------------------------------------


async def test_concurrent_misses_for_one_key_walk_the_chain_once() -> None:
    release = asyncio.Event()
    calls = 0

    async def slow(key: str, fresh: bool) -> Answer:
        nonlocal calls
        calls += 1
        await release.wait()
        return answer(key, marker="shared")

    layer = CoalesceLayer()
    resolve = build([layer], slow)
    tasks = [asyncio.create_task(resolve("88/A", False)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert layer.walks == 1
    assert {marker(r) for r in results} == {"shared"}


async def test_different_keys_are_not_coalesced() -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def slow(key: str, fresh: bool) -> Answer:
        seen.append(key)
        await release.wait()
        return answer(key)

    resolve = build([CoalesceLayer()], slow)
    tasks = [asyncio.create_task(resolve(k, False)) for k in ("88/A", "88/B", "88/A")]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(seen) == ["88/A", "88/B"]


async def test_an_exception_reaches_every_waiter() -> None:
    release = asyncio.Event()
    calls = 0

    async def failing(key: str, fresh: bool) -> Answer:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("store down")

    resolve = build([CoalesceLayer()], failing)
    tasks = [asyncio.create_task(resolve("88/A", False)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1
    assert len(results) == 5
    assert all(isinstance(r, RuntimeError) and str(r) == "store down" for r in results)


async def test_after_a_walk_completes_the_next_miss_walks_again() -> None:
    terminal = Counting(Clock())
    layer = CoalesceLayer()
    resolve = build([layer], terminal)
    await resolve("88/A", False)
    await resolve("88/A", False)
    assert len(terminal.calls) == 2
    assert layer.walks == 2


async def test_after_a_failure_the_next_miss_walks_again() -> None:
    attempts = 0

    async def flaky(key: str, fresh: bool) -> Answer:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("once")
        return answer(key)

    resolve = build([CoalesceLayer()], flaky)
    with pytest.raises(RuntimeError):
        await resolve("88/A", False)
    assert (await resolve("88/A", False)).key == "88/A"


async def test_fresh_requests_are_not_coalesced() -> None:
    release = asyncio.Event()
    calls = 0

    async def slow(key: str, fresh: bool) -> Answer:
        nonlocal calls
        calls += 1
        await release.wait()
        return answer(key)

    resolve = build([CoalesceLayer()], slow)
    tasks = [asyncio.create_task(resolve("88/A", True)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert calls == 3


# --- SharedLayer ---------------------------------------------------------------------------


def shared_chain(clock: Clock) -> tuple[SharedLayer, MemorySharedCache, LocalGenerations]:
    generations = LocalGenerations()
    shared = MemorySharedCache()
    return SharedLayer(shared, generations, clock=clock), shared, generations


async def test_shared_layer_stores_and_then_serves_the_answer() -> None:
    clock = Clock()
    layer, _, _ = shared_chain(clock)
    terminal = Counting(clock)
    resolve = build([layer], terminal)
    first = await resolve("88/A", False)
    second = await resolve("88/A", False)
    assert len(terminal.calls) == 1
    assert second.source == "redis"
    assert second.record == first.record
    assert second.expires == first.expires
    assert second.outcome is Outcome.FOUND


async def test_shared_layer_keeps_the_record_version_and_value_details() -> None:
    clock = Clock()
    layer, _, _ = shared_chain(clock)
    record = Record(
        "88/A",
        (
            HandleValue(
                100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88", 200, 0xFFF)), timestamp=7
            ),
            HandleValue(
                1, "URL", Data("string", "u"), permissions=0b1010, references=(Ref("88/B", 1),)
            ),
        ),
        version=42,
    )

    async def terminal(key: str, fresh: bool) -> Answer:
        return Answer(key, Outcome.FOUND, record, clock() + 60, "store")

    resolve = build([layer], terminal)
    await resolve("88/A", False)
    assert (await resolve("88/A", False)).record == record


async def test_shared_layer_passes_on_the_stored_form_as_read() -> None:
    clock = Clock()
    layer, shared, _ = shared_chain(clock)
    record = rich_record(stored=True)
    assert record.stored is not None

    async def terminal(key: str, fresh: bool) -> Answer:
        return Answer(key, Outcome.FOUND, record, clock() + 60, "store")

    resolve = build([layer], terminal)
    await resolve("88/A", False)
    blob = await shared.get("88/A")
    assert blob is not None and blob.endswith(b"\n" + record.stored)
    cached = (await resolve("88/A", False)).record
    assert cached == record and cached.stored == record.stored


async def test_shared_layer_remembers_a_negative_answer() -> None:
    clock = Clock()
    layer, _, _ = shared_chain(clock)
    calls = 0

    async def missing(key: str, fresh: bool) -> Answer:
        nonlocal calls
        calls += 1
        return Answer(key, Outcome.NOT_FOUND, None, clock() + 5, "store")

    resolve = build([layer], missing)
    await resolve("88/A", False)
    cached = await resolve("88/A", False)
    assert calls == 1
    assert (cached.outcome, cached.record, cached.source) == (Outcome.NOT_FOUND, None, "redis")


async def test_shared_layer_ignores_an_entry_of_a_stale_generation() -> None:
    clock = Clock()
    layer, _, generations = shared_chain(clock)
    terminal = Counting(clock)
    resolve = build([layer], terminal)
    await resolve("88/A", False)
    generations.bump(["88/A"])
    again = await resolve("88/A", False)
    assert again.source == "store"
    assert len(terminal.calls) == 2


async def test_shared_layer_ignores_an_expired_entry() -> None:
    clock = Clock()
    layer, _, _ = shared_chain(clock)
    terminal = Counting(clock, ttl=10)
    resolve = build([layer], terminal)
    await resolve("88/A", False)
    clock.now += 10  # the shared cache's own TTL runs on another clock: the layer must check
    assert (await resolve("88/A", False)).source == "store"
    assert len(terminal.calls) == 2


@pytest.mark.parametrize(
    "blob",
    [
        b"not json",
        b"",
        b"[]",
        b"5",
        b'{"a": 1}',
        b'[0, "later", 1]',
        b"[0, 9e12, 77]",
        b'[0, 9e12, 1, "88/A", 1]\nnot json',
        b'[0, 9e12, 1, "88/A", 1]\n[[1]]',
        b'[0, 9e12, 1, "88/A", 1]\n[[1, "URL", "string", "x", 86400, 0, 5]]',
    ],
)
async def test_shared_layer_ignores_a_garbage_blob(blob: bytes) -> None:
    clock = Clock()
    layer, shared, _ = shared_chain(clock)
    await shared.set("88/A", blob, 60)
    terminal = Counting(clock)
    result = await build([layer], terminal)("88/A", False)
    assert result.source == "store"
    assert len(terminal.calls) == 1


async def test_shared_layer_fresh_bypasses_the_cache() -> None:
    clock = Clock()
    layer, _, _ = shared_chain(clock)
    terminal = Counting(clock)
    resolve = build([layer], terminal)
    await resolve("88/A", False)
    assert (await resolve("88/A", True)).source == "store"
    assert marker(await resolve("88/A", False)) == "#2"  # the fresh answer replaced it


async def test_shared_layer_does_not_store_an_already_expired_answer() -> None:
    clock = Clock()
    layer, shared, _ = shared_chain(clock)
    await build([layer], Counting(clock, ttl=0))("88/A", False)
    assert await shared.get("88/A") is None


# --- StoreLookup -------------------------------------------------------------------------


async def lookup_with(*homed: str, records: tuple[Record, ...] = ()) -> StoreLookup:
    store = MemoryStore()
    for prefix in homed:
        await store.home_prefix(prefix)
    for record in records:
        await store.put(record.handle.upper(), record, None)
    homes = Homes(store, LocalGenerations())
    return StoreLookup(store, homes, TtlPolicy(), clock=Clock(1000.0))


async def test_store_lookup_found() -> None:
    record = Record("88.100.1/abc", (HandleValue(1, "URL", Data("string", "u"), ttl=30),))
    lookup = await lookup_with("88.100.1", records=(record,))
    result = await lookup("88.100.1/ABC", False)
    assert result.outcome is Outcome.FOUND
    assert result.record is not None and result.record.handle == "88.100.1/abc"
    assert result.expires == 1030.0
    assert result.source == "store"


async def test_store_lookup_not_found_under_a_homed_prefix() -> None:
    lookup = await lookup_with("88.100.1")
    result = await lookup("88.100.1/NOPE", False)
    assert result.outcome is Outcome.NOT_FOUND
    assert result.record is None
    assert result.expires == 1000.0 + TtlPolicy().negative_ttl


async def test_store_lookup_not_homed() -> None:
    lookup = await lookup_with("88.100.1")
    assert (await lookup("88.100.2/ABC", False)).outcome is Outcome.NOT_HOMED


async def test_store_lookup_parent_prefix_does_not_home_its_derived_prefixes_handles() -> None:
    lookup = await lookup_with("88.100")
    assert (await lookup("88.100.1/ABC", False)).outcome is Outcome.NOT_HOMED


async def test_prefix_record_of_a_derived_prefix_lives_where_an_ancestor_is_homed() -> None:
    lookup = await lookup_with("88.100")
    assert (await lookup("0.NA/88.100.1", False)).outcome is Outcome.NOT_FOUND
    assert (await lookup("0.NA/88.100", False)).outcome is Outcome.NOT_FOUND
    assert (await lookup("0.NA/88.101", False)).outcome is Outcome.NOT_HOMED
    assert (await lookup("0.NA/88", False)).outcome is Outcome.NOT_HOMED


async def test_homes_reload_when_the_homes_generation_is_bumped() -> None:
    store = MemoryStore()
    generations = LocalGenerations()
    homes = Homes(store, generations)
    assert not await homes.serves("88.100.1/A")
    await store.home_prefix("88.100.1")
    assert not await homes.serves("88.100.1/A")  # remembered until told
    generations.bump([HOMES_KEY])
    assert await homes.serves("88.100.1/A")


# --- TtlPolicy -----------------------------------------------------------------------------


def ttl_record(*values: HandleValue) -> Record:
    return Record("88/A", values)


def test_expiry_is_the_smallest_value_ttl() -> None:
    record = ttl_record(
        HandleValue(1, "URL", Data("string", "a"), ttl=300),
        HandleValue(2, "URL", Data("string", "b"), ttl=60),
    )
    assert TtlPolicy().expiry(record, 1000.0) == 1060.0


def test_absolute_ttl_is_a_moment_not_a_duration() -> None:
    record = ttl_record(
        HandleValue(1, "URL", Data("string", "a"), ttl=300),
        HandleValue(2, "URL", Data("string", "b"), ttl=1100, ttl_absolute=True),
    )
    assert TtlPolicy().expiry(record, 1000.0) == 1100.0


def test_absolute_ttl_in_the_past_expires_at_once() -> None:
    record = ttl_record(HandleValue(1, "URL", Data("string", "a"), ttl=10, ttl_absolute=True))
    assert TtlPolicy().expiry(record, 1000.0) <= 1000.0


def test_negative_ttl_applies_to_misses() -> None:
    assert TtlPolicy(negative_ttl=7.0).expiry(None, 1000.0) == 1007.0


def test_max_ttl_caps_long_value_ttls() -> None:
    record = ttl_record(HandleValue(1, "URL", Data("string", "a"), ttl=86400))
    assert TtlPolicy(max_ttl=30.0).expiry(record, 1000.0) == 1030.0


def test_record_without_values_lives_max_ttl() -> None:
    assert TtlPolicy(max_ttl=30.0).expiry(ttl_record(), 1000.0) == 1030.0


# --- StaleLayer ----------------------------------------------------------------------------


async def test_stale_layer_serves_the_last_good_answer_while_upstream_is_down() -> None:
    clock = Clock()
    layer = StaleLayer(stale_for=100, retry_after=2, clock=clock)
    down = False

    async def upstream(key: str, fresh: bool) -> Answer:
        if down:
            raise UpstreamUnavailable("no server answered", handle=key)
        return Answer(key, Outcome.FOUND, rich_record(), clock() + 10, "walk")

    resolve = build([layer], upstream)
    good = await resolve("88/A", False)
    down = True
    clock.now += 50
    stale = await resolve("88/A", False)
    assert (stale.outcome, stale.record) == (good.outcome, good.record)
    assert stale.source == "stale (walk)"
    assert stale.expires == clock.now + 2
    clock.now += 60  # past the last answer's expiry plus stale_for
    with pytest.raises(UpstreamUnavailable):
        await resolve("88/A", False)
