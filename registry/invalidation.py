"""Making a committed write visible at once to every worker of the node."""

from __future__ import annotations

from collections.abc import Sequence

from resolver.identifiers import PREFIX_HANDLE_PREFIX
from resolver.ports import Generations, SharedCache

PREFIX_RECORDS = PREFIX_HANDLE_PREFIX + "/"
ALL_KEY = "/all"
"""Written for a bulk load that bypassed the write path (:data:`registry.changelog.ALL_KEY`)."""


class Invalidator:
    """Call :meth:`written` after a commit and before acknowledging the write.

    Bumping the generation is what guarantees freshness (see :class:`resolver.ports.Generations`);
    deleting the shared entries only frees their memory early, so its failure is harmless.
    """

    def __init__(self, generations: Generations, shared: SharedCache | None = None) -> None:
        self._generations = generations
        self._shared = shared

    async def written(self, keys: Sequence[str]) -> None:
        if any(key.startswith(PREFIX_RECORDS) or key == ALL_KEY for key in keys):
            # A prefix record decides the referrals and not-homed answers cached for every
            # handle under it; such writes are rare, so everything cached is let go.
            self._generations.bump_all()
        else:
            self._generations.bump(keys)
        if self._shared is not None and keys:
            await self._shared.delete(keys)

    def everything(self) -> None:
        """After a bulk load that bypassed the write path: every cached answer is suspect."""
        self._generations.bump_all()
