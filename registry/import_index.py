"""The search index rows of ``idis import`` (see :mod:`resolver.search`).

An import writes ``attr_index`` rows only for records holding a value at index 2000 or above.
Which ones do is found on the stored forms of a whole block of rows at once, without decoding
them: each value of a stored form is a JSON array whose first element is its index, so a value
at 2000 or above shows as ``[`` followed by a number of four digits from 2 or of five digits or
more.  A match inside some data (a false alarm) only costs decoding that row; plain URL and
HS_ADMIN records, the common case of an import, cost one scan of their bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from registry.templates import ImportGate
from resolver.codecs.stored import decode_values
from resolver.search import entries, kinds_of

EntryRow = tuple[str, int, str, str, float | None, bool]
"""One ``attr_index`` row as copied: ``(key, idx, type, v_text, v_num, public)``."""
ENTRY_COLUMNS = ("key", "idx", "type", "v_text", "v_num", "public")

_HIGH_INDEX = re.compile(rb"\[(?:[2-9]\d{3}|[1-9]\d{4,})")


def may_have_entries(data: bytes) -> bool:
    """False if the stored form ``data`` surely has no value at index 2000 or above."""
    return _HIGH_INDEX.search(data) is not None


class Indexer:
    """The index rows of imported rows ``(key, handle, data)``, typed by the templates the
    import's gate read (the only ones its records may name)."""

    def __init__(self, gate: ImportGate | None) -> None:
        self._gate = gate

    def rows(self, block: Sequence[tuple[str, Any, bytes]]) -> list[EntryRow]:
        """The index rows of a block of rows (none, at the cost of one scan, for plain ones)."""
        if not block or not may_have_entries(b"".join([row[2] for row in block])):
            return []
        found: list[EntryRow] = []
        for key, _, data in block:
            if not may_have_entries(data):
                continue
            values = decode_values(data)
            template = self._gate.template_of(values) if self._gate is not None else None
            for e in entries(values, kinds_of(template)):
                found.append((key, e.index, e.type, e.text, e.number, e.public))
        return found


def stale_keys(keys: Iterable[str], existing: Mapping[str, bytes]) -> list[str]:
    """Those of ``keys`` (rewritten by an import) whose stored record may have index rows."""
    return [key for key in keys if key in existing and may_have_entries(existing[key])]
