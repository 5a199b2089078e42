"""The small protocols through which the pure core reaches I/O.

Every port has an in-memory twin (``resolver.memory``) and real adapters in ``registry`` and
``nodes``; one contract test suite runs against all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from resolver.search import Hit, Query
from resolver.values import Record


class RecordStore(Protocol):
    """Handle records keyed by folded key (see :func:`resolver.identifiers.fold`).

    Writes are compare-and-set on ``Record.version`` so that concurrent writers never lose each
    other's updates: ``put`` with ``expected=None`` creates and fails if the key exists; with an
    integer it replaces only the version it read.  Successful writes bump the version by one.
    """

    async def get(self, key: str) -> Record | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]: ...

    async def put(self, key: str, record: Record, expected: int | None) -> bool:
        """Write ``record`` (its version is ignored); False if ``expected`` did not hold."""

    async def put_many(self, items: Sequence[tuple[str, Record, int | None]]) -> list[bool]:
        """Like :meth:`put` for each item, in one transaction; conflicting items are skipped."""

    async def delete(self, key: str, expected: int) -> bool: ...

    async def list_handles(self, prefix_key: str, offset: int, limit: int) -> tuple[int, list[str]]:
        """Count and one page (by key order) of the display texts of handles under a prefix."""

    async def records_under(
        self, prefix_key: str, limit: int, after: str = ""
    ) -> dict[str, Record]:
        """The records of handles under a prefix with keys after ``after``, in key order; at
        most ``limit`` of them (a page: the next one starts after its last key)."""

    async def search(self, query: Query) -> list[Hit]:
        """The handles whose search entries (``Record.entries``, kept in each write's
        transaction) match ``query``: a page of ``query.limit`` in its keyset order after
        ``query.after``, plus one more hit if another page follows."""

    async def homed_prefixes(self) -> list[str]: ...

    async def home_prefix(self, prefix: str) -> bool:
        """Home ``prefix`` here; False if it already was."""

    async def unhome_prefix(self, prefix: str) -> bool: ...

    async def close(self) -> None: ...


class SharedCache(Protocol):
    """A second-level cache shared by the workers of a node (Redis).

    Failures must never surface: an adapter that cannot reach its backend answers ``None`` and
    drops writes, so a broken cache only means less cache.
    """

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, blob: bytes, ttl: float) -> None: ...

    async def delete(self, keys: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


class Generations(Protocol):
    """Write generations shared by every worker of a node, for read-after-write freshness.

    Readers note ``current(key)`` *before* reading the store and keep it with what they cache;
    writers ``bump`` after committing and before acknowledging.  A cached answer whose noted
    generation differs from the current one is stale.
    """

    def current(self, key: str) -> int: ...

    def bump(self, keys: Iterable[str]) -> None: ...

    def bump_all(self) -> None: ...
