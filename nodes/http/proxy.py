"""The web proxy's choice of where to send a browser (``GET /{handle}``).

Order as DESIGN.md section 2 gives it: a 10320/LOC location list, then a URL value (an exact
``URL`` before a ``URL.*`` sub-type), then EMAIL as ``mailto:``.  Only absolute URLs of the
allowed schemes are locations (http, https and those of ``IDIS_REDIRECT_SCHEMES``): a stored
``javascript:`` URL, or one a browser would read as relative, is passed over, so that the
proxy never runs script on its own origin nor sends a browser where the value does not say.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator, Sequence
from urllib.parse import urlsplit

from resolver.errors import ProtocolError
from resolver.values import HandleValue

WEB_SCHEMES = frozenset({"http", "https"})
# Browsers drop or act on these anywhere in a URL (tab and line ends vanish, so "java\tscript:"
# is javascript:); a location holding one is no location.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")

LOC_TYPE = "10320/LOC"


def _text(value: HandleValue) -> str | None:
    return value.data.value if value.data.format == "string" else None


def _from_locations(xml: str) -> str | None:
    """The ``href`` of the heaviest ``<location>`` (the first among equals)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    best: tuple[float, str] | None = None
    for element in root.iter("location"):
        href = element.get("href")
        if not href:
            continue
        try:
            weight = float(element.get("weight", "1"))
        except ValueError:
            weight = 1.0
        if weight > 0 and (best is None or weight > best[0]):
            best = (weight, href)
    return best[1] if best else None


def safe_location(url: str, schemes: Collection[str]) -> bool:
    """True if a browser may be sent to ``url``: absolute, of an allowed scheme (``schemes``
    lower case), a web URL naming its host, and free of spaces and control characters."""
    if _UNSAFE.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [ in the host
        return False
    scheme = parts.scheme.lower()
    if scheme in WEB_SCHEMES:
        return bool(parts.hostname) and url[len(scheme) : len(scheme) + 3] == "://"
    return scheme in schemes


def choose_location(values: Sequence[HandleValue], schemes: Collection[str]) -> str | None:
    """Where to send a browser for ``values``: the first safe location (see
    :func:`safe_location`) in the order of the module's docstring; None if there is none."""
    for candidate in _candidates(values):
        if safe_location(candidate, schemes):
            return candidate
    return None


def _candidates(values: Sequence[HandleValue]) -> Iterator[str]:
    for value in values:
        text = _text(value)
        if value.type.upper() == LOC_TYPE and text:
            href = _from_locations(text)
            if href:
                yield href
    for exact in (True, False):
        for value in values:
            kind = value.type.upper()
            text = _text(value)
            if text and (kind == "URL" if exact else kind.startswith("URL.")):
                yield text
    for value in values:
        text = _text(value)
        if value.type.upper() == "EMAIL" and text:
            yield text if text.startswith("mailto:") else f"mailto:{text}"


def append_to(location: str, tail: str, schemes: Collection[str]) -> str:
    """``location`` with ``urlappend``'s ``tail`` added, which may add to its path, query or
    fragment but never change where it points.

    A location without a path gets ``/`` first, or ``https://example.com`` + ``@evil.example``
    would be a URL of the host evil.example.  Raises :class:`ProtocolError` if the result is
    no safe location or its scheme or host is not the location's.
    """
    if not tail:
        return location
    before = urlsplit(location)
    if before.netloc and not before.path and not tail.startswith(("/", "?", "#")):
        tail = "/" + tail
    result = location + tail
    if not safe_location(result, schemes):
        raise ProtocolError("urlappend must be URL text without spaces or control characters")
    after = urlsplit(result)
    if (after.scheme, after.netloc) != (before.scheme, before.netloc):
        raise ProtocolError("urlappend may not change the host the handle's URL names")
    return result


def alias_target(values: Sequence[HandleValue]) -> str | None:
    for value in values:
        if value.type.upper() == "HS_ALIAS":
            return _text(value)
    return None
