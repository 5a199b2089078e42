"""The Handle.Net REST JSON form of values: lenient parsing of input, exact rendering of output.

Input follows what Handle.Net accepts: ``data`` may be a bare string, an admin ``index`` may be
a string, ``ttl`` is seconds (relative) or an ISO time (absolute).  Output follows what it
writes: ``index, type, data, [permissions], ttl, timestamp, [references]``, the bracketed
fields only when they differ from the defaults.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from resolver.codecs.timefmt import iso, parse_iso
from resolver.errors import InvalidValue
from resolver.values import (
    DEFAULT_PERMISSIONS,
    DEFAULT_TTL,
    HS_ADMIN,
    HS_SECKEY,
    HS_VLIST,
    MAX_INDEX,
    MAX_VALUES,
    SECRET_PERMISSIONS,
    AdminRef,
    Data,
    HandleValue,
    Ref,
    check_record,
    check_value,
)

STRUCTURED_FORMATS = {HS_ADMIN: "admin", HS_VLIST: "vlist"}


# --- permissions ---------------------------------------------------------------------------


def admin_permissions_text(bits: int) -> str:
    """The 12 HS_ADMIN rights as Handle writes them: bit 11 first."""
    return format(bits & 0xFFF, "012b")


def parse_admin_permissions(text: object) -> int:
    if isinstance(text, str) and len(text) == 12 and set(text) <= {"0", "1"}:
        return int(text, 2)
    raise InvalidValue("admin permissions must be 12 characters of 0 and 1")


def value_permissions_text(bits: int) -> str:
    """Value permissions ``admin_read admin_write public_read public_write`` as ``"1110"``."""
    return format(bits & 0xF, "04b")


def _parse_value_permissions(raw: object) -> int:
    if raw == "*":
        return 0xF
    if isinstance(raw, str) and len(raw) == 4 and set(raw) <= {"0", "1"}:
        return int(raw, 2)
    raise InvalidValue('permissions must be 4 characters of 0 and 1, e.g. "1110"')


# --- parsing -------------------------------------------------------------------------------


def _int(raw: object, what: str, low: int = 0, high: int = MAX_INDEX) -> int:
    if isinstance(raw, bool):
        raise InvalidValue(f"{what} must be an integer")
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        try:
            raw = int(raw)
        except ValueError:  # str.isdigit admits "²" and "--5", which int() refuses
            raise InvalidValue(f"{what} must be an integer from {low} to {high}") from None
    if not isinstance(raw, int) or not low <= raw <= high:
        raise InvalidValue(f"{what} must be an integer from {low} to {high}")
    return raw


def _str(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidValue(f"{what} must be a string")
    return raw


def _ref(raw: object, what: str) -> Ref:
    if not isinstance(raw, dict):
        raise InvalidValue(f"{what} must be an object with handle and index")
    handle = _str(raw.get("handle"), f"{what}.handle")
    if "/" not in handle:
        raise InvalidValue(f"{what}.handle {handle!r} is not a handle")
    return Ref(handle, _int(raw.get("index"), f"{what}.index"))


def parse_data(type_: str, raw: object) -> Data:
    """The ``data`` of an input value, checked against its format (and its type's format)."""
    fmt: object
    payload: object
    if isinstance(raw, str):
        fmt, payload = "string", raw
    elif isinstance(raw, dict):
        fmt, payload = raw.get("format", "string"), raw.get("value")
    else:
        raise InvalidValue("data must be a string or an object with format and value")
    wanted = STRUCTURED_FORMATS.get(type_.upper())
    if wanted and fmt != wanted:
        raise InvalidValue(f"{type_} data must have format {wanted!r}")
    if fmt == "string":
        return Data("string", _str(payload, "data.value"))
    if fmt == "base64":
        text = _str(payload, "data.value")
        try:
            raw_bytes = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValue("data.value is not valid base64") from None
        return Data("base64", base64.b64encode(raw_bytes).decode("ascii"))
    if fmt == "hex":
        try:
            raw_bytes = bytes.fromhex(_str(payload, "data.value"))
        except ValueError:
            raise InvalidValue("data.value is not valid hex") from None
        return Data("base64", base64.b64encode(raw_bytes).decode("ascii"))
    if fmt == "admin":
        if not isinstance(payload, dict):
            raise InvalidValue("admin data must be an object with handle, index, permissions")
        ref = _ref(payload, "data.value")
        bits = parse_admin_permissions(payload.get("permissions"))
        return Data("admin", AdminRef(ref.handle, ref.index, bits))
    if fmt == "vlist":
        if not isinstance(payload, list):
            raise InvalidValue("vlist data must be a list of {handle, index}")
        return Data("vlist", tuple(_ref(item, "data.value[]") for item in payload))
    if fmt in ("site", "key"):
        if not isinstance(payload, (dict, str)):
            raise InvalidValue(f"{fmt} data must be an object")
        return Data(fmt, payload)
    raise InvalidValue(f"unknown data format {fmt!r}")


def parse_value(raw: object, now: int, *, keep_timestamp: bool = False) -> HandleValue:
    """One input value. ``now`` becomes its timestamp unless ``keep_timestamp`` and it has one."""
    if not isinstance(raw, dict):
        raise InvalidValue("a value must be a JSON object")
    if "index" not in raw:
        raise InvalidValue("a value needs an index")
    index = _int(raw["index"], "index", 1)
    type_ = _str(raw.get("type"), "type")
    if type_[:3].upper() == "HS_":
        # The server acts on HS_ types (rights, secrets, sites); one spelling keeps them working.
        type_ = type_.upper()
    if "data" not in raw:
        raise InvalidValue(f"value {index} has no data")
    data = parse_data(type_, raw["data"])
    ttl, absolute = DEFAULT_TTL, False
    if raw.get("ttl") is not None:
        ttl_raw = raw["ttl"]
        if isinstance(ttl_raw, str) and not ttl_raw.strip().isdigit():
            try:
                ttl, absolute = parse_iso(ttl_raw), True
            except ValueError:
                raise InvalidValue("ttl must be seconds or an ISO-8601 time") from None
        else:
            ttl = _int(ttl_raw, "ttl", 0, 2**31 - 1)
    if raw.get("permissions") is not None:
        permissions = _parse_value_permissions(raw["permissions"])
    else:
        permissions = SECRET_PERMISSIONS if type_.upper() == HS_SECKEY else DEFAULT_PERMISSIONS
    references: tuple[Ref, ...] = ()
    if raw.get("references"):
        if not isinstance(raw["references"], list):
            raise InvalidValue("references must be a list")
        references = tuple(_ref(item, "references[]") for item in raw["references"])
    timestamp = now
    if keep_timestamp and isinstance(raw.get("timestamp"), str):
        try:
            timestamp = parse_iso(raw["timestamp"])
        except ValueError:
            raise InvalidValue("timestamp must be an ISO-8601 time") from None
    value = HandleValue(index, type_, data, ttl, absolute, timestamp, permissions, references)
    check_value(value)
    return value


def parse_values(raw: object, now: int, *, keep_timestamp: bool = False) -> tuple[HandleValue, ...]:
    """A write body: ``{"values": [...]}``, a bare list, or one value.

    Raises :class:`InvalidValue` for any bad value, duplicate indexes, more than
    ``MAX_VALUES`` values, or anything else :func:`resolver.values.check_values` refuses.
    """
    if isinstance(raw, dict) and "values" in raw:
        raw = raw["values"]
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > MAX_VALUES:
        raise InvalidValue(f"more than {MAX_VALUES} values")
    values = tuple(parse_value(item, now, keep_timestamp=keep_timestamp) for item in items)
    check_record(values)  # each value was checked as it was parsed
    return values


# --- rendering -----------------------------------------------------------------------------


def render_data(data: Data) -> dict[str, Any]:
    payload = data.value
    if data.format == "admin":
        payload = {
            "handle": payload.handle,
            "index": payload.index,
            "permissions": admin_permissions_text(payload.permissions),
        }
    elif data.format == "vlist":
        payload = [{"handle": r.handle, "index": r.index} for r in payload]
    return {"format": data.format, "value": payload}


def render_value(value: HandleValue) -> dict[str, Any]:
    # Handle.Net's order: permissions sit between data and ttl when present.
    out: dict[str, Any] = {
        "index": value.index,
        "type": value.type,
        "data": render_data(value.data),
    }
    if value.permissions != DEFAULT_PERMISSIONS:
        out["permissions"] = value_permissions_text(value.permissions)
    out["ttl"] = iso(value.ttl) if value.ttl_absolute else value.ttl
    out["timestamp"] = iso(value.timestamp)
    if value.references:
        out["references"] = [{"handle": r.handle, "index": r.index} for r in value.references]
    return out
