"""Compressed GS1 Digital Link URIs (GS1 Digital Link: Compression): ``/{base64url}``.

The compression packs the AIs and their values in a bit string by per-AI encodings drawn from
GS1's AI tables, then writes it in URL-safe base64.  Decompression is done by the
``gs1-compression`` package (a port of GS1's own prototype), which holds those tables; its
result is checked again by :func:`resolver.gs1.keys.parse`, so a URI that decompresses to
something malformed is refused like any other.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from resolver.gs1.keys import DigitalLink, InvalidDigitalLink, parse

_SEGMENT = re.compile(r"/[A-Za-z0-9_-]{8,}")
"""One path segment of URL-safe base64: what a compressed URI's path looks like.  The shortest
compressed key (a GTIN) is 10 characters; eight keeps names like ``/healthz`` out."""

_STEM = "https://x.invalid"

# The package logs every failure, with a stack trace, under the literal logger name
# "__name__"; a malformed request is the client's error, answered 400, not an event to log.
logging.getLogger("__name__").disabled = True


def looks_compressed(path: str) -> bool:
    return _SEGMENT.fullmatch(path) is not None


def decompress(path: str, query: str = "") -> DigitalLink:
    """The Digital Link that compressed ``path`` (``/{base64url}``) stands for, with the data
    attributes it packs and those of ``query``.  Raises :class:`InvalidDigitalLink`."""
    from gs1 import decompress_gs1_digital_link  # type: ignore[import-untyped]

    try:
        expanded = decompress_gs1_digital_link(_STEM + path, False)
    except Exception:  # the package signals bad input with assorted built-in errors
        raise InvalidDigitalLink("not a compressed GS1 Digital Link URI") from None
    if not isinstance(expanded, str):
        raise InvalidDigitalLink("not a compressed GS1 Digital Link URI")
    parts = urlsplit(expanded)
    packed = parts.query
    return parse(parts.path, "&".join(q for q in (packed, query) if q))
