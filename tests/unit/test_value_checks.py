"""The input rules every door shares (resolver.values.check_value / check_values), as the REST
JSON codec applies them: what passes can be stored and answered; what cannot is refused with
a message saying why."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from resolver.codecs.json_api import parse_value, parse_values, render_value
from resolver.codecs.stored import encode_values
from resolver.errors import InvalidValue
from resolver.values import (
    MAX_DATA_DEPTH,
    MAX_SECRET_KEYS,
    MAX_TEXT_LENGTH,
    Data,
    HandleValue,
    Ref,
    check_value,
)

NOW = 1_768_084_906


def nested(levels: int) -> Any:
    """A JSON object ``levels`` deep."""
    inner: Any = "leaf"
    for _ in range(levels):
        inner = {"a": inner}
    return inner


def key_value(payload: Any) -> dict[str, Any]:
    return {"index": 300, "type": "HS_PUBKEY", "data": {"format": "key", "value": payload}}


def refused(raw: object) -> str:
    with pytest.raises(InvalidValue) as caught:
        parse_values(raw, NOW)
    return caught.value.message


@pytest.mark.parametrize("levels", [MAX_DATA_DEPTH + 1, 254, 300])
def test_deep_structured_data_is_refused(levels: int) -> None:
    assert f"deeper than {MAX_DATA_DEPTH}" in refused([key_value(nested(levels))])
    assert f"deeper than {MAX_DATA_DEPTH}" in refused([key_value({"x": [nested(levels)]})])


def test_data_as_deep_as_allowed_is_stored_and_answered() -> None:
    [value] = parse_values([key_value(nested(MAX_DATA_DEPTH - 1))], NOW)
    # The stored form and an answer wrap it further; both must still be writable.
    assert orjson.loads(encode_values((value,)))[0][3] == nested(MAX_DATA_DEPTH - 1)
    answer = orjson.dumps({"values": [render_value(value)]})
    assert orjson.loads(answer)["values"][0]["data"]["value"] == nested(MAX_DATA_DEPTH - 1)


@pytest.mark.parametrize("type_", ["URL\x00", "U\x01RL", "URL\n", "URL\x7f", "URL\x85", "\x00"])
def test_control_characters_in_types_are_refused(type_: str) -> None:
    message = refused({"index": 1, "type": type_, "data": "x"})
    assert "type holds the control character" in message


@pytest.mark.parametrize("text", ["a\x00b", "\x1b[31m", "\x08", "a\x0bb", "\x7f", "\x9f", "\ud800"])
def test_control_characters_in_data_are_refused(text: str) -> None:
    assert "control character" in refused({"index": 1, "type": "URL", "data": text})
    assert "control character" in refused([key_value({"servers": [{"name": text}]})])
    assert "control character" in refused([key_value({text: 1})])


def test_tabs_and_line_ends_in_data_are_kept() -> None:
    [value] = parse_values({"index": 1, "type": "DESC", "data": "a\tb\r\nc"}, NOW)
    assert value.data == Data("string", "a\tb\r\nc")


def test_control_characters_in_referenced_handles_are_refused() -> None:
    vlist = {"format": "vlist", "value": [{"handle": "88.1/\x00", "index": 1}]}
    assert "control character" in refused({"index": 1, "type": "HS_VLIST", "data": vlist})
    ref = {
        "index": 1,
        "type": "URL",
        "data": "x",
        "references": [{"handle": "88.1/a\x01", "index": 1}],
    }
    assert "control character" in refused(ref)


def test_overlong_text_is_refused() -> None:
    assert "longer than" in refused(
        {"index": 1, "type": "URL", "data": "x" * (MAX_TEXT_LENGTH + 1)}
    )
    assert parse_value({"index": 1, "type": "URL", "data": "x" * MAX_TEXT_LENGTH}, NOW)


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, float("inf"), float("nan")])
def test_numbers_no_store_can_write_are_refused(number: float) -> None:
    with pytest.raises(InvalidValue):
        check_value(HandleValue(1, "HS_SITE", Data("site", {"port": number})))


def test_secret_keys_per_handle_are_bounded() -> None:
    secrets = [{"index": 300 + n, "type": "HS_SECKEY", "data": f"s{n}"} for n in range(9)]
    assert parse_values(secrets[:MAX_SECRET_KEYS], NOW)
    assert f"at most {MAX_SECRET_KEYS}" in refused(secrets[: MAX_SECRET_KEYS + 1])
    lower = [{**s, "type": "hs_seckey"} for s in secrets[: MAX_SECRET_KEYS + 1]]
    assert f"at most {MAX_SECRET_KEYS}" in refused(lower)


def test_values_built_by_another_door_are_checked_alike() -> None:
    # A door that builds values itself (native Handle) calls check_value on them.
    with pytest.raises(InvalidValue):
        check_value(HandleValue(1, "URL", Data("string", b"bytes")))
    with pytest.raises(InvalidValue):
        check_value(HandleValue(1, "URL", Data("string", "x"), references=(Ref("a/\x00", 1),)))
    with pytest.raises(InvalidValue):
        check_value(HandleValue(1, "X", Data("nope", "x")))
    check_value(HandleValue(1, "URL", Data("string", "https://example.com/")))
