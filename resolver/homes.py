"""Which prefixes live on this node."""

from __future__ import annotations

from resolver.identifiers import PREFIX_HANDLE_PREFIX, fold, parent_prefixes
from resolver.ports import Generations, RecordStore

HOMES_KEY = "/homes"
"""The generation key bumped whenever a prefix is homed or unhomed, and the key the change log
records for it: no handle's key starts with "/" (a prefix is never empty)."""


class Homes:
    """The set of homed prefixes, reloaded from the store when another worker changes it."""

    def __init__(self, store: RecordStore, generations: Generations) -> None:
        self._store = store
        self._generations = generations
        self._keys: frozenset[str] = frozenset()
        self._generation: int | None = None

    async def keys(self) -> frozenset[str]:
        generation = self._generations.current(HOMES_KEY)
        if generation != self._generation:
            self._keys = frozenset(fold(p) for p in await self._store.homed_prefixes())
            self._generation = generation
        return self._keys

    async def serves(self, handle_key: str) -> bool:
        """True if the handle with this folded key lives here.

        ``P/S`` lives here when ``P`` is homed; the prefix record ``0.NA/P`` when ``P`` or a
        prefix it derives from is homed (a node administers the prefixes derived from its own).
        """
        homed = await self.keys()
        prefix, _, suffix = handle_key.partition("/")
        if prefix == PREFIX_HANDLE_PREFIX:
            return any(p in homed for p in parent_prefixes(suffix))
        return prefix in homed
