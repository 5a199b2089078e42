"""Identifiers as DNS names under a zone, and back (the DNS front end's addressing).

DNS names are case-insensitive ASCII labels of at most 63 bytes, a name at most 255 bytes on
the wire; identifiers are UTF-8 of any length with ASCII case folded (the *key* is upper-cased,
:func:`resolver.identifiers.fold`).  The mapping carries the folded key, so it is reversible for
every identifier whose name fits: ``handle_of(name_of(h)) == fold(h)``.  Names are read from
the right, the zone first, so the hierarchy of prefixes is the hierarchy of names and a prefix
delegated to another node is a zone cut (``88.100.7`` -> ``7.100.88.<zone>``).

===================================  =====================================================
identifier                           name
===================================  =====================================================
``0.NA/88.100.1`` (a prefix record)  ``1.100.88.<zone>``: segments reversed, ORS style
``88.100.1/ABC-123``                 ``abc-123._.1.100.88.<zone>``: ``_`` ends the prefix
``88.100.1/1.2.156.3``  (an OID)     ``3.156.2.1.oid.1.100.88.<zone>``: arcs reversed (X.672)
``88.100.1/09506000134352`` (GTIN)   ``2.5.3.4.3.1.0.0.0.6.0.5.9.0.gtin.1.100.88.<zone>``:
                                     the GTIN-14's digits reversed, one label each (ONS 2.0)
``88.100.1/Größe 7``                 ``b32--...._.1.100.88.<zone>``: see below
===================================  =====================================================

Labels.  A segment or suffix is carried as one *plain* label when, folded and lower-cased, it is
a host-name label: ``[a-z0-9-]``, 1-63 bytes, no ``-`` at either end, no ``--`` anywhere (so
``xn--`` and our own marker never occur in a plain label).  Anything else is carried *encoded*:
``b32--`` and the RFC 4648 base32 of its folded UTF-8 bytes, lower case, without padding.  An
encoded suffix longer than one label continues in further labels to the left of the first
(``<rest>.<rest>.b32--<first>._...`` reads right to left like the zone); an encoded prefix
segment must fit one label (36 bytes).  The prefix segments ``oid`` and ``gtin`` are always
encoded, so that the markers ``_``, ``oid`` and ``gtin`` never stand for a segment.  Base32
survives DNS case folding; a plain label's case comes back as the key's upper case.

A name decodes only in its canonical form (a plain-looking text always plain, an OID without
leading zeros, a GTIN with its check digit), so one identifier has one name per form; the
identifier's canonical name is its OID or GTIN form when its suffix is one, else the ``_``
form.  Identifiers whose name would pass 255 bytes have none (:class:`NoDnsName`).

Names under the zone that are not identifiers are *structure*: the apex, prefix names without a
prefix record (``100.88.<zone>`` when ``0.NA/88.100`` is not here) and the marker names
(``_.1.100.88.<zone>``).  The DNS front end answers those with no data rather than NXDOMAIN,
since names below them exist (RFC 8020).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from resolver.identifiers import PREFIX_HANDLE_PREFIX, Handle, fold

MAX_LABEL = 63
MAX_NAME = 255
"""Bytes of a name on the wire: one length byte per label, the labels, the root's zero byte."""
MARKER = "b32--"
SUFFIX_MARK = "_"
OID_MARK = "oid"
GTIN_MARK = "gtin"
_MARKS = (SUFFIX_MARK, OID_MARK, GTIN_MARK)
_FIRST_CHUNK = MAX_LABEL - len(MARKER)

_PLAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ARC = re.compile(r"0|[1-9][0-9]{0,19}")
_DIGIT = re.compile(r"[0-9]")


class NoDnsName(ValueError):
    """The identifier has no name under the zone (its name would be too long)."""


class NotAnIdentifier(ValueError):
    """The name is under the zone but names no identifier."""


def normalise_zone(zone: str) -> str:
    """``zone`` lower-cased without the root dot; raises ValueError if it is no DNS name."""
    text = zone.strip().rstrip(".").lower()
    labels = text.split(".") if text else []
    if any(not label or len(label.encode("ascii", "replace")) > MAX_LABEL for label in labels):
        raise ValueError(f"{zone!r} is not a DNS zone name")
    if not text.isascii() or _wire_length(labels) > MAX_NAME - 20:
        raise ValueError(f"{zone!r} is not an ASCII DNS zone name short enough to hold names")
    return text


def _wire_length(labels: list[str]) -> int:
    return sum(len(label.encode("utf-8")) + 1 for label in labels) + 1


def _plain(text: str) -> str | None:
    """``text`` as a plain label, or None if it must be encoded."""
    label = text.lower()
    if label.isascii() and "--" not in label and _PLAIN.fullmatch(label):
        return label
    return None


def _b32(text: str) -> str:
    return base64.b32encode(text.encode("utf-8")).decode("ascii").rstrip("=").lower()


def _unb32(data: str) -> str:
    padded = data.upper() + "=" * (-len(data) % 8)
    try:
        text = base64.b32decode(padded).decode("utf-8")
    except (binascii.Error, ValueError):
        raise NotAnIdentifier(f"{data!r} is not base32 of UTF-8") from None
    if _b32(text) != data:
        raise NotAnIdentifier(f"{data!r} is not canonical base32")
    return text


def segment_label(segment: str) -> str:
    """The label of one prefix segment (folded by the caller)."""
    plain = _plain(segment)
    if plain is not None and plain not in _MARKS:
        return plain
    label = MARKER + _b32(segment)
    if len(label) > MAX_LABEL:
        raise NoDnsName(f"prefix segment {segment!r} is longer than one DNS label can carry")
    return label


def _segment_of(label: str) -> str:
    if label.startswith(MARKER):
        text = _unb32(label[len(MARKER) :])
        if segment_label(text) != label:
            raise NotAnIdentifier(f"{label!r} is not how that segment is written")
        return text
    if _plain(label) != label or label in _MARKS:
        raise NotAnIdentifier(f"{label!r} is not a prefix segment label")
    return fold(label)


def prefix_labels(prefix: str) -> list[str]:
    """The labels of ``prefix``, most specific first (``88.100.1`` -> ``1, 100, 88``)."""
    return [segment_label(s) for s in reversed(fold(prefix).split("."))]


def suffix_labels(suffix: str) -> list[str]:
    """The labels carrying a (folded) suffix in the ``_`` form, leftmost first."""
    plain = _plain(suffix)
    if plain is not None:
        return [plain]
    data = _b32(suffix)
    first, rest = MARKER + data[:_FIRST_CHUNK], data[_FIRST_CHUNK:]
    more = [rest[i : i + MAX_LABEL] for i in range(0, len(rest), MAX_LABEL)]
    return [*reversed(more), first]


def _suffix_of(labels: list[str]) -> str:
    """The suffix carried by ``labels`` (leftmost first), checked to be canonical."""
    if not labels[-1].startswith(MARKER):
        if len(labels) != 1 or _plain(labels[0]) != labels[0]:
            raise NotAnIdentifier("a plain suffix is one host-name label")
        return fold(labels[0])
    data = labels[-1][len(MARKER) :] + "".join(reversed(labels[:-1]))
    suffix = _unb32(data)
    if suffix_labels(suffix) != labels:
        raise NotAnIdentifier("not how that suffix is written")
    return suffix


def is_oid(text: str) -> bool:
    """Dotted decimal arcs without leading zeros, at least two of them."""
    arcs = text.split(".")
    return len(arcs) >= 2 and all(_ARC.fullmatch(arc) for arc in arcs)


def gtin_check_digit(body: str) -> int:
    """The GS1 check digit of the digits ``body`` (weights 3, 1, ... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def is_gtin14(text: str) -> bool:
    """Fourteen digits whose last is the check digit of the others."""
    return (
        len(text) == 14
        and text.isascii()
        and text.isdigit()
        and gtin_check_digit(text[:-1]) == int(text[-1])
    )


def name_labels(handle: str) -> list[str]:
    """The labels (leftmost first, without the zone) of the canonical name of ``handle``."""
    parsed = Handle.parse(handle)
    prefix, suffix = fold(parsed.prefix), fold(parsed.suffix)
    if prefix == PREFIX_HANDLE_PREFIX:
        return prefix_labels(suffix)
    under = prefix_labels(prefix)
    if is_gtin14(suffix):
        return [*reversed(suffix), GTIN_MARK, *under]
    if is_oid(suffix):
        return [*reversed(suffix.split(".")), OID_MARK, *under]
    return [*suffix_labels(suffix), SUFFIX_MARK, *under]


def dns_name(handle: str, zone: str) -> str:
    """The canonical name of ``handle`` under ``zone``, absolute (with the root dot).

    Raises :class:`resolver.errors.InvalidHandle` for no identifier, :class:`NoDnsName` when
    the name would be longer than DNS allows.
    """
    zone = normalise_zone(zone)
    labels = name_labels(handle) + (zone.split(".") if zone else [])
    if _wire_length(labels) > MAX_NAME:
        raise NoDnsName(f"the DNS name of {handle!r} would be longer than {MAX_NAME} bytes")
    return ".".join(labels) + "."


@dataclass(frozen=True, slots=True)
class Place:
    """What a name under the zone is.

    ``key`` is the folded identifier the name stands for, or None for structure; ``prefix``
    the folded prefix its labels name (``""`` at the apex): the prefix whose delegation decides
    who answers for the name.
    """

    key: str | None
    prefix: str


def place_of(labels: list[str]) -> Place:
    """What the labels below the zone (leftmost first, lower case) name.

    Raises :class:`NotAnIdentifier` if they follow none of the forms.
    """
    segments: list[str] = []
    for at in range(len(labels) - 1, -1, -1):
        label = labels[at]
        if label in _MARKS:
            if not segments:
                raise NotAnIdentifier("a marker label needs a prefix to its right")
            prefix = ".".join(segments)
            left = labels[:at]
            if not left or _on_the_way(label, left):
                return Place(None, prefix)
            return Place(f"{prefix}/{_marked_suffix(label, left)}", prefix)
        segments.append(_segment_of(label))
    prefix = ".".join(segments)
    return Place(f"{PREFIX_HANDLE_PREFIX}/{prefix}" if prefix else None, prefix)


def _marked_suffix(mark: str, left: list[str]) -> str:
    if mark == SUFFIX_MARK:
        return _suffix_of(left)
    if mark == OID_MARK:
        oid = ".".join(reversed(left))
        if not is_oid(oid):
            raise NotAnIdentifier("labels under oid are the arcs of an OID, reversed")
        return oid
    gtin = "".join(reversed(left))
    if len(left) != 14 or not all(_DIGIT.fullmatch(d) for d in left) or not is_gtin14(gtin):
        raise NotAnIdentifier("labels under gtin are the 14 digits of a GTIN, reversed")
    return gtin


def _on_the_way(mark: str, left: list[str]) -> bool:
    """Whether the labels left of ``mark`` are only the start of a name: fewer than 14 digits
    under ``gtin``, one arc under ``oid`` (an OID has two at least)."""
    if mark == GTIN_MARK:
        return len(left) < 14 and all(_DIGIT.fullmatch(d) for d in left)
    return mark == OID_MARK and len(left) == 1 and _ARC.fullmatch(left[0]) is not None


def handle_of(name: str, zone: str) -> str | None:
    """The folded identifier that ``name`` (absolute or not) stands for under ``zone``, or
    None if it stands for none; raises :class:`NotAnIdentifier` for a name under the zone in
    none of the forms, ValueError for a name outside the zone."""
    zone = normalise_zone(zone)
    text = name.strip().rstrip(".").lower()
    if zone and text != zone and not text.endswith("." + zone):
        raise ValueError(f"{name!r} is not under {zone}")
    below = text[: len(text) - len(zone)].rstrip(".") if zone else text
    return place_of(below.split(".") if below else []).key
