"""The compact stored form of a handle's values: one JSON array per value.

``[index, type, format, payload, ttl, timestamp]`` followed by an optional object holding only
what differs from the defaults (``a``: absolute ttl, ``p``: permissions, ``r``: references).
Admin payloads are ``[handle, index, rights]`` and vlists ``[[handle, index], ...]``.  At two
billion identifiers every byte of a row counts, and orjson parses arrays fastest.
"""

from __future__ import annotations

from typing import Any

import orjson

from resolver.values import DEFAULT_PERMISSIONS, AdminRef, Data, HandleValue, Record, Ref


def _payload_out(data: Data) -> Any:
    if data.format == "admin":
        return [data.value.handle, data.value.index, data.value.permissions]
    if data.format == "vlist":
        return [[r.handle, r.index] for r in data.value]
    return data.value


def _payload_in(fmt: str, raw: Any) -> Any:
    if fmt == "admin":
        return AdminRef(raw[0], raw[1], raw[2])
    if fmt == "vlist":
        return tuple(Ref(h, i) for h, i in raw)
    return raw


def encode_values(values: tuple[HandleValue, ...] | list[HandleValue]) -> bytes:
    rows: list[list[Any]] = []
    for v in values:
        row: list[Any] = [v.index, v.type, v.data.format, _payload_out(v.data), v.ttl, v.timestamp]
        extra: dict[str, Any] = {}
        if v.ttl_absolute:
            extra["a"] = 1
        if v.permissions != DEFAULT_PERMISSIONS:
            extra["p"] = v.permissions
        if v.references:
            extra["r"] = [[r.handle, r.index] for r in v.references]
        if extra:
            row.append(extra)
        rows.append(row)
    return orjson.dumps(rows)


def decode_values(blob: bytes | str) -> tuple[HandleValue, ...]:
    out = []
    for row in orjson.loads(blob):
        extra = row[6] if len(row) > 6 else {}
        out.append(
            HandleValue(
                row[0],
                row[1],
                Data(row[2], _payload_in(row[2], row[3])),
                row[4],
                bool(extra.get("a", 0)),
                row[5],
                extra.get("p", DEFAULT_PERMISSIONS),
                tuple(Ref(h, i) for h, i in extra.get("r", ())),
            )
        )
    return tuple(out)


def decode_record(handle: str, blob: bytes, version: int) -> Record:
    """The record whose values' stored form is ``blob``, keeping ``blob`` as its ``stored``."""
    return Record.with_stored(handle, decode_values(blob), version, blob)


def stored_form(record: Record) -> bytes:
    """The stored form of ``record``'s values: the bytes it was decoded from, if it was."""
    return encode_values(record.values) if record.stored is None else record.stored
