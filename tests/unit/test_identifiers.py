"""Handle identifiers: parsing, validation, case folding and prefix derivation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver.errors import InvalidHandle
from resolver.identifiers import (
    MAX_HANDLE_BYTES,
    Handle,
    fold,
    parent_prefixes,
    prefix_handle,
    validate_prefix,
)


def test_parse_splits_prefix_and_suffix() -> None:
    handle = Handle.parse("88.100.1/ABC123")
    assert (handle.text, handle.prefix, handle.suffix) == ("88.100.1/ABC123", "88.100.1", "ABC123")


def test_suffix_may_contain_slashes() -> None:
    handle = Handle.parse("88.100.1/lot/7/unit")
    assert handle.prefix == "88.100.1"
    assert handle.suffix == "lot/7/unit"


def test_unicode_handles_are_accepted() -> None:
    handle = Handle.parse("88.100.1/产品-é-ß")
    assert handle.suffix == "产品-é-ß"


def test_key_upper_cases_ascii_letters_only() -> None:
    handle = Handle.parse("88.100.abc/abc-ß-é-ÿ")
    assert handle.key == "88.100.ABC/ABC-ß-é-ÿ"
    assert handle.prefix_key == "88.100.ABC"
    assert handle.text == "88.100.abc/abc-ß-é-ÿ"  # the display keeps the registered case


def test_fold_leaves_non_ascii_letters_unchanged() -> None:
    assert fold("ß") == "ß"  # str.upper would give "SS"
    assert fold("é") == "é"
    assert fold("abc") == "ABC"
    assert fold("88.100.1/straße-ﬀ-é-abc") == "88.100.1/STRAßE-ﬀ-é-ABC"


ASCII_LETTERS_UP = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@given(st.text() | st.text(alphabet=st.characters(max_codepoint=127)))
def test_fold_upper_cases_ascii_letters_and_nothing_else(text: str) -> None:
    # Whichever path fold takes (str.upper for ASCII text, a translation otherwise).
    assert fold(text) == text.translate(ASCII_LETTERS_UP)


def test_handles_differing_in_ascii_case_share_a_key() -> None:
    assert Handle.parse("88.100.1/abc").key == Handle.parse("88.100.1/ABC").key


def test_handles_differing_in_non_ascii_case_have_different_keys() -> None:
    assert Handle.parse("88.100.1/é").key != Handle.parse("88.100.1/É").key


def test_prefix_record_is_recognised_in_any_case() -> None:
    assert Handle.parse("0.na/88.100.1").is_prefix_record
    assert Handle.parse("0.NA/88.100.1").is_prefix_record
    assert not Handle.parse("88.100.1/0.NA").is_prefix_record


@pytest.mark.parametrize(
    "text",
    [
        "",
        "88.100.1",
        "/ABC",
        "88.100.1/",
        "88..1/ABC",
        ".88/ABC",
        "88./ABC",
        "88 100/ABC",
        "88.100.1/AB\nC",
        "88.100.1/AB\x00C",
        "88.100.1/AB\x7fC",
        "88.100.1/AB\tC",
    ],
)
def test_invalid_handles_are_rejected_with_code_102(text: str) -> None:
    with pytest.raises(InvalidHandle) as caught:
        Handle.parse(text)
    assert caught.value.code == 102


def test_handle_of_exactly_the_byte_limit_is_accepted() -> None:
    prefix = "88.100.1/"
    text = prefix + "a" * (MAX_HANDLE_BYTES - len(prefix))
    assert Handle.parse(text).text == text


def test_handle_over_the_byte_limit_is_rejected() -> None:
    prefix = "88.100.1/"
    with pytest.raises(InvalidHandle):
        Handle.parse(prefix + "a" * (MAX_HANDLE_BYTES - len(prefix) + 1))


def test_byte_limit_counts_utf8_bytes_not_characters() -> None:
    prefix = "88.100.1/"
    chars = (MAX_HANDLE_BYTES - len(prefix)) // 3 + 1  # "产" is 3 bytes in UTF-8
    with pytest.raises(InvalidHandle):
        Handle.parse(prefix + "产" * chars)


def test_lone_surrogate_is_rejected() -> None:
    with pytest.raises(InvalidHandle):
        Handle.parse("88.100.1/AB\ud800C")


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidHandle):
        Handle.parse(None)  # type: ignore[arg-type]


def test_empty_suffix_is_allowed_only_when_asked() -> None:
    handle = Handle.parse("88.100.1/", allow_empty_suffix=True)
    assert (handle.prefix, handle.suffix) == ("88.100.1", "")
    with pytest.raises(InvalidHandle):
        Handle.parse("88.100.1/")


def test_allow_empty_suffix_still_requires_a_prefix() -> None:
    with pytest.raises(InvalidHandle):
        Handle.parse("/", allow_empty_suffix=True)


def test_validate_prefix_returns_a_valid_prefix() -> None:
    assert validate_prefix("88.100.1") == "88.100.1"


@pytest.mark.parametrize("prefix", ["", "88..1", "88/1", "88 1", "88.\x01"])
def test_validate_prefix_rejects_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidHandle):
        validate_prefix(prefix)


def test_parent_prefixes_most_specific_first() -> None:
    assert parent_prefixes("88.100.1") == ["88.100.1", "88.100", "88"]


def test_parent_prefixes_of_a_single_segment() -> None:
    assert parent_prefixes("88") == ["88"]


def test_prefix_handle_names_the_prefix_record() -> None:
    assert prefix_handle("88.100.1") == "0.NA/88.100.1"
    assert Handle.parse(prefix_handle("88.100.1")).is_prefix_record
