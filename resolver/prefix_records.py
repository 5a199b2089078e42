"""A node's prefix records in memory, so that answers about prefixes take no database read.

What a top-level node is asked is almost always a prefix record ``0.NA/P``: the record itself,
or the referral a record ``0.NA/Q`` of an ancestor states.  Those records are its prefix
registry: few beside the identifiers of the nation, rarely written, and asked about all the
time, so the node keeps a copy of all of them in memory, as DNS root and TLD servers serve their
zones from memory, and a question about a prefix nobody asked about before is answered without
a read.

Freshness comes from the write generations (:class:`resolver.ports.Generations`): a write of
any prefix record bumps every generation (:class:`registry.invalidation.Invalidator`, on every
worker, and on every other host through the registry's change log).  The copy is trusted while
the generation of :data:`SENTINEL` is the one noted before it was read; once it changed, lookups
go to the store again while a new copy loads in the background.  Writes of other handles rarely
share the sentinel's generation; when one does, it only costs a reload.  A node holding more
than ``limit`` prefix records keeps none and reads them from the store, as without this copy.

A load reads the records a page at a time, so that the node goes on serving between pages (from
the store), and a new load starts no sooner than :data:`RELOAD_SPACING` times the last load's
duration after it: a burst of prefix writes costs the store reads it would have cost without
the copy, not a copy's reading and decoding per write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from resolver.identifiers import PREFIX_HANDLE_PREFIX
from resolver.ports import Generations, RecordStore
from resolver.values import Record

SENTINEL = PREFIX_HANDLE_PREFIX
"""The key whose generation tells whether a prefix record may have been written."""

_UNDER = PREFIX_HANDLE_PREFIX + "/"
PAGE = 1000
"""Records read and decoded at a time while loading: a few tens of milliseconds."""
RELOAD_SPACING = 10.0
"""A load starts no sooner than this many times the previous one's duration after its end."""

log = logging.getLogger(__name__)


class PrefixRecords:
    """The prefix records of ``store``, from memory while the copy is current."""

    def __init__(
        self,
        store: RecordStore,
        generations: Generations,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
        retry_after: float = 1.0,
    ) -> None:
        self._store = store
        self._generations = generations
        self._limit = limit
        self._clock = clock
        self._retry_after = retry_after
        self._records: dict[str, Record] | None = None
        self._generation: int | None = None
        """The sentinel's generation that ``_records`` (or the lack of a copy) reflects."""
        self._loading: asyncio.Task[None] | None = None
        self._retry_at = 0.0

    def get_many(self, keys: Sequence[str]) -> dict[str, Record] | None:
        """The records among ``keys``, which must all be prefix records; None when the copy
        cannot say (not loaded, not current, too large, or a key is not a prefix record)."""
        generation = self._generations.current(SENTINEL)
        if generation != self._generation:
            self._load_soon()
            return None
        records = self._records
        if records is None or not all(key.startswith(_UNDER) for key in keys):
            return None
        return {key: records[key] for key in keys if key in records}

    async def load(self) -> None:
        """Read every prefix record, a page at a time; keep them if there are at most
        ``limit``."""
        started = self._clock()
        generation = self._generations.current(SENTINEL)  # noted before reading
        records: dict[str, Record] | None = {}
        after = ""
        while records is not None:
            page = await self._store.records_under(PREFIX_HANDLE_PREFIX, PAGE, after)
            records.update(page)
            if len(records) > self._limit:
                log.info("more than %d prefix records: they are read from the store", self._limit)
                records = None
            elif len(page) < PAGE:
                break
            else:
                after = next(reversed(page))
        self._records = records
        self._generation = generation
        ended = self._clock()
        self._retry_at = ended + RELOAD_SPACING * (ended - started)

    def _load_soon(self) -> None:
        if self._loading is not None or self._clock() < self._retry_at:
            return
        self._records = None
        self._loading = asyncio.ensure_future(self.load())
        self._loading.add_done_callback(self._loaded)

    def _loaded(self, task: asyncio.Task[None]) -> None:
        self._loading = None
        if not task.cancelled() and task.exception() is not None:
            # The store answers meanwhile; the next lookup after a while tries again.
            log.warning("loading the prefix records failed: %r", task.exception())
            self._retry_at = self._clock() + self._retry_after
