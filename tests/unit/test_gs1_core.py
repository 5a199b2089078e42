"""The pure GS1 core: Digital Link syntax, check digits, compressed URIs, choosing a link."""

from __future__ import annotations

import orjson
import pytest

from resolver.gs1.compressed import decompress, looks_compressed
from resolver.gs1.keys import InvalidDigitalLink, check_digit, is_digital_link_path, parse
from resolver.gs1.links import (
    Link,
    Verdict,
    accept_languages,
    choose,
    link_header,
    link_type_term,
    links_of,
    linkset,
)
from resolver.values import Data, HandleValue


@pytest.mark.parametrize(
    ("digits", "check"),
    [("0950600013435", 2), ("400638133393", 1), ("978034541891", 3), ("0000000000000", 0)],
)
def test_check_digits_of_known_numbers(digits: str, check: int) -> None:
    assert check_digit(digits) == check


def test_parse_canonical_forms() -> None:
    link = parse("/gtin/9506000134352/lot/AB%2FC/ser/S1", "17=260101&linkType=gs1:pip&x=1")
    assert link.path == "/01/09506000134352/10/AB%2FC/21/S1"
    assert link.attributes == (("17", "260101"),)
    assert link.other == (("linkType", "gs1:pip"), ("x", "1"))
    assert link.query() == "17=260101&x=1"
    assert [level.path for level in link.levels()] == [
        "/01/09506000134352/10/AB%2FC/21/S1",
        "/01/09506000134352/10/AB%2FC",
        "/01/09506000134352",
    ]
    # The indicator digit is no part of the company prefix; the longest candidate first.
    assert link.company_prefixes()[0] == "950600013435"
    assert link.company_prefixes()[-1] == "9506"
    assert parse("/8004/9506000ABC").company_prefixes()[0] == "9506000"
    assert parse("/01/09506000134352/21/S1").qualifiers == (("21", "S1"),)  # a skipped lot


@pytest.mark.parametrize(
    "path",
    [
        "/01/09506000134353",
        "/01/abc",
        "/99/1234",
        "/01/09506000134352/21/S/10/L",
        "/01/09506000134352/22/A/235/B",
        "/00/095060001343528907/21/S",
        "/8010/abc",  # CPID allows upper case only
        "/01/09506000134352/10/%C3%A9",  # not GS1's character set
    ],
)
def test_parse_refuses(path: str) -> None:
    with pytest.raises(InvalidDigitalLink):
        parse(path)


def test_routing_tests() -> None:
    assert is_digital_link_path("/01/09506000134352")
    assert is_digital_link_path("/gtin/09506000134352")
    assert not is_digital_link_path("/88.100.1/01")
    assert not is_digital_link_path("/01")
    assert looks_compressed("/ARHKVAdpQg")
    assert not looks_compressed("/healthz") and not looks_compressed("/a/b")


def test_decompress_the_standards_example() -> None:
    assert decompress("/ARHKVAdpQg").path == "/01/09780345418913"
    with pytest.raises(InvalidDigitalLink):
        decompress("/notcompressedatall")


def value(index: int, kind: str, data: str, permissions: int = 0b1110) -> HandleValue:
    return HandleValue(index, kind, Data("string", data), permissions=permissions)


def test_links_of_values() -> None:
    values = [
        value(5, "GS1.defaultLink", "https://e.com/second-default"),
        value(1, "URL", "https://e.com/not-a-link"),
        value(2, "GS1.pip", '{"href": "https://e.com/fr", "hreflang": "fr", "title": "Page"}'),
        value(3, "GS1.defaultLink", "https://e.com/default"),
        value(4, "GS1.epil", "ftp://e.com/refused"),
        value(6, "GS1.pip", "https://e.com/private", permissions=0b1100),
        value(7, "GS1.pip", "{not json"),
    ]
    found = links_of(values)
    assert [(x.term, x.href) for x in found] == [
        ("pip", "https://e.com/fr"),
        ("defaultLink", "https://e.com/default"),  # one default link: the first by index
    ]
    assert found[0].hreflang == ("fr",) and found[0].title == "Page"
    assert found[1].title == "defaultLink"


EN = Link("pip", "https://e.com/en", "EN", ("en",))
FR = Link("pip", "https://e.com/fr", "FR", ("fr-FR",))
DEFAULT = Link("defaultLink", "https://e.com/d", "D")
NEUTRAL = Link("epil", "https://e.com/leaflet", "L")


def test_choose() -> None:
    links = [DEFAULT, EN, FR, NEUTRAL]
    assert choose(links, None).link == DEFAULT
    assert choose(links, "epil").link == NEUTRAL
    assert choose(links, "recipeInfo").verdict is Verdict.MISSING
    assert choose(links, "pip", accept_languages("fr")).link == FR
    assert choose(links, "pip", accept_languages("de, en-US;q=0.7, fr;q=0.5")).link == EN
    undecided = choose(links, "pip", accept_languages("de"))
    assert undecided.verdict is Verdict.MULTIPLE and set(undecided.candidates) == {EN, FR}
    assert choose(links, "pip").verdict is Verdict.MULTIPLE
    assert choose([EN, FR], None).verdict is Verdict.MULTIPLE  # no default to fall back on
    assert choose([EN], None).link == EN
    multi = [DEFAULT, Link("defaultLinkMulti", "https://e.com/de", "DE", ("de",))]
    assert choose(multi, None, accept_languages("de-AT")).link.href == "https://e.com/de"
    assert choose(multi, None, accept_languages("ja")).link == DEFAULT
    contexts = [
        Link("pip", "https://e.com/a", "A", context="DE"),
        Link("pip", "https://e.com/b", "B"),
    ]
    assert choose(contexts, "pip", context="DE").link.href == "https://e.com/a"


def test_accept_languages_and_terms() -> None:
    assert accept_languages("en;q=0.2, fr , de;q=0") == [("fr", 1.0), ("en", 0.2)]
    assert link_type_term("gs1:pip") == link_type_term("https://gs1.org/voc/pip") == "pip"


def test_renderings() -> None:
    body = orjson.loads(linkset("https://r.example/01/09506000134352", [DEFAULT, EN, FR]))
    (context,) = body["linkset"]
    assert context["anchor"] == "https://r.example/01/09506000134352"
    assert context["https://gs1.org/voc/pip"] == [
        {"href": "https://e.com/en", "title": "EN", "hreflang": ["en"]},
        {"href": "https://e.com/fr", "title": "FR", "hreflang": ["fr-FR"]},
    ]
    header = link_header(
        [Link("pip", "https://e.com/ü", "Café")], [("https://r.example/01/1", "owl:sameAs")]
    ).decode("ascii")
    assert header == (
        '<https://r.example/01/1>; rel="owl:sameAs", '
        "<https://e.com/%C3%BC>; rel=\"gs1:pip\"; title*=UTF-8''Caf%C3%A9"
    )
