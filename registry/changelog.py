"""The registry's change log: the key of every committed write, in commit order.

Every write to the registry (a handle put or deleted, a prefix record, a prefix homed or
unhomed, an enterprise application decided) appends ``(seq, key)`` to the log in the transaction
that makes it, so a key is logged iff its write committed, and seqs increase in commit order
(a reader never sees seq N+1 committed before seq N; seqs need not be consecutive).  The log
lives in the registry's database, so on the national tier it streams with everything else to
every standby: whatever host reads it from its local database learns what changed there.

Two readers follow it:

- every idis process (:mod:`nodes.changefeed`) polls it and lets its memory cache and the
  site's Redis go for the keys that changed: a write at any host is visible on every host
  within a poll interval;
- the authenticated HTTP change feed (:mod:`nodes.http.feed_api`) serves it, with the records
  as they are now, to a consumer across an operator boundary (:mod:`nodes.mirror`).

The log is pruned by age (:meth:`ChangeLog.prune_changes`); the *horizon* is the last seq
pruned.  A reader whose cursor is below the horizon has missed changes: a process then drops its
whole cache, a feed consumer re-synchronises from a snapshot.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Protocol

from registry import invalidation
from resolver.homes import HOMES_KEY

MAX_BATCH = 1000
"""The most changes one read of the log returns."""

APPLICATIONS_KEY = "/applications"
"""The key logged when an enterprise prefix application is filed or decided."""

ALL_KEY = invalidation.ALL_KEY
"""The key logged by a bulk load (``idis import``), which bypasses the write path: every cached
answer must go, and a mirror must re-synchronise."""

META_KEYS = (HOMES_KEY, APPLICATIONS_KEY, ALL_KEY)
"""Logged keys that name no handle (they start with "/", as no handle key does)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One logged write: its place in the log, the key it changed, and the host that wrote it
    (:attr:`nodes.generation_board.GenerationBoard.identity`; None if unknown), whose caches
    were invalidated before the write was acknowledged."""

    seq: int
    key: str
    origin: int | None = None


class ChangeLog(Protocol):
    """The change log side of a record store (:class:`registry.stores.sql.SqlStore`)."""

    async def changes_after(self, seq: int, limit: int = MAX_BATCH) -> list[Change]:
        """Up to ``limit`` changes with seq > ``seq``, in seq order (from the local database,
        which may be a standby)."""

    async def change_head(self) -> int:
        """The newest seq ever logged (the horizon if everything was pruned; 0 if none)."""

    async def change_horizon(self) -> int:
        """Every change with seq <= this was pruned (0: nothing was)."""

    async def prune_changes(self, older_than: float, limit: int) -> int:
        """Prune at most ``limit`` of the oldest changes, those logged more than
        ``older_than`` seconds ago, from the start of the log; the number pruned."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One change as the HTTP feed serves it: the key's state *now*, not at the change.

    For a handle, ``data`` is the stored form of its values (:mod:`resolver.codecs.stored`)
    and ``version`` its version, or ``data=None`` if it no longer exists.  For
    :data:`resolver.homes.HOMES_KEY`, ``homes`` lists the prefixes homed now.  Other meta keys
    carry nothing.  Applying entries in seq order, each the state at the time it was read,
    leaves a consumer with the producer's state as of the last one.
    """

    seq: int
    key: str
    handle: str | None = None
    data: bytes | None = None
    version: int = 0
    homes: tuple[str, ...] | None = None

    @property
    def is_handle(self) -> bool:
        return not self.key.startswith("/")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "key": self.key}
        if self.is_handle:
            out["handle"] = self.handle
            out["data"] = None if self.data is None else base64.b64encode(self.data).decode()
            out["version"] = self.version
        if self.homes is not None:
            out["homes"] = list(self.homes)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> FeedEntry:
        """Parse :meth:`to_json`'s output; ValueError if anything is missing or mistyped."""
        if not isinstance(obj, dict):
            raise ValueError(f"malformed feed entry {obj!r}")
        seq, key = obj.get("seq"), obj.get("key")
        if type(seq) is not int or not isinstance(key, str):
            raise ValueError(f"malformed feed entry {obj!r}")
        homes = obj.get("homes")
        if homes is not None and not (
            isinstance(homes, list) and all(isinstance(p, str) for p in homes)
        ):
            raise ValueError(f"feed entry {seq}: homes is not a list of prefixes")
        entry = cls(seq, key, homes=None if homes is None else tuple(homes))
        if not entry.is_handle:
            return entry
        handle, data, version = obj.get("handle"), obj.get("data"), obj.get("version")
        if not isinstance(handle, str) or type(version) is not int:
            raise ValueError(f"malformed feed entry {obj!r}")
        if not (data is None or isinstance(data, str)):
            raise ValueError(f"feed entry {seq}: data is not base64")
        try:
            raw = None if data is None else base64.b64decode(data, validate=True)
        except binascii.Error:
            raise ValueError(f"feed entry {seq}: data is not base64") from None
        return cls(seq, key, handle, raw, version)
