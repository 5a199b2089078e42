"""What a record's values say in DNS: NAPTR, URI and TXT data, free of any wire format.

Only values an anonymous client may read (public read permission) are shown, as over REST.

- **NAPTR** (RFC 3403): one terminal ``U`` record per URL-like value (type ``URL`` or a
  sub-type ``URL.x``, data a string with a URI scheme), order 100, preference 10 + its rank in
  index order, service ``E2U+idis:<TYPE>`` (an ENUM-style service, RFC 6116: ``E2U`` then the
  enumservice ``idis`` with the Handle type as subtype; ``.`` in a sub-type becomes ``-``, since
  subtypes are letters, digits and ``-``), regexp ``!^.*$!<URL>!`` (``\\`` and ``!`` in the URL
  escaped), replacement ``.``; a URL too long for the regexp's 255 bytes has only a URI record.
- **URI** (RFC 7553): the same values, priority 10 + rank, weight 1, target the URL.
- **TXT**: one record per public value, its character-strings the index, the type, then the
  data (a string as is; any other format as its REST JSON ``data`` object) cut into pieces of
  at most 255 bytes, which readers join (RFC 7208 style).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from resolver.codecs.json_api import render_data
from resolver.render import select
from resolver.values import HandleValue

NAPTR_ORDER = 100
SERVICE_PREFIX = "E2U+idis:"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")
_SUBTYPE = re.compile(r"[^A-Za-z0-9-]")
MAX_STRING = 255


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Uri:
    priority: int
    weight: int
    target: str


def url_of(value: HandleValue) -> str | None:
    """The URL a value carries, if it is URL-like (see the module's docstring)."""
    if not value.type_matches("URL.") or value.data.format != "string":
        return None
    text = str(value.data.value).strip()
    return text if _SCHEME.match(text) else None


def _url_values(values: Sequence[HandleValue]) -> list[tuple[HandleValue, str]]:
    found = []
    for value in select(values):
        url = url_of(value)
        if url is not None:
            found.append((value, url))
    return found


def service_of(value_type: str) -> str:
    return SERVICE_PREFIX + _SUBTYPE.sub("-", value_type)[:32]


def naptr_records(values: Sequence[HandleValue]) -> list[Naptr]:
    records = []
    for rank, (value, url) in enumerate(_url_values(values)):
        escaped = url.replace("\\", "\\\\").replace("!", "\\!")
        regexp = f"!^.*$!{escaped}!"
        if len(regexp.encode("utf-8")) > MAX_STRING:
            continue  # a character-string holds no more: the URI record still carries it
        records.append(Naptr(NAPTR_ORDER, 10 + rank, "U", service_of(value.type), regexp, "."))
    return records


def uri_records(values: Sequence[HandleValue]) -> list[Uri]:
    return [Uri(10 + rank, 1, url) for rank, (_, url) in enumerate(_url_values(values))]


def txt_strings(value: HandleValue) -> list[bytes]:
    """The character-strings of the TXT record showing ``value``."""
    if value.data.format == "string":
        data = str(value.data.value).encode("utf-8")
    else:
        data = orjson.dumps(render_data(value.data))
    pieces = [data[i : i + MAX_STRING] for i in range(0, len(data), MAX_STRING)] or [b""]
    return [str(value.index).encode(), value.type.encode("utf-8")[:MAX_STRING], *pieces]


def txt_records(values: Sequence[HandleValue]) -> list[list[bytes]]:
    return [txt_strings(value) for value in select(values)]


# --- wire forms (RFC 1035 section 3.3, RFC 3403 section 4.1, RFC 7553 section 4.5) ----------


def _string(data: bytes) -> bytes:
    """A character-string: a length byte and at most 255 bytes."""
    data = data[:MAX_STRING]
    return bytes((len(data),)) + data


def naptr_rdata(naptr: Naptr) -> bytes:
    """The wire form of a NAPTR whose replacement is the root (as all of ours are)."""
    head = naptr.order.to_bytes(2, "big") + naptr.preference.to_bytes(2, "big")
    fields = (naptr.flags, naptr.service, naptr.regexp)
    return head + b"".join(_string(f.encode("utf-8")) for f in fields) + b"\x00"


def uri_rdata(uri: Uri) -> bytes:
    return uri.priority.to_bytes(2, "big") + uri.weight.to_bytes(2, "big") + uri.target.encode()


def txt_rdata(strings: list[bytes]) -> bytes:
    return b"".join(_string(s) for s in strings)


def wire_rdatas(values: Sequence[HandleValue], rdtype: int) -> list[bytes]:
    """The rdatas of type ``rdtype`` (35 NAPTR, 256 URI, 16 TXT) showing ``values``."""
    if rdtype == 35:
        return [naptr_rdata(n) for n in naptr_records(values)]
    if rdtype == 256:
        return [uri_rdata(u) for u in uri_records(values)]
    if rdtype == 16:
        return [txt_rdata(t) for t in txt_records(values)]
    return []
