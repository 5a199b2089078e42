"""Identifiers as DNS names: every form, reversibility for any UTF-8 suffix, DNS's limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.codecs import dns_records
from resolver.codecs.dns_names import (
    MAX_LABEL,
    MAX_NAME,
    NoDnsName,
    NotAnIdentifier,
    dns_name,
    handle_of,
    is_gtin14,
    normalise_zone,
)
from resolver.errors import InvalidHandle
from resolver.identifiers import fold
from resolver.values import Data, HandleValue

ZONE = "idis.example"


@pytest.mark.parametrize(
    ("handle", "name"),
    [
        ("88.100.1/ABC-123", "abc-123._.1.100.88.idis.example."),
        ("88.100.1/abc-123", "abc-123._.1.100.88.idis.example."),
        ("0.NA/88.100.1", "1.100.88.idis.example."),
        ("88.100.1/1.2.156.3", "3.156.2.1.oid.1.100.88.idis.example."),
        (
            "88.100.1/09506000134352",
            "2.5.3.4.3.1.0.0.0.6.0.5.9.0.gtin.1.100.88.idis.example.",
        ),
        # Not plain: spaces, case beyond ASCII, a leading hyphen, "--", the markers as segments.
        ("88.100.1/Größe 7", "b32--i5jmhnwdt5csany._.1.100.88.idis.example."),
        ("88.100.1/-a", "b32--fvaq._.1.100.88.idis.example."),
        ("88.100.1/a--b", "b32--iews2qq._.1.100.88.idis.example."),
        ("88.gtin/X", "x._.b32--i5kestq.88.idis.example."),
        # A GTIN with a wrong check digit, an OID with a leading zero: plain suffixes.
        ("88.100.1/09506000134353", "09506000134353._.1.100.88.idis.example."),
        ("88.100.1/1.02", "b32--gexdamq._.1.100.88.idis.example."),
    ],
)
def test_names_of_identifiers(handle: str, name: str) -> None:
    assert dns_name(handle, ZONE) == name
    assert handle_of(name, ZONE) == fold(handle)
    assert handle_of(name.upper(), ZONE + ".") == fold(handle)  # DNS is case-insensitive


@given(
    prefix=st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="./ "),
            min_size=1,
            max_size=8,
        ),
        min_size=1,
        max_size=3,
    ),
    suffix=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60),
)
@settings(max_examples=400, deadline=None)
def test_every_utf8_identifier_maps_back_to_its_key(prefix: list[str], suffix: str) -> None:
    handle = ".".join(prefix) + "/" + suffix
    try:
        name = dns_name(handle, ZONE)
    except NoDnsName:
        return  # too long for DNS: checked below that only long ones are refused
    labels = name.rstrip(".").split(".")
    assert all(0 < len(label) <= MAX_LABEL and label.isascii() for label in labels)
    assert sum(len(label) + 1 for label in labels) + 1 <= MAX_NAME
    assert name == name.lower()
    assert handle_of(name, ZONE) == fold(handle)


def test_identifiers_too_long_for_dns_have_no_name() -> None:
    assert handle_of(dns_name("88/" + "é" * 70, ZONE), ZONE) == "88/" + "é" * 70
    with pytest.raises(NoDnsName):
        dns_name("88/" + "é" * 90, ZONE)
    with pytest.raises(NoDnsName):
        dns_name("x" * 40 + "é/1", ZONE)  # a segment must fit one label
    with pytest.raises(InvalidHandle):
        dns_name("no-slash", ZONE)


@pytest.mark.parametrize(
    "name",
    [
        "a.b._.1.100.88",  # a plain suffix is one label
        "b32--mfrgg===._.1.100.88",  # not canonical base32
        "b32--gezdg._.1.100.88",  # "123" is plain, so this is not how it is written
        "2.5.3.4.3.1.0.0.0.6.0.5.9.0.0.gtin.1.100.88",  # 15 digits
        "3.5.3.4.3.1.0.0.0.6.0.5.9.0.gtin.1.100.88",
        "01.1.oid.88",  # leading zero
        "_",  # a marker with no prefix to its right
        "a_b._.88",
    ],
)
def test_names_in_no_form_are_refused(name: str) -> None:
    with pytest.raises(NotAnIdentifier):
        handle_of(f"{name}.{ZONE}", ZONE)


def test_structure_names_stand_for_no_identifier() -> None:
    for name in ("", "_.1.100.88.", "2.gtin.1.100.88.", "1.oid.88."):
        assert handle_of(f"{name}{ZONE}", ZONE) is None
    with pytest.raises(ValueError, match="not under"):
        handle_of("abc._.88.other.example", ZONE)


def test_zones_are_checked_and_normalised() -> None:
    assert normalise_zone("IDIS.Example.") == "idis.example"
    assert dns_name("88/X", "") == "x._.88."
    for bad in ("a..b", "é.example", "x" * 64 + ".example"):
        with pytest.raises(ValueError):
            normalise_zone(bad)


def test_gtin_check_digits() -> None:
    assert is_gtin14("09506000134352")
    assert not is_gtin14("09506000134353")
    assert not is_gtin14("9506000134352")


def _value(index: int, type_: str, text: str, permissions: int = 0b1110) -> HandleValue:
    return HandleValue(index, type_, Data("string", text), permissions=permissions)


def test_records_show_public_url_like_values() -> None:
    values = (
        _value(2, "URL.manual", "https://example.com/m!x"),
        _value(1, "URL", "https://example.com/p"),
        _value(3, "URL", "not a url"),
        _value(4, "EMAIL", "mailto:a@example.com"),
        _value(5, "URL", "https://secret.example", permissions=0b1100),
    )
    naptrs = dns_records.naptr_records(values)
    assert [(n.preference, n.service, n.regexp) for n in naptrs] == [
        (10, "E2U+idis:URL", "!^.*$!https://example.com/p!"),
        (11, "E2U+idis:URL-manual", "!^.*$!https://example.com/m\\!x!"),
    ]
    assert [u.target for u in dns_records.uri_records(values)] == [
        "https://example.com/p",
        "https://example.com/m!x",
    ]
    txts = dns_records.txt_records(values)
    assert [t[:2] for t in txts] == [
        [b"1", b"URL"],
        [b"2", b"URL.manual"],
        [b"3", b"URL"],
        [
            b"4",
            b"EMAIL",
        ],
    ]
    long = dns_records.txt_strings(_value(9, "DESC", "x" * 600))
    assert [len(s) for s in long] == [1, 4, 255, 255, 90]
