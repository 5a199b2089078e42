"""The first-level cache: answers held in process memory, checked against write generations."""

from __future__ import annotations

import time
from collections.abc import Callable

from resolver.answers import Answer, Outcome
from resolver.codecs.stored import decode_record, stored_form
from resolver.ports import Generations
from resolver.render import public_resolution
from resolver.values import Record


class Entry:
    """An answer kept in memory as one object holding only text, numbers and bytes.

    A decoded record is a dozen objects or more (the record, its tuple, each value and its
    data...), all of which Python's cycle collector visits on every full pass: over a large
    cache that stalled a worker for a second at a time.  An entry holds the record's values in
    their stored form instead, so a full pass visits one object per entry whatever the record;
    :meth:`answer` decodes them anew on each use, and nothing decoded is kept.  The rendering
    served to anonymous, unfiltered queries is made once, on first use.
    """

    __slots__ = (
        "_public_body",
        "expires",
        "generation",
        "handle",
        "key",
        "outcome",
        "source",
        "stored",
        "version",
    )

    def __init__(self, answer: Answer, generation: int = 0) -> None:
        """``generation`` is the key's write generation noted before the answer was read (see
        :class:`resolver.ports.Generations`), where that matters."""
        self.key = answer.key
        self.outcome = answer.outcome
        self.expires = answer.expires
        self.source = answer.source
        self.generation = generation
        record = answer.record
        self.handle: str | None = None if record is None else record.handle
        """The text of the answer's record (for a referral, the prefix record that refers)."""
        self.version = 0 if record is None else record.version
        self.stored = None if record is None else stored_form(record)
        self._public_body: bytes | None = None

    def record(self) -> Record | None:
        """The answer's record, decoded from the stored form."""
        if self.stored is None:
            return None
        assert self.handle is not None
        return decode_record(self.handle, self.stored, self.version)

    def answer(self, source: str | None = None) -> Answer:
        """The answer as cached, its record decoded anew; from ``source`` if given."""
        source = self.source if source is None else source
        return Answer(self.key, self.outcome, self.record(), self.expires, source)

    @property
    def public_body(self) -> bytes:
        """The response body for an anonymous query without filters (only for FOUND answers)."""
        if self._public_body is None:
            assert self.outcome is Outcome.FOUND
            record = self.record()
            assert record is not None
            self._public_body = public_resolution(record)
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
        if entry.expires <= self._clock() or entry.generation != self._generations.current(key):
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
