"""The search index rows of ``idis import`` (see :mod:`resolver.search`).

Only templated records are indexed: an import writes ``attr_index`` rows for the records that
name, at index 1001, one of the templates the import's gate read, at the indexes of that
template's enabled items.  A node without templates indexes nothing and looks at nothing; on
one with templates, a whole block of rows is first searched for ``template.`` without
decoding it (the gate's own test), and only records that may name a template are decoded.
Plain URL and HS_ADMIN records and untemplated values at 2000 or above, the bulk of an
import, cost that one scan of their bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from registry.templates import ImportGate, may_be_templated
from resolver.search import MAX_INDEXED_CHARS, NUMERIC_KINDS, Kinds, kinds_of, sortable
from resolver.templates import TEMPLATE_INDEX, TEMPLATE_REF
from resolver.values import DEFAULT_PERMISSIONS, PUBLIC_READ

EntryRow = tuple[str, int, str, str, float | None, bool]
"""One ``attr_index`` row as copied: ``(key, idx, type, v_text, v_num, public)``."""
ENTRY_COLUMNS = ("key", "idx", "type", "v_text", "v_num", "public")


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
        gate = self._gate
        if gate is None or not block or not gate.any_suspect([row[2] for row in block]):
            return []
        found: list[EntryRow] = []
        for key, _, data in block:
            if may_be_templated(data):
                found += self.of(key, orjson.loads(data))
        return found

    def of(self, key: str, stored: list[list[Any]]) -> list[EntryRow]:
        """The index rows of one record, ``stored`` being its stored form's arrays: those of
        the enabled items of the template it names (as :func:`resolver.templates.named_template`
        reads it: the first value at 1001 of type ``TEMPLATE``), none if it names none."""
        kinds: Kinds = {}
        for row in stored:
            if row[0] == TEMPLATE_INDEX and row[1].upper() == TEMPLATE_REF:
                if row[2] == "string" and self._gate is not None:
                    kinds = kinds_of(self._gate.template_named(row[3]))
                break
        if not kinds:
            return []
        found: list[EntryRow] = []
        for row in stored:
            kind = kinds.get(row[0])
            if kind is None or row[2] != "string":
                continue
            text = row[3]
            permissions = (
                row[6].get("p", DEFAULT_PERMISSIONS) if len(row) > 6 else DEFAULT_PERMISSIONS
            )
            number = sortable(kind, text) if kind in NUMERIC_KINDS else None
            public = bool(permissions & PUBLIC_READ)
            found.append((key, row[0], row[1].upper(), text[:MAX_INDEXED_CHARS], number, public))
        return found


def stale_keys(
    rows: Iterable[tuple[str, Any, bytes]], existing: Mapping[str, bytes], entries: list[EntryRow]
) -> list[str]:
    """The keys of ``rows`` (records a merge rewrites) whose index rows must go first: those
    whose stored record may name a template (only those have some), and those getting new
    ones (rows left behind by a table emptied by hand would otherwise stop the import)."""
    keys = {key for key, _, _ in rows if key in existing and may_be_templated(existing[key])}
    keys.update(entry[0] for entry in entries)
    return sorted(keys)
