"""In-memory twins of the ports: the embedded test doubles and single-process defaults."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace

from resolver.identifiers import fold
from resolver.search import Entry, Hit, Query, order_key, position
from resolver.templates import Claim, UniqueValueTaken, unique_clashes
from resolver.values import Record


class MemoryStore:
    """A :class:`resolver.ports.RecordStore` in a dict."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._prefixes: dict[str, str] = {}
        self._claims: dict[Claim, str] = {}
        """Unique template values taken, and by which key (see ``Record.claims``)."""
        self._entries: dict[str, tuple[Entry, ...]] = {}
        """The search entries of each key (see ``Record.entries``)."""

    async def get(self, key: str) -> Record | None:
        return self._records.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        return {k: self._records[k] for k in keys if k in self._records}

    async def put(self, key: str, record: Record, expected: int | None) -> bool:
        self._check_claims([(key, record)])
        return self._put(key, record, expected)

    async def put_many(self, items: Sequence[tuple[str, Record, int | None]]) -> list[bool]:
        # All claims first: a batch with a taken value writes nothing.  Then item by item
        # through put, which subclasses extend (registry.replication.MemoryJournalStore).
        self._check_claims([(key, record) for key, record, _ in items])
        return [await self.put(key, record, expected) for key, record, expected in items]

    def _check_claims(self, writes: Sequence[tuple[str, Record]]) -> None:
        claiming = [(key, r.claims) for key, r in writes if r.claims is not None]
        if claiming:
            rewritten = {key for key, _ in claiming}
            held = {c: k for c, k in self._claims.items() if k not in rewritten}
            clashes = unique_clashes(held, claiming)
            if clashes:
                raise UniqueValueTaken(clashes)

    def _put(self, key: str, record: Record, expected: int | None) -> bool:
        current = self._records.get(key)
        if (current.version if current else None) != expected:
            return False
        self._records[key] = replace(record, version=(expected or 0) + 1)
        if record.claims is not None:
            self._release(key)
            self._claims.update(dict.fromkeys(record.claims, key))
        if record.entries is not None:
            self._entries[key] = record.entries
        return True

    def _release(self, key: str) -> None:
        for claim in [c for c, k in self._claims.items() if k == key]:
            del self._claims[claim]

    async def delete(self, key: str, expected: int) -> bool:
        current = self._records.get(key)
        if current is None or current.version != expected:
            return False
        del self._records[key]
        self._release(key)
        self._entries.pop(key, None)
        return True

    async def search(self, query: Query) -> list[Hit]:
        found = []
        for key, entries in self._entries.items():
            for entry in entries:
                place = position(query, key, entry)
                if place is not None:
                    hit = Hit(self._records[key].handle, place, entry.public)
                    found.append((order_key(query, place), hit))
        found.sort(key=lambda item: item[0])
        after = order_key(query, query.after) if query.after is not None else None
        return [hit for ordered, hit in found if after is None or ordered > after][
            : query.limit + 1
        ]

    async def list_handles(self, prefix_key: str, offset: int, limit: int) -> tuple[int, list[str]]:
        start = prefix_key + "/"
        keys = sorted(k for k in self._records if k.startswith(start))
        return len(keys), [self._records[k].handle for k in keys[offset : offset + limit]]

    async def records_under(
        self, prefix_key: str, limit: int, after: str = ""
    ) -> dict[str, Record]:
        start = prefix_key + "/"
        keys = sorted(k for k in self._records if k.startswith(start) and k > after)[:limit]
        return {k: self._records[k] for k in keys}

    async def homed_prefixes(self) -> list[str]:
        return sorted(self._prefixes.values())

    async def home_prefix(self, prefix: str) -> bool:
        key = fold(prefix)
        if key in self._prefixes:
            return False
        self._prefixes[key] = prefix
        return True

    async def unhome_prefix(self, prefix: str) -> bool:
        return self._prefixes.pop(fold(prefix), None) is not None

    async def close(self) -> None:
        return None


class MemorySharedCache:
    """A :class:`resolver.ports.SharedCache` in a dict, honouring TTLs."""

    def __init__(self) -> None:
        self._clock = time.monotonic
        self._items: dict[str, tuple[float, bytes]] = {}

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None or item[0] <= self._clock():
            return None
        return item[1]

    async def set(self, key: str, blob: bytes, ttl: float) -> None:
        self._items[key] = (self._clock() + ttl, blob)

    async def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._items.pop(key, None)

    async def close(self) -> None:
        return None


class LocalGenerations:
    """:class:`resolver.ports.Generations` for a single process.

    Keys hash onto a fixed number of slots, so memory stays bounded however many handles are
    written; two keys sharing a slot only cost each other a cache miss.
    """

    def __init__(self, slots: int = 1 << 16) -> None:
        self._mask = slots - 1
        self._slots = [0] * slots

    def current(self, key: str) -> int:
        return self._slots[hash(key) & self._mask]

    def bump(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._slots[hash(key) & self._mask] += 1

    def bump_all(self) -> None:
        self._slots = [n + 1 for n in self._slots]
