"""The first-level cache: answers held in process memory, checked against write generations."""

from __future__ import annotations

import time
from collections.abc import Callable

from resolver.answers import Answer
from resolver.ports import Generations
from resolver.render import public_resolution


class Entry:
    """A cached answer, with its anonymous unfiltered rendering made once on first use."""

    __slots__ = ("_public_body", "answer", "generation")

    def __init__(self, answer: Answer, generation: int) -> None:
        self.answer = answer
        self.generation = generation
        self._public_body: bytes | None = None

    @property
    def public_body(self) -> bytes:
        """The response body for an anonymous query without filters (only for FOUND answers)."""
        if self._public_body is None:
            assert self.answer.record is not None
            self._public_body = public_resolution(self.answer.record)
        return self._public_body


class MemoryCache:
    """Bounded map from handle key to :class:`Entry`.

    An entry is served only while its answer has not expired and its generation is still the
    key's current one, so a write on any worker makes the next read miss.  When full, the oldest
    insertion is evicted: cheaper than LRU bookkeeping on every hit, and nearly as good for
    the skewed popularity of identifier lookups.
    """

    def __init__(
        self,
        generations: Generations,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries: dict[str, Entry] = {}
        self._generations = generations
        self._max = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.answer.expires <= self._clock() or entry.generation != self._generations.current(
            key
        ):
            del self._entries[key]
            return None
        return entry

    def put(self, answer: Answer, generation: int) -> Entry:
        entries = self._entries
        if answer.key not in entries and len(entries) >= self._max:
            del entries[next(iter(entries))]
        entry = Entry(answer, generation)
        entries[answer.key] = entry
        return entry

    def clear(self) -> None:
        self._entries.clear()
