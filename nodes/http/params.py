"""Reading what the HTTP edge needs from an ASGI scope: handles from paths, query flags."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from resolver.errors import InvalidHandle, ProtocolError
from resolver.values import MAX_INDEX

MAX_NUMBER = 2**63 - 1
"""The largest number a query parameter may give unless told otherwise: what a database's
BIGINT and orjson both take."""

_TRUE = {"", "true", "1", "yes", "on"}
_CALLBACK = re.compile(r"[A-Za-z_$][\w$.]{0,99}")


def path_text(scope: dict, skip: int) -> str:
    """The percent-decoded path after its first ``skip`` bytes, as strict UTF-8.

    Servers decode ``path`` leniently (invalid bytes become U+FFFD); an identifier must never
    be silently altered, so this decodes ``raw_path`` itself.
    """
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    raw = raw.split(b"?", 1)[0]
    try:
        return unquote_to_bytes(raw[skip:]).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHandle("handle is not valid UTF-8") from None


class Query:
    """The query string of a request, Handle.Net's parameters read leniently."""

    __slots__ = ("_pairs",)

    def __init__(self, query_string: bytes) -> None:
        try:
            text = query_string.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("query string is not valid UTF-8") from None
        self._pairs = parse_qsl(text, keep_blank_values=True)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self._pairs if k == name]

    def get(self, name: str) -> str | None:
        for k, v in self._pairs:
            if k == name:
                return v
        return None

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        return default if value is None else value.strip().lower() in _TRUE

    def ints(self, name: str, low: int = 0, high: int = MAX_INDEX) -> list[int]:
        """Every ``name=`` as an integer from ``low`` to ``high`` (value indexes by default);
        :class:`ProtocolError` for any other."""
        return [_bounded(name, v, low, high) for v in self.all(name)]

    def int(self, name: str, default: int, low: int = 0, high: int = MAX_NUMBER) -> int:
        """``name=`` as an integer from ``low`` to ``high``, ``default`` when absent or empty;
        :class:`ProtocolError` for any other."""
        value = self.get(name)
        if value is None or value == "":
            return default
        return _bounded(name, value, low, high)

    def indexes(self) -> Sequence[int] | None:
        """``index=`` values of a write; None when absent or ``index=various``."""
        values = self.all("index")
        if not values or "various" in values:
            return None
        return self.ints("index")

    def callback(self) -> str | None:
        name = self.get("callback")
        if name is None:
            return None
        if not _CALLBACK.fullmatch(name):
            raise ProtocolError("callback must be a JavaScript identifier")
        return name


def client_address(scope: Mapping[str, Any]) -> str | None:
    """The client's IP address as the server saw it (what per-source limits count against)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _bounded(name: str, text: str, low: int, high: int) -> int:
    # int() reads at most 4300 digits (a ValueError past them), so this costs little.
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ProtocolError(f"{name} must be an integer from {low} to {high}")
    return number
