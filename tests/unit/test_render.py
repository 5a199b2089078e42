"""Selecting the values a query asks for, and the bytes of resolution and error answers."""

from __future__ import annotations

import orjson

from resolver.render import error, public_resolution, resolution, select
from resolver.values import SECRET_PERMISSIONS, Data, HandleValue, Record


def value(index: int, type_: str = "URL", permissions: int = 0b1110) -> HandleValue:
    return HandleValue(index, type_, Data("string", f"v{index}"), permissions=permissions)


def indexes(values: list[HandleValue]) -> list[int]:
    return [v.index for v in values]


VALUES = [
    value(100, "HS_ADMIN"),
    value(2, "URL.mirror"),
    value(1, "URL"),
    value(3, "EMAIL"),
    value(4, "URLX"),
    value(300, "HS_SECKEY", SECRET_PERMISSIONS),
]


def test_no_filter_gives_every_public_value_in_index_order() -> None:
    assert indexes(select(VALUES)) == [1, 2, 3, 4, 100]


def test_type_matches_exactly_and_case_insensitively() -> None:
    assert indexes(select(VALUES, types=["URL"])) == [1]
    assert indexes(select(VALUES, types=["url"])) == [1]


def test_type_ending_in_a_dot_matches_sub_types_and_the_base_type() -> None:
    assert indexes(select(VALUES, types=["URL."])) == [1, 2]


def test_sub_type_query_does_not_match_a_longer_type_name() -> None:
    assert 4 not in indexes(select(VALUES, types=["URL."]))


def test_index_selects_that_value() -> None:
    assert indexes(select(VALUES, indexes=[3])) == [3]


def test_several_filters_are_a_union() -> None:
    assert indexes(select(VALUES, types=["EMAIL", "HS_ADMIN"], indexes=[1, 4])) == [1, 3, 4, 100]


def test_filter_matching_nothing_gives_nothing() -> None:
    assert select(VALUES, types=["NOPE"], indexes=[999]) == []


def test_private_values_are_hidden_even_when_asked_for() -> None:
    assert select(VALUES, indexes=[300]) == []
    assert select(VALUES, types=["HS_SECKEY"]) == []


def test_private_values_are_shown_with_include_private() -> None:
    assert indexes(select(VALUES, indexes=[300], include_private=True)) == [300]
    assert indexes(select(VALUES, include_private=True)) == [1, 2, 3, 4, 100, 300]


def test_resolution_body_with_values() -> None:
    body = orjson.loads(resolution("88.100.1/abc", [value(1)]))
    assert list(body) == ["responseCode", "handle", "values"]
    assert body["responseCode"] == 1
    assert body["handle"] == "88.100.1/abc"
    assert [v["index"] for v in body["values"]] == [1]


def test_resolution_without_values_is_code_200_with_an_empty_list() -> None:
    body = orjson.loads(resolution("88.100.1/abc", []))
    assert body == {"responseCode": 200, "handle": "88.100.1/abc", "values": []}


def test_pretty_resolution_is_indented_and_equal() -> None:
    pretty = resolution("88.100.1/abc", [value(1)], pretty=True)
    assert b"\n  " in pretty
    assert orjson.loads(pretty) == orjson.loads(resolution("88.100.1/abc", [value(1)]))


def test_public_resolution_hides_private_values() -> None:
    record = Record("88.100.1/ADMIN", (value(300, "HS_SECKEY", SECRET_PERMISSIONS), value(1)))
    body = orjson.loads(public_resolution(record))
    assert [v["index"] for v in body["values"]] == [1]


def test_error_body() -> None:
    body = orjson.loads(error(100, "handle not found", "88.100.1/abc"))
    assert list(body) == ["responseCode", "handle", "message"]
    assert body == {"responseCode": 100, "handle": "88.100.1/abc", "message": "handle not found"}


def test_error_body_without_a_handle() -> None:
    assert orjson.loads(error(4, "bad request")) == {"responseCode": 4, "message": "bad request"}
