"""The pure rules of data templates (resolver.templates): documents, versions, values, claims."""

from __future__ import annotations

import json
from typing import Any

import pytest

from resolver.templates import (
    TemplateError,
    check_versions,
    claims,
    parse_template,
    unique_clashes,
    validate,
)
from resolver.values import Data, HandleValue


def doc(version: int = 1, *items: dict[str, Any]) -> str:
    return json.dumps({"prefix": "88.100.1", "version": version, "items": list(items)})


SERIAL = {"name": "序列号", "key": "serial", "index": 2001, "type": "text", "unique": True}
WEIGHT = {"name": "重量", "key": "weight", "index": 2002, "type": "number", "precision": 2}


def value(index: int, type_: str, text: str) -> HandleValue:
    return HandleValue(index, type_, Data("string", text))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[]", "JSON object"),
        (json.dumps({"prefix": "88.100.1", "version": 0}), "version"),
        (doc(1, {**SERIAL, "required": "yes"}), "required"),
        (doc(1, {**WEIGHT, "precision": True}), "precision"),
        (doc(1, {**SERIAL, "pattern": "("}), "pattern"),
        (doc(1, {**SERIAL, "type": "enumeration"}), "choices"),
        (doc(1, {**SERIAL, "type": "list"}), "element"),
        (doc(1, {**SERIAL, "type": "list", "element": {"type": "list"}}), "type"),
        (doc(1, SERIAL, {**WEIGHT, "index": 2001}), "index"),
        (doc(1, {**SERIAL, "state": "gone"}), "state"),
    ],
)
def test_bad_documents_say_why(text: str, words: str) -> None:
    with pytest.raises(TemplateError, match=words):
        parse_template(text)


def test_versions_keep_items_and_each_other() -> None:
    v1 = parse_template(doc(1, SERIAL, WEIGHT))
    v2 = parse_template(doc(2, {**SERIAL, "state": "disabled"}, WEIGHT))
    check_versions([v1, v2], [v1])
    with pytest.raises(TemplateError, match="version 1"):
        check_versions([v2], [v1])
    with pytest.raises(TemplateError, match="weight"):
        check_versions([v1, parse_template(doc(2, SERIAL))], [v1])
    with pytest.raises(TemplateError, match="weight"):
        check_versions([v1, parse_template(doc(2, SERIAL, {**WEIGHT, "type": "text"}))], [])
    with pytest.raises(TemplateError, match="same template version"):
        check_versions(
            [v1, parse_template(doc(1, SERIAL, WEIGHT, {**WEIGHT, "index": 2003, "key": "w2"}))], []
        )


def test_validate_names_item_and_rule_and_skips_disabled_items() -> None:
    template = parse_template(doc(1, {**SERIAL, "required": True}, WEIGHT))
    assert validate(template, [value(2001, "serial", "A"), value(2002, "weight", "1.25")]) == []
    broken = validate(template, [value(2002, "WEIGHT", "1.255"), value(2003, "x", "y")])
    assert [(v.key, v.rule) for v in broken] == [
        ("serial", "required"),
        ("weight", "precision"),
        ("x", "unknown item"),
    ]
    assert "item weight (index 2002): precision" in str(broken[1])
    disabled = parse_template(doc(2, {**SERIAL, "required": True, "state": "disabled"}, WEIGHT))
    assert validate(disabled, [value(2001, "other", "anything")]) == []


def test_claims_and_their_clashes() -> None:
    template = parse_template(doc(1, SERIAL, WEIGHT))
    taken = claims("T", template, [value(2001, "serial", "A"), value(2002, "weight", "1")])
    assert taken == [("T", 2001, "A")]
    long = claims("T", template, [value(2001, "serial", "x" * 1000)])
    assert long[0][2].startswith("sha256:")
    clashes = unique_clashes(
        {("T", 2001, "A"): "K1"},
        [("K1", [("T", 2001, "A")]), ("K2", [("T", 2001, "A")]), ("K3", [("T", 2001, "B")]),
         ("K4", [("T", 2001, "B")])],
    )  # fmt: skip
    assert set(clashes) == {"K2", "K4"}


def test_searchable_items_are_indexed_and_stay_searchable() -> None:
    """Only enabled items flagged ``searchable`` are indexed; a later version may flag an item
    but not unflag it (records indexed before keep rows only a flagged template looks for)."""
    from resolver.search import entries, kinds_of, may_hold_entries

    plain = parse_template(doc(1, SERIAL, WEIGHT))
    assert not plain.indexed and kinds_of(plain) == {}
    flagged = parse_template(doc(2, {**SERIAL, "searchable": True}, WEIGHT))
    assert flagged.indexed and kinds_of(flagged) == {2001: "text"}
    values = [value(2001, "serial", "S-1"), value(2002, "weight", "1.25")]
    assert [e.idx for e in entries(values, kinds_of(flagged))] == [2001]
    assert entries(values, kinds_of(plain)) == ()
    check_versions([plain, flagged], [plain])
    unflagged = parse_template(doc(3, SERIAL, WEIGHT))
    with pytest.raises(TemplateError, match="not searchable"):
        check_versions([plain, flagged, unflagged], [plain, flagged])
    # Disabled, the item stays flagged (so the template is still indexed) but is not indexed.
    disabled = parse_template(doc(3, {**SERIAL, "searchable": True, "state": "disabled"}, WEIGHT))
    check_versions([plain, flagged, disabled], [plain, flagged])
    assert disabled.indexed and kinds_of(disabled) == {}
    with pytest.raises(TemplateError, match="'searchable' must be bool"):
        parse_template(doc(1, {**SERIAL, "searchable": "yes"}))
    # Whether a replaced record may hold rows a write must remove.
    named = value(1001, "TEMPLATE", "88.100.1/TEMPLATE.t")
    other = value(1001, "TEMPLATE", "88.100.1/TEMPLATE.u")
    assert not may_hold_entries(values, [named, *values], plain)  # the old one names none
    assert not may_hold_entries([named, *values], [named, *values], plain)
    assert may_hold_entries([named, *values], [named, *values], flagged)
    assert may_hold_entries([other, *values], [named, *values], plain)
    assert may_hold_entries([named, *values], values, None)
