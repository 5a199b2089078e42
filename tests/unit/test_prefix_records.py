"""A node's prefix records in memory: loaded whole, trusted while current, and what the store
lookup answers from them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from resolver.answers import Outcome, TtlPolicy
from resolver.chain import StoreLookup
from resolver.homes import Homes
from resolver.memory import LocalGenerations, MemoryStore
from resolver.prefix_records import PAGE, SENTINEL, PrefixRecords
from resolver.sites import HS_SITE_PREFIX, site_data
from resolver.values import Data, HandleValue, Record

SECONDARY = "http://secondary:8000"


class CountingStore(MemoryStore):
    """Counts the reads a lookup makes and the loads (first pages) and pages of bulk reads;
    ``failing`` makes the bulk read fail, and it waits for ``gate`` when set."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.loads = 0
        self.failing = False
        self.gate: asyncio.Event | None = None
        self.pages = 0
        self.now = 100.0
        """The clock of the copies made by :func:`copy_of`: each page read takes
        ``page_seconds``."""
        self.page_seconds = 0.0

    async def get(self, key: str) -> Record | None:
        self.reads += 1
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        self.reads += 1
        return await super().get_many(keys)

    async def records_under(
        self, prefix_key: str, limit: int, after: str = ""
    ) -> dict[str, Record]:
        self.pages += 1
        self.loads += not after
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise OSError("database down")
        self.now += self.page_seconds
        return await super().records_under(prefix_key, limit, after)


def delegation(prefix: str) -> Record:
    site = Data("site", site_data([SECONDARY]))
    return Record(f"0.NA/{prefix}", (HandleValue(2, HS_SITE_PREFIX, site),))


async def registry(*prefixes: str) -> tuple[CountingStore, LocalGenerations]:
    """A top level homing 88 that delegated ``prefixes``."""
    store = CountingStore()
    await store.home_prefix("88")
    for prefix in prefixes:
        assert await store.put(f"0.NA/{prefix}", delegation(prefix), None)
    return store, LocalGenerations()


def copy_of(store: CountingStore, generations: LocalGenerations, limit: int) -> PrefixRecords:
    return PrefixRecords(store, generations, limit, clock=lambda: store.now)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_copy_loads_on_first_use_and_then_answers_alone() -> None:
    store, generations = await registry("88.100", "88.101")
    copy = copy_of(store, generations, limit=10)

    assert copy.get_many(["0.NA/88.100"]) is None  # not loaded yet: the store answers
    await settle()

    found = copy.get_many(["0.NA/88.100.7", "0.NA/88.100", "0.NA/88.999"])
    assert found is not None and list(found) == ["0.NA/88.100"]
    assert found["0.NA/88.100"].values == delegation("88.100").values
    assert store.loads == 1


async def test_a_bumped_sentinel_makes_the_copy_reload_before_it_answers_again() -> None:
    store, generations = await registry("88.100")
    copy = copy_of(store, generations, limit=10)
    copy.get_many(["0.NA/88.100"])
    await settle()
    assert await store.put("0.NA/88.102", delegation("88.102"), None)

    generations.bump_all()  # what writing a prefix record does (registry.invalidation)

    assert copy.get_many(["0.NA/88.102"]) is None
    await settle()
    found = copy.get_many(["0.NA/88.102"])
    assert found is not None and "0.NA/88.102" in found
    assert store.loads == 2


async def test_a_write_during_the_load_is_not_missed() -> None:
    store, generations = await registry("88.100")
    copy = copy_of(store, generations, limit=10)
    store.gate = asyncio.Event()
    copy.get_many(["0.NA/88.100"])
    await settle()  # the load noted the sentinel's generation and is reading
    generations.bump([SENTINEL])  # a write commits and bumps before the load ends
    store.gate.set()
    await settle()

    assert copy.get_many(["0.NA/88.100"]) is None
    await settle()
    assert store.loads == 2
    assert copy.get_many(["0.NA/88.100"]) is not None


async def test_too_many_prefix_records_are_left_to_the_store() -> None:
    store, generations = await registry("88.100", "88.101", "88.102")
    copy = copy_of(store, generations, limit=2)
    copy.get_many(["0.NA/88.100"])
    await settle()

    assert copy.get_many(["0.NA/88.100"]) is None
    assert copy.get_many(["0.NA/88.101"]) is None
    assert store.loads == 1, "not read again until a prefix record is written"


async def test_only_prefix_records_are_answered() -> None:
    store, generations = await registry("88.100")
    copy = copy_of(store, generations, limit=10)
    copy.get_many(["0.NA/88.100"])
    await settle()

    assert copy.get_many(["88.100.1/A", "0.NA/88.100"]) is None


async def test_a_failed_load_is_retried_after_a_while() -> None:
    store, generations = await registry("88.100")
    copy = PrefixRecords(store, generations, 10, clock=lambda: store.now, retry_after=1.0)
    store.failing = True
    copy.get_many(["0.NA/88.100"])
    await settle()
    store.failing = False

    assert copy.get_many(["0.NA/88.100"]) is None
    await settle()
    assert store.loads == 1, "not before retry_after"
    store.now += 1.0
    copy.get_many(["0.NA/88.100"])
    await settle()
    assert copy.get_many(["0.NA/88.100"]) is not None


async def test_the_store_lookup_refers_from_the_copy_without_a_read() -> None:
    store, generations = await registry("88.100")
    homes = Homes(store, generations)
    copy = copy_of(store, generations, limit=10)
    lookup = StoreLookup(store, homes, TtlPolicy(), prefixes=copy)
    await lookup("0.NA/88.100.1", False)  # starts the load
    await settle()
    store.reads = 0

    referral = await lookup("0.NA/88.100.7", False)
    own = await lookup("0.NA/88.100", False)
    unknown = await lookup("0.NA/88.999", False)

    assert referral.outcome is Outcome.PREFIX_REFERRAL
    assert referral.record is not None and referral.record.handle == "0.NA/88.100"
    assert own.outcome is Outcome.FOUND
    assert unknown.outcome is Outcome.NOT_FOUND
    assert store.reads == 0
    # A handle that is not a prefix record is read from the store, and so is everything asked
    # with auth=true.
    await lookup("88/ADMIN", False)
    assert store.reads == 1
    assert (await lookup("0.NA/88.100.7", True)).outcome is Outcome.PREFIX_REFERRAL
    assert store.reads == 2


async def test_a_large_registry_loads_by_pages_and_reloads_no_sooner_than_ten_loads_later() -> None:
    store, generations = await registry(*(f"88.{n}" for n in range(100, 100 + PAGE + 5)))
    store.page_seconds = 0.5
    copy = copy_of(store, generations, limit=PAGE * 2)
    copy.get_many(["0.NA/88.100"])
    await settle()
    found = copy.get_many(["0.NA/88.100", f"0.NA/88.{100 + PAGE + 4}"])
    assert found is not None and len(found) == 2
    assert store.pages == 2  # the load took 1 s

    generations.bump_all()
    copy.get_many(["0.NA/88.100"])
    await settle()
    assert store.loads == 1, "a new load waits 10 times the last one's duration"
    store.now += 10.0
    copy.get_many(["0.NA/88.100"])
    await settle()
    assert store.loads == 2
    assert copy.get_many(["0.NA/88.100"]) is not None
