"""The web proxy's choice of where to send a browser (``GET /{handle}``).

Order as DESIGN.md section 2 gives it: a 10320/LOC location list, then a URL value (an exact
``URL`` before a ``URL.*`` sub-type), then EMAIL as ``mailto:``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from resolver.values import HandleValue

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


def choose_location(values: Sequence[HandleValue]) -> str | None:
    for value in values:
        text = _text(value)
        if value.type.upper() == LOC_TYPE and text:
            href = _from_locations(text)
            if href:
                return href
    for exact in (True, False):
        for value in values:
            kind = value.type.upper()
            text = _text(value)
            if text and (kind == "URL" if exact else kind.startswith("URL.")):
                return text
    for value in values:
        text = _text(value)
        if value.type.upper() == "EMAIL" and text:
            return text if text.startswith("mailto:") else f"mailto:{text}"
    return None


def alias_target(values: Sequence[HandleValue]) -> str | None:
    for value in values:
        if value.type.upper() == "HS_ALIAS":
            return _text(value)
    return None
