"""GS1 Digital Link URI syntax (standard 1.2): primary keys, key qualifiers, data attributes.

A Digital Link path is ``/{primary AI}/{value}`` followed by key qualifiers in the order the
standard fixes for that key (``/01/{GTIN}[/22/{CPV}][/10/{lot}][/21/{serial}]``), each a
``/{AI}/{value}`` pair; data attributes (expiry date ``17``, weights ``310n``...) travel in the
query string as ``AI=value``.  Values are percent-decoded, then checked against the AI's format:
digits and length for numeric AIs, GS1's character sets for alphanumeric ones, and the mod-10
check digit of every key that has one.  A malformed URI raises :class:`InvalidDigitalLink`,
whose message says what is wrong (the resolver answers it with HTTP 400).

The deprecated convenience names (``/gtin/``, ``/lot/``...) are read as their AIs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote


class InvalidDigitalLink(ValueError):
    """The URI is not a syntactically valid GS1 Digital Link; the message says why."""


@dataclass(frozen=True, slots=True)
class Format:
    """An AI's value: ``numeric`` digits from ``low`` to ``high`` long, else characters of
    ``charset``; ``check`` is the 1-based position of a mod-10 check digit (0: none)."""

    low: int
    high: int
    numeric: bool = False
    check: int = 0
    charset: str = "82"


CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]*")
CSET39 = re.compile(r"[#\-/0-9A-Z]*")


def N(length: int, check: bool = False) -> Format:
    return Format(length, length, numeric=True, check=length if check else 0)


def X(high: int, charset: str = "82") -> Format:
    return Format(1, high, charset=charset)


@dataclass(frozen=True, slots=True)
class PrimaryKey:
    ai: str
    name: str
    format: Format
    paths: tuple[tuple[str, ...], ...] = ()
    """The qualifier sequences the key takes: a request may use any in-order subset of one
    (``/01/{GTIN}/21/{serial}`` skips the CPV and the lot), as the standard allows."""
    gcp_at: int = 0
    """Where the GS1 company prefix starts in the value (a GTIN's indicator digit comes first)."""


def _gtin14(value: str) -> str:
    # GTIN-8, -12 and -13 are written as 14 digits in the canonical form.
    return value.rjust(14, "0") if value.isdigit() and len(value) in (8, 12, 13) else value


PRIMARY_KEYS: dict[str, PrimaryKey] = {
    k.ai: k
    for k in (
        PrimaryKey("01", "gtin", N(14, True), (("22", "10", "21"), ("235",)), gcp_at=1),
        PrimaryKey(
            "8006", "itip", Format(18, 18, numeric=True, check=14), (("22", "10", "21"),), 1
        ),
        PrimaryKey("8013", "gmn", X(25)),
        PrimaryKey("8010", "cpid", X(30, "39"), (("8011",),)),
        PrimaryKey("410", "shipTo", N(13, True)),
        PrimaryKey("411", "billTo", N(13, True)),
        PrimaryKey("412", "purchasedFrom", N(13, True)),
        PrimaryKey("413", "shipFor", N(13, True)),
        PrimaryKey("414", "gln", N(13, True), (("254",), ("7040",))),
        PrimaryKey("415", "payTo", N(13, True), (("8020",),)),
        PrimaryKey("416", "glnProd", N(13, True), (("254",), ("7040",))),
        PrimaryKey("417", "party", N(13, True), (("7040",),)),
        PrimaryKey("8017", "gsrnp", N(18, True), (("8019",),)),
        PrimaryKey("8018", "gsrn", N(18, True), (("8019",),)),
        PrimaryKey("255", "gcn", Format(13, 25, numeric=True, check=13)),
        PrimaryKey("00", "sscc", N(18, True), gcp_at=1),
        PrimaryKey("253", "gdti", Format(13, 30, check=13)),
        PrimaryKey("401", "ginc", X(30)),
        PrimaryKey("402", "gsin", N(17, True)),
        PrimaryKey("8003", "grai", Format(14, 30, check=14), gcp_at=1),
        PrimaryKey("8004", "giai", X(30)),
    )
}

QUALIFIERS: dict[str, Format] = {
    "22": X(20),
    "10": X(20),
    "21": X(20),
    "235": X(28),
    "254": X(20),
    "7040": Format(4, 4),
    "8020": X(25),
    "8011": Format(1, 12, numeric=True),
    "8019": Format(1, 10, numeric=True),
}

ALIASES = {
    **{k.name.lower(): k.ai for k in PRIMARY_KEYS.values()},
    "cpv": "22",
    "lot": "10",
    "ser": "21",
    "tpx": "235",
    "glnx": "254",
    "refno": "8020",
    "cpsn": "8011",
    "srin": "8019",
}
"""The deprecated convenience alphas of Digital Link 1.0, lower-cased."""

_DATE = Format(6, 6, numeric=True)
DATA_ATTRIBUTES: dict[str, Format] = {
    **{ai: _DATE for ai in ("11", "12", "13", "15", "16", "17")},
    "30": Format(1, 8, numeric=True),
    "37": Format(1, 8, numeric=True),
    "7003": N(10),
    "7006": _DATE,
    "7007": Format(6, 12, numeric=True),
}
"""Data attributes with a strict format; other AIs in the query are GS1 text up to 90
characters, and 310n-369n are six digits (see :func:`_attribute_format`)."""


def check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of ``digits`` (weights 3, 1, 3... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def _validate(ai: str, value: str, fmt: Format) -> None:
    if not fmt.low <= len(value) <= fmt.high:
        size = str(fmt.low) if fmt.low == fmt.high else f"{fmt.low} to {fmt.high}"
        raise InvalidDigitalLink(f"({ai}) must be {size} characters long, not {len(value)}")
    if fmt.numeric and not (value.isascii() and value.isdigit()):
        raise InvalidDigitalLink(f"({ai}) must be digits only: {value!r}")
    pattern = CSET39 if fmt.charset == "39" else CSET82
    if not pattern.fullmatch(value):
        raise InvalidDigitalLink(f"({ai}) has characters GS1 does not allow: {value!r}")
    if fmt.check:
        body = value[: fmt.check - 1]
        given = value[fmt.check - 1]
        if not (body + given).isdigit():
            raise InvalidDigitalLink(f"({ai}) must start with {fmt.check} digits: {value!r}")
        expected = check_digit(body)
        if int(given) != expected:
            raise InvalidDigitalLink(
                f"({ai}) {value} has check digit {given}; the correct one is {expected}"
            )


def _attribute_format(ai: str) -> Format:
    if ai in DATA_ATTRIBUTES:
        return DATA_ATTRIBUTES[ai]
    if len(ai) == 4 and "310" <= ai[:3] <= "369":
        return Format(6, 6, numeric=True)
    return X(90)


@dataclass(frozen=True, slots=True)
class DigitalLink:
    """A parsed Digital Link: its key, qualifiers in path order, data attributes and the rest
    of the query (``other``: ``linkType``, ``context``, anything a target may want)."""

    key: PrimaryKey
    value: str
    qualifiers: tuple[tuple[str, str], ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    other: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        """The canonical path: numeric AIs, a GTIN as 14 digits, values percent-encoded."""
        return "".join(f"/{ai}/{_quote(v)}" for ai, v in self.elements())

    def elements(self) -> Iterator[tuple[str, str]]:
        yield self.key.ai, self.value
        yield from self.qualifiers

    def levels(self) -> list[DigitalLink]:
        """This link and each less specific one, dropping qualifiers from the end: a record
        for the lot answers a serial's request when the serial has none (the standard's
        walk up the qualifier hierarchy)."""
        return [
            DigitalLink(self.key, self.value, self.qualifiers[:n])
            for n in range(len(self.qualifiers), -1, -1)
        ]

    def company_prefixes(self) -> list[str]:
        """Candidate GS1 company prefixes (4 to 12 digits), longest first: the key's leading
        digits after any indicator digit.  Which length is the company's is only known from
        GS1's allocation, so a delegation is looked up under each, the longest first."""
        digits = re.match(r"\d*", self.value[self.key.gcp_at :])
        run = digits.group() if digits else ""
        return [run[:n] for n in range(min(12, len(run)), 3, -1)]

    def query(self, *, drop: Sequence[str] = ("linkType",)) -> str:
        """The query string to pass on to a target: everything the request carried except
        the resolver's own parameters in ``drop``."""
        pairs = [(k, v) for k, v in (*self.attributes, *self.other) if k not in drop]
        return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs)


def _quote(text: str) -> str:
    return quote(text, safe="!'()*+,-.:;=_~")


def is_digital_link_path(path: str) -> bool:
    """Whether ``path`` starts like a Digital Link (``/{primary key AI or name}/``): the cheap
    test a front end makes before routing a request here."""
    first = path[1:].split("/", 1)[0]
    return path.count("/") >= 2 and (first in PRIMARY_KEYS or first.lower() in ALIASES)


def parse(path: str, query: str = "") -> DigitalLink:
    """The Digital Link of a raw request ``path`` (still percent-encoded) and ``query``.

    Raises :class:`InvalidDigitalLink` for an unknown key, a qualifier the key does not take
    or out of its order, a value of the wrong format or with a wrong check digit, or a
    malformed data attribute.
    """
    parts = path.strip("/").split("/")
    if len(parts) % 2:
        raise InvalidDigitalLink("the path must be pairs of /{AI}/{value}")
    try:
        pairs = [
            (_ai(parts[i]), unquote(parts[i + 1], errors="strict")) for i in range(0, len(parts), 2)
        ]
    except UnicodeDecodeError:
        raise InvalidDigitalLink("the path is not UTF-8") from None
    (ai, value), qualifiers = pairs[0], pairs[1:]
    key = PRIMARY_KEYS.get(ai)
    if key is None:
        raise InvalidDigitalLink(f"({ai}) is not a GS1 primary key")
    if ai == "01":
        value = _gtin14(value)
    _validate(ai, value, key.format)
    _check_path(key, [q for q, _ in qualifiers])
    for q_ai, q_value in qualifiers:
        _validate(q_ai, q_value, QUALIFIERS[q_ai])
    attributes, other = [], []
    try:
        params = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidDigitalLink("the query string is not UTF-8") from None
    seen = {ai, *(q for q, _ in qualifiers)}
    for name, text in params:
        if name.isascii() and name.isdigit() and 2 <= len(name) <= 4:
            if name in PRIMARY_KEYS or name in QUALIFIERS:
                raise InvalidDigitalLink(f"({name}) belongs in the path, not the query")
            if name in seen:
                raise InvalidDigitalLink(f"({name}) appears more than once")
            seen.add(name)
            _validate(name, text, _attribute_format(name))
            attributes.append((name, text))
        else:
            other.append((name, text))
    return DigitalLink(key, value, tuple(qualifiers), tuple(attributes), tuple(other))


def _ai(text: str) -> str:
    if text.isascii() and text.isdigit():
        return text
    ai = ALIASES.get(text.lower())
    if ai is None:
        raise InvalidDigitalLink(f"{text!r} is not a GS1 application identifier")
    return ai


def _check_path(key: PrimaryKey, qualifiers: list[str]) -> None:
    if not qualifiers:
        return
    for allowed in key.paths:
        positions = [allowed.index(q) if q in allowed else -1 for q in qualifiers]
        if -1 not in positions and positions == sorted(set(positions)):
            return
    if not key.paths:
        raise InvalidDigitalLink(f"({key.ai}) takes no key qualifiers")
    orders = " or ".join("/".join(p) for p in key.paths)
    raise InvalidDigitalLink(
        f"({key.ai}) takes the key qualifiers {orders}, in that order; got {'/'.join(qualifiers)}"
    )
