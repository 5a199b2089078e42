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

import orjson

from registry.templates import ImportGate
from resolver.search import MAX_INDEXED_CHARS, NUMERIC_KINDS, Kinds, kinds_of, sortable
from resolver.templates import MIN_ITEM_INDEX, TEMPLATE_INDEX
from resolver.values import DEFAULT_PERMISSIONS, PUBLIC_READ

EntryRow = tuple[str, int, str, str, float | None, bool]
"""One ``attr_index`` row as copied: ``(key, idx, type, v_text, v_num, public)``."""
ENTRY_COLUMNS = ("key", "idx", "type", "v_text", "v_num", "public")

_HIGH_INDEX = re.compile(rb"\[(?:[2-9]\d{3}|[1-9]\d{4,})")


def may_have_entries(data: bytes) -> bool:
    """False if the stored form ``data`` surely has no value at index 2000 or above."""
    return _HIGH_INDEX.search(data) is not None


class Indexer:
    """The index rows of imported rows ``(key, handle, data)``, typed by the templates the
    import's gate read (the only ones its records may name).

    They are read off the stored form's arrays directly (a tenth of what decoding values
    costs), and must equal what :func:`resolver.search.entries` makes of the same values,
    which ``tests/test_search_contract.py`` checks.
    """

    def __init__(self, gate: ImportGate | None) -> None:
        self._gate = gate if gate is not None and gate.templates else None

    def rows(self, block: Sequence[tuple[str, Any, bytes]]) -> list[EntryRow]:
        """The index rows of a block of rows (none, at the cost of one scan, for plain ones)."""
        if not block or not may_have_entries(b"".join([row[2] for row in block])):
            return []
        found: list[EntryRow] = []
        for key, _, data in block:
            if may_have_entries(data):
                found += self.of(key, orjson.loads(data))
        return found

    def of(self, key: str, stored: list[list[Any]]) -> list[EntryRow]:
        """The index rows of one record, ``stored`` being its stored form's arrays."""
        kinds: Kinds = {}
        if self._gate is not None:
            for row in stored:
                if row[0] == TEMPLATE_INDEX and row[2] == "string" and row[1].upper() == "TEMPLATE":
                    kinds = kinds_of(self._gate.template_named(row[3]))
        found: list[EntryRow] = []
        for row in stored:
            index = row[0]
            if index < MIN_ITEM_INDEX or row[2] != "string":
                continue
            text = row[3]
            permissions = (
                row[6].get("p", DEFAULT_PERMISSIONS) if len(row) > 6 else DEFAULT_PERMISSIONS
            )
            kind = kinds.get(index)
            number = sortable(kind, text) if kind in NUMERIC_KINDS else None
            public = bool(permissions & PUBLIC_READ)
            found.append((key, index, row[1].upper(), text[:MAX_INDEXED_CHARS], number, public))
        return found


def stale_keys(
    rows: Iterable[tuple[str, Any, bytes]], existing: Mapping[str, bytes], entries: list[EntryRow]
) -> list[str]:
    """The keys of ``rows`` (records a merge rewrites) whose index rows must go first: those
    whose stored record may have some, and those getting new ones (rows left behind by a
    table emptied by hand would otherwise stop the import)."""
    keys = {key for key, _, _ in rows if key in existing and may_have_entries(existing[key])}
    keys.update(entry[0] for entry in entries)
    return sorted(keys)
