"""Resolution as a chain of small layers, each wrapping the next (as CoreDNS plugins do).

A layer is an object with ``async resolve(key, fresh, next)``; :func:`build` folds a literal
list of layers, outermost first, into one ``Resolve`` callable.  ``fresh`` (the REST
``auth=true``) asks every cache to step aside and the authoritative source to answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import orjson

from resolver.answers import Answer, Outcome, TtlPolicy
from resolver.cache import MemoryCache
from resolver.codecs.stored import decode_record, stored_form
from resolver.homes import Homes
from resolver.identifiers import PREFIX_HANDLE_PREFIX, parent_prefixes
from resolver.ports import Generations, RecordStore, SharedCache
from resolver.prefix_records import PrefixRecords
from resolver.sites import DERIVED_SITE_TYPES
from resolver.values import HS_SITE, Record

Resolve = Callable[[str, bool], Awaitable[Answer]]


class Layer(Protocol):
    async def resolve(self, key: str, fresh: bool, next: Resolve) -> Answer: ...


class Terminal(Protocol):
    async def __call__(self, key: str, fresh: bool) -> Answer: ...


def build(layers: Sequence[Layer], terminal: Resolve) -> Resolve:
    """Compose ``layers`` (outermost first) around ``terminal``."""
    resolve = terminal
    for layer in reversed(layers):
        resolve = _bind(layer, resolve)
    return resolve


def _bind(layer: Layer, next_: Resolve) -> Resolve:
    async def resolve(key: str, fresh: bool) -> Answer:
        return await layer.resolve(key, fresh, next_)

    return resolve


def reused_source(source: str, layer: str) -> str:
    """The source of an answer from ``source`` served again from the cache ``layer``: the
    layer's name, marked ``stale`` if the answer was stale (a recursive node keeps serving a
    stale answer from memory for a while; clients must still be able to tell)."""
    return f"stale ({layer})" if source.startswith("stale") else layer


class MemoryLayer:
    """First level: answers from process memory (see :class:`resolver.cache.MemoryCache`)."""

    def __init__(self, cache: MemoryCache, generations: Generations) -> None:
        self.cache = cache
        self._generations = generations
        self.hits = 0
        """Answers from memory (the doors' own fast paths count theirs themselves)."""
        self.misses = 0

    async def resolve(self, key: str, fresh: bool, next: Resolve) -> Answer:
        if not fresh:
            cached = self.cache.get(key)
            if cached is not None:
                self.hits += 1
                return cached.with_source(reused_source(cached.source, "memory"))
            self.misses += 1
        generation = self._generations.current(key)  # before the read: see Generations
        answer = await next(key, fresh)
        self.cache.put(answer, generation)
        return answer


class CoalesceLayer:
    """Concurrent misses for the same key share one walk down the chain."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Answer]] = {}
        self.walks = 0
        """How many walks went past this layer: what coalescing saves is visible here."""

    async def resolve(self, key: str, fresh: bool, next: Resolve) -> Answer:
        if fresh:
            return await next(key, fresh)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        self.walks += 1
        try:
            answer = await next(key, fresh)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(answer)
            return answer
        finally:
            del self._inflight[key]


class SharedLayer:
    """Second level: answers shared by the workers of a node through a :class:`SharedCache`."""

    def __init__(
        self, shared: SharedCache, generations: Generations, clock: Callable[[], float] = time.time
    ) -> None:
        self._shared = shared
        self._generations = generations
        self._clock = clock
        self.hits = 0
        self.misses = 0

    async def resolve(self, key: str, fresh: bool, next: Resolve) -> Answer:
        generation = self._generations.current(key)
        if not fresh:
            blob = await self._shared.get(key)
            if blob is not None:
                answer = _load(key, blob, generation, self._clock())
                if answer is not None:
                    self.hits += 1
                    return answer
            self.misses += 1
        answer = await next(key, fresh)
        ttl = answer.expires - self._clock()
        if ttl > 0:
            await self._shared.set(key, _dump(answer, generation), ttl)
        return answer


def _dump(answer: Answer, generation: int) -> bytes:
    record = answer.record
    head = [generation, answer.expires, int(answer.outcome)]
    if record is None:
        return orjson.dumps(head)
    return orjson.dumps([*head, record.handle, record.version]) + b"\n" + stored_form(record)


def _load(key: str, blob: bytes, generation: int, now: float) -> Answer | None:
    """The cached answer, or None if it is stale, expired or unreadable."""
    head_raw, _, values = blob.partition(b"\n")
    try:
        head = orjson.loads(head_raw)
        if head[0] != generation or head[1] <= now:
            return None
        outcome = Outcome(head[2])
        record = decode_record(head[3], values, head[4]) if values else None
    except (ValueError, IndexError, TypeError, KeyError, AttributeError):
        return None
    return Answer(key, outcome, record, head[1], "redis")


class StoreLookup:
    """The end of an authoritative chain: the registry itself, and the delegations it records.

    A handle the store lacks is answered, in this order: a referral when a prefix record held
    here delegates it (``HS_SITE`` of ``0.NA/P`` for handles under ``P``: 302; ``HS_SITE.PREFIX``
    of ``0.NA/Q`` for prefixes derived from ``Q``: 303); not-found when it lives here; else
    not-homed.  The search goes from the most specific prefix up and stops at the first prefix
    homed here, below which this node is authoritative.

    With ``prefixes`` (the node's prefix records in memory), a question about a prefix record
    is answered without a read while that copy is current, unless ``fresh``.
    """

    def __init__(
        self,
        store: RecordStore,
        homes: Homes,
        policy: TtlPolicy,
        clock: Callable[[], float] = time.time,
        prefixes: PrefixRecords | None = None,
    ) -> None:
        self._store = store
        self._homes = homes
        self._policy = policy
        self._clock = clock
        self._prefixes = prefixes

    async def __call__(self, key: str, fresh: bool) -> Answer:
        holders = await self._holders(key)
        found = None
        if self._prefixes is not None and not fresh:  # auth=true bypasses every cache
            found = self._prefixes.get_many([key, *(holder for holder, _ in holders)])
        if found is not None:
            record = found.get(key)
        elif holders:
            # One read for the handle and the prefix records that may delegate it.
            found = await self._store.get_many([key, *(holder for holder, _ in holders)])
            record = found.get(key)
        else:
            found, record = {}, await self._store.get(key)
        now = self._clock()
        if record is not None:
            return Answer(key, Outcome.FOUND, record, self._policy.expiry(record, now), "store")
        for holder_key, exact in holders:
            holder = found.get(holder_key)
            if holder is None:
                continue
            wanted = (HS_SITE,) if exact else DERIVED_SITE_TYPES
            values = tuple(v for v in holder.values if v.type.upper() in wanted)
            if values:
                outcome = Outcome.SERVICE_REFERRAL if exact else Outcome.PREFIX_REFERRAL
                site = Record(holder.handle, values, holder.version)
                return Answer(key, outcome, site, self._policy.expiry(site, now), "store")
        outcome = Outcome.NOT_FOUND if await self._homes.serves(key) else Outcome.NOT_HOMED
        return Answer(key, outcome, None, self._policy.expiry(None, now), "store")

    async def _holders(self, key: str) -> list[tuple[str, bool]]:
        """The prefix records that may delegate ``key``, most specific first, each with whether
        it names ``key``'s own prefix (its ``HS_SITE`` then serves ``key``) or an ancestor (its
        ``HS_SITE.PREFIX`` administers derived prefixes); none below a prefix homed here."""
        prefix, _, suffix = key.partition("/")
        is_prefix_record = prefix == PREFIX_HANDLE_PREFIX
        target = suffix if is_prefix_record else prefix
        homed = await self._homes.keys()
        if target in homed and not is_prefix_record:
            return []  # a handle under a prefix homed here: the lookup path of most requests
        holders = []
        for candidate in parent_prefixes(target):
            if candidate in homed:
                break
            exact = candidate == target
            if not (exact and is_prefix_record):  # the record itself is what was asked for
                holders.append((f"{PREFIX_HANDLE_PREFIX}/{candidate}", exact))
        return holders
