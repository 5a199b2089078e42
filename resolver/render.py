"""Rendering resolution answers as Handle REST JSON bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from resolver.codecs.json_api import render_value
from resolver.values import HandleValue, Record


def select(
    values: Sequence[HandleValue],
    *,
    types: Sequence[str] = (),
    indexes: Sequence[int] = (),
    include_private: bool = False,
) -> list[HandleValue]:
    """The values a query asks for, in index order.

    With ``types`` or ``indexes`` a value is kept when it matches any of them; values without
    public read permission are kept only when ``include_private``.
    """
    chosen = []
    for value in values:
        if not include_private and not value.public_read:
            continue
        if (types or indexes) and not (
            value.index in indexes or any(value.type_matches(t) for t in types)
        ):
            continue
        chosen.append(value)
    chosen.sort(key=lambda v: v.index)
    return chosen


def dumps(body: dict[str, Any], *, pretty: bool = False) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)


def resolution(handle: str, values: Sequence[HandleValue], *, pretty: bool = False) -> bytes:
    """``{"responseCode":1,...}`` or, with no values, ``{"responseCode":200,...,"values":[]}``."""
    body = {
        "responseCode": 1 if values else 200,
        "handle": handle,
        "values": [render_value(v) for v in values],
    }
    return dumps(body, pretty=pretty)


def referral(handle: str, code: int, holder: Record, *, pretty: bool = False) -> bytes:
    """A 302/303 referral: the site values of ``holder``, the prefix record that delegates."""
    body = {
        "responseCode": code,
        "handle": handle,
        "referral": holder.handle,
        "values": [render_value(v) for v in holder.values],
    }
    return dumps(body, pretty=pretty)


def public_resolution(record: Record) -> bytes:
    """The answer to an anonymous, unfiltered query: what the hot path serves from memory."""
    return resolution(record.handle, select(record.values))


def error(code: int, message: str, handle: str | None = None) -> bytes:
    body: dict[str, Any] = {"responseCode": code}
    if handle is not None:
        body["handle"] = handle
    body["message"] = message
    return orjson.dumps(body)
