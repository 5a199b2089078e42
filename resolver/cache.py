"""The first-level cache: answers held in process memory, checked against write generations.

Answers held for long are plain tuples of text, numbers and bytes (:data:`Kept`), the record's
values in their stored form, decoded anew on each use.  Python's cycle collector stops tracking
such a tuple the first time it examines it, so however many answers are kept, full collections
do not visit them: over 200k cached answers a full pass takes ~3 ms.  Decoded, an answer is a
dozen tracked objects or more (the answer, its record, the tuple of values, each value and its
data...), and full passes over such a cache stalled a worker for a second; even one object of
a class per entry took ~85 ms a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from resolver.answers import Answer, Outcome
from resolver.codecs.stored import decode_record, stored_form
from resolver.ports import Generations
from resolver.render import public_resolution

Kept = tuple[float, int, str, str | None, int, bytes | None]
"""An answer kept in memory: ``(expires, outcome, source, handle, version, stored)``, the
outcome as its code, and the text, version and values' stored form of the answer's record (for
a referral, the prefix record that refers), or ``None, 0, None`` if it has none."""


def keep(answer: Answer) -> Kept:
    """``answer`` as it is kept in memory; the record's stored form passes through as read."""
    record = answer.record
    if record is None:
        return (answer.expires, answer.outcome.value, answer.source, None, 0, None)
    return (
        answer.expires,
        answer.outcome.value,
        answer.source,
        record.handle,
        record.version,
        stored_form(record),
    )


def restore(key: str, kept: Kept) -> Answer:
    """The answer for ``key`` that :func:`keep` kept, its record decoded anew."""
    expires, outcome, source, handle, version, stored = kept
    record = None if stored is None or handle is None else decode_record(handle, stored, version)
    return Answer(key, Outcome(outcome), record, expires, source)


_Entry = tuple[float, int, str, str | None, int, bytes | None, int, bytes | None]
"""A cache entry: a :data:`Kept` answer, then the key's generation when it was read and the body
answering anonymous unfiltered queries (rendered on first use).  Flat: a tuple holding a tuple
is untracked only once the inner one is, which may take the collector a second pass."""


class MemoryCache:
    """Bounded map from handle key to answer.

    An answer is served only while it has not expired and its generation is still the key's
    current one, so a write on any worker makes the next read miss.  When full, the oldest
    insertion is evicted: cheaper than LRU bookkeeping on every hit, and nearly as good for
    the skewed popularity of identifier lookups.
    """

    def __init__(
        self,
        generations: Generations,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._generations = generations
        self._max = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Answer | None:
        """The answer cached for ``key``, decoded anew, with the source it had."""
        entry = self._fresh(key)
        return None if entry is None else restore(key, entry[:6])

    def public_body(self, key: str, handle: str) -> tuple[bytes, str, int, float] | None:
        """For a cached FOUND answer whose record's text is exactly ``handle``: the body
        answering an anonymous query without filters, the answer's source, and what the answer
        is valid under: the key's generation it was read at, and when it expires.  The body is
        rendered on the first call and kept."""
        entry = self._fresh(key)
        if entry is None:
            return None
        expires, outcome, source, text, _, _, generation, body = entry
        if outcome != Outcome.FOUND or text != handle:
            return None
        if body is None:
            record = restore(key, entry[:6]).record
            assert record is not None
            body = public_resolution(record)
            self._entries[key] = (*entry[:6], generation, body)
        return body, source, generation, expires

    def put(self, answer: Answer, generation: int) -> None:
        """Cache ``answer``, read when the generation of its key was ``generation``."""
        entries = self._entries
        if answer.key not in entries and len(entries) >= self._max:
            del entries[next(iter(entries))]
        entries[answer.key] = (*keep(answer), generation, None)

    def clear(self) -> None:
        self._entries.clear()

    def _fresh(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, _, _, _, _, _, generation, _ = entry
        if expires <= self._clock() or generation != self._generations.current(key):
            del self._entries[key]
            return None
        return entry
