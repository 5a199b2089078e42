"""Replication between federation members: a journal of each member's own writes, applied at
its peers, as the Handle System's mirrors replicate a primary's transaction log.

Every top-level node is authoritative for the records it wrote (the prefixes it allocated) and
holds copies of its peers'.  A store that journals (``journal_as=NAME``) appends each local
write to its ``txlog`` in the transaction that makes it; peers read the log in ``seq`` order
(:meth:`Journal.txlog_after`) and apply it (:meth:`Journal.apply_replica`) together with their
cursor into it, so an apply is all-or-nothing and a restart resumes exactly where it stopped.

Conflicts.  In normal operation each key has one writer (its origin), and a write elsewhere is
refused (:func:`check_authoritative`).  Two members can still create the same key while they
cannot see each other (within the replication delay, or during a partition).  Every journaled
write therefore carries a *stamp*, a hybrid logical clock in microseconds that exceeds the
stamp of anything the writer held for that key, and every member keeps the stamp and origin of
the last write of each key, deletions included (``origins``).  A write supersedes what is held
iff ``(stamp, origin)`` is greater: last writer wins, ties broken by origin name.  Each
member's final state of a key is then the greatest write of it anywhere, whatever order the
logs arrive in, so members converge; applying an entry twice changes nothing.  The losing
write of a conflict is lost; :attr:`Applied.conflicts` reports the keys so that operators
hear of it.

Disaster-recovery replicas that follow a top-level node by PostgreSQL streaming replication
need nothing from here: ``txlog``, ``origins`` and ``replication_cursors`` are ordinary tables
and stream with the rest, so a promoted standby continues its primary's log and cursors under
the primary's name.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from resolver.codecs.stored import decode_values, encode_values
from resolver.errors import PrefixNotHomed
from resolver.identifiers import Handle
from resolver.memory import MemoryStore
from resolver.values import Record

MAX_BATCH = 1000
"""The most entries one read of the log returns."""


def now_us() -> int:
    """Wall-clock microseconds: the physical part of a stamp."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """One committed local write: the record as stored after it, or ``data=None`` if the write
    deleted the handle.  ``data`` is the stored form (:mod:`resolver.codecs.stored`)."""

    seq: int
    key: str
    handle: str
    data: bytes | None
    version: int
    stamp: int

    @property
    def deleted(self) -> bool:
        return self.data is None

    def to_json(self) -> dict[str, Any]:
        data = None if self.data is None else base64.b64encode(self.data).decode("ascii")
        return {
            "seq": self.seq,
            "key": self.key,
            "handle": self.handle,
            "data": data,
            "version": self.version,
            "stamp": self.stamp,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        """Parse :meth:`to_json`'s output; ValueError if anything is missing or mistyped."""
        try:
            seq, key, handle = obj["seq"], obj["key"], obj["handle"]
            version, stamp, data = obj["version"], obj["stamp"], obj["data"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed log entry: {error!r}") from None
        ints = (seq, version, stamp)
        if not all(type(n) is int for n in ints) or not isinstance(key, str):
            raise ValueError(f"malformed log entry {obj!r}")
        if not isinstance(handle, str) or not (data is None or isinstance(data, str)):
            raise ValueError(f"malformed log entry {obj!r}")
        try:
            raw = None if data is None else base64.b64decode(data, validate=True)
        except binascii.Error:
            raise ValueError(f"log entry {seq}: data is not base64") from None
        return cls(seq, key, handle, raw, version, stamp)


@dataclass(frozen=True, slots=True)
class Provenance:
    """The last write of a key held here: who made it, its stamp, and whether it deleted."""

    origin: str
    stamp: int
    deleted: bool


def supersedes(stamp: int, origin: str, held: Provenance | None) -> bool:
    """Whether a write stamped ``(stamp, origin)`` replaces what is held (last writer wins)."""
    return held is None or (stamp, origin) > (held.stamp, held.origin)


def next_stamp(held: Provenance | None, now: int) -> int:
    """The stamp of a new local write: the clock, but always past the write it replaces, so
    that a key re-created after a peer deleted it wins over the deletion everywhere."""
    return now if held is None else max(now, held.stamp + 1)


@dataclass(frozen=True, slots=True)
class Applied:
    """What one :meth:`Journal.apply_replica` did."""

    last: int
    """The peer's seq applied up to: the cursor to continue from."""
    keys: tuple[str, ...]
    """Keys whose record changed here (caches must let them go)."""
    applied: int
    """Entries that took effect (entries already seen or superseded do not)."""
    conflicts: tuple[str, ...]
    """Keys where the entry met a live record of another origin, whichever won."""


class Journal(Protocol):
    """A record store's replication side (:class:`registry.stores.sql.SqlStore`,
    :class:`MemoryJournalStore`).

    ``journal_as`` is the federation name this store journals its own writes under (None: it
    does not journal).  Such a store refuses (as a failed compare-and-set) any local write to a
    key whose live record came from another member.
    """

    @property
    def journal_as(self) -> str | None: ...

    async def txlog_after(self, seq: int, limit: int) -> list[Entry]:
        """Up to ``limit`` of this node's own journaled writes with seq > ``seq``, in seq order.

        Seqs increase in commit order (a reader never sees seq N+1 committed before seq N),
        but need not be consecutive.
        """

    async def txlog_head(self) -> int:
        """The newest seq in the log (0 if empty)."""

    async def apply_replica(self, peer: str, entries: Sequence[Entry]) -> Applied:
        """Apply ``peer``'s entries (from its log, in seq order) and advance its cursor to the
        last of them, in one transaction.  Entries at or below the cursor are ignored, so a
        retried call is harmless; applied entries are not journaled here.  ValueError if
        ``peer`` is this store's own name."""

    async def cursor(self, peer: str) -> int:
        """The last seq of ``peer``'s log applied here (0 if none)."""

    async def reset_cursor(self, peer: str, seq: int) -> None:
        """Set ``peer``'s cursor (to read its log again from ``seq`` after it was restored from
        a backup; re-applying entries is harmless)."""

    async def origin_of(self, key: str) -> str | None:
        """The member that wrote the live record of ``key`` (this store's own name for a local
        write); None if the key is absent, deleted, or was never journaled."""

    async def backfill_journal(self) -> int:
        """Journal every record that has no origin yet (written before journaling was on, or
        bulk-imported around the store), as a write of this node; the number journaled."""


async def check_authoritative(
    journal: Journal, handle: Handle, peers: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`PrefixNotHomed` (301) if ``handle``'s live record belongs to a peer.

    The error names the authoritative member, and its base URL when ``peers`` (name → URL)
    knows it, so that a client can send the write there.
    """
    origin = await journal.origin_of(handle.key)
    if origin is None or origin == journal.journal_as:
        return
    where = f" at {peers[origin]}" if peers and origin in peers else ""
    raise PrefixNotHomed(
        f"{handle.text} is administered by federation member {origin}{where}; write it there",
        handle=handle.text,
    )


def authority_check(
    journal: Journal, peers: Mapping[str, str] | None = None
) -> Callable[[Handle], Awaitable[None]]:
    """:func:`check_authoritative` bound to a store, as :class:`registry.service.Registrar`'s
    ``authority`` hook."""

    async def check(handle: Handle) -> None:
        await check_authoritative(journal, handle, peers)

    return check


class MemoryJournalStore(MemoryStore):
    """The in-memory twin of a journaling :class:`registry.stores.sql.SqlStore`."""

    def __init__(self, journal_as: str | None = None) -> None:
        super().__init__()
        self._journal_as = journal_as
        self._log: list[Entry] = []
        self._seq = 0
        self._origins: dict[str, Provenance] = {}
        self._cursors: dict[str, int] = {}

    @property
    def journal_as(self) -> str | None:
        return self._journal_as

    def _foreign(self, key: str) -> bool:
        held = self._origins.get(key)
        return held is not None and not held.deleted and held.origin != self._journal_as

    def _journal(self, key: str, handle: str, data: bytes | None, version: int) -> None:
        assert self._journal_as is not None
        stamp = next_stamp(self._origins.get(key), now_us())
        self._seq += 1
        self._log.append(Entry(self._seq, key, handle, data, version, stamp))
        self._origins[key] = Provenance(self._journal_as, stamp, data is None)

    async def put(self, key: str, record: Record, expected: int | None) -> bool:
        if self._journal_as is None:
            return await super().put(key, record, expected)
        if self._foreign(key) or not await super().put(key, record, expected):
            return False
        stored = self._records[key]
        self._journal(key, stored.handle, encode_values(stored.values), stored.version)
        return True

    async def delete(self, key: str, expected: int) -> bool:
        if self._journal_as is None:
            return await super().delete(key, expected)
        current = self._records.get(key)
        if self._foreign(key) or current is None or not await super().delete(key, expected):
            return False
        self._journal(key, current.handle, None, expected + 1)
        return True

    async def txlog_after(self, seq: int, limit: int) -> list[Entry]:
        return [e for e in self._log if e.seq > seq][:limit]

    async def txlog_head(self) -> int:
        return self._seq

    async def apply_replica(self, peer: str, entries: Sequence[Entry]) -> Applied:
        if peer == self._journal_as:
            raise ValueError(f"{peer!r} is this node's own name")
        cursor = self._cursors.get(peer, 0)
        fresh = sorted((e for e in entries if e.seq > cursor), key=lambda e: e.seq)
        changed: dict[str, None] = {}
        conflicts: dict[str, None] = {}
        applied = 0
        for entry in fresh:
            held = self._origins.get(entry.key)
            if held is not None and not held.deleted and held.origin != peer:
                conflicts[entry.key] = None
            if not supersedes(entry.stamp, peer, held):
                continue
            applied += 1
            changed[entry.key] = None
            self._origins[entry.key] = Provenance(peer, entry.stamp, entry.deleted)
            if entry.data is None:
                self._records.pop(entry.key, None)
            else:
                values = decode_values(entry.data)
                self._records[entry.key] = Record(entry.handle, values, entry.version)
        last = max(cursor, fresh[-1].seq) if fresh else cursor
        self._cursors[peer] = last
        return Applied(last, tuple(changed), applied, tuple(conflicts))

    async def cursor(self, peer: str) -> int:
        return self._cursors.get(peer, 0)

    async def reset_cursor(self, peer: str, seq: int) -> None:
        self._cursors[peer] = seq

    async def origin_of(self, key: str) -> str | None:
        held = self._origins.get(key)
        return None if held is None or held.deleted else held.origin

    async def backfill_journal(self) -> int:
        if self._journal_as is None:
            raise ValueError("this store does not journal")
        missing = [k for k in sorted(self._records) if k not in self._origins]
        for key in missing:
            stored = self._records[key]
            self._journal(key, stored.handle, encode_values(stored.values), stored.version)
        return len(missing)
