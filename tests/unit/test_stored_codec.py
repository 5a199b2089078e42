"""The compact stored form of values: every value survives encode → decode unchanged."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from resolver.codecs.stored import decode_values, encode_values
from resolver.values import DEFAULT_PERMISSIONS, AdminRef, Data, HandleValue, Ref

MAX_INDEX = 2**32 - 1
refs = st.builds(Ref, st.text(), st.integers(0, MAX_INDEX))
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text())
json_objects = st.dictionaries(
    st.text(), st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
)
datas = st.one_of(
    st.builds(Data, st.sampled_from(["string", "base64"]), st.text()),
    st.builds(
        Data,
        st.just("admin"),
        st.builds(AdminRef, st.text(), st.integers(0, MAX_INDEX), st.integers(0, 0xFFF)),
    ),
    st.builds(Data, st.just("vlist"), st.lists(refs, max_size=4).map(tuple)),
    st.builds(Data, st.sampled_from(["site", "key"]), st.one_of(json_objects, st.text())),
)
values = st.builds(
    HandleValue,
    index=st.integers(1, MAX_INDEX),
    type=st.text(min_size=1),
    data=datas,
    ttl=st.integers(-(2**40), 2**40),
    ttl_absolute=st.booleans(),
    timestamp=st.integers(0, 2**40),
    permissions=st.integers(0, 15),
    references=st.lists(refs, max_size=3).map(tuple),
)


@given(st.lists(values, max_size=6))
def test_decode_of_encode_is_identity(items: list[HandleValue]) -> None:
    assert decode_values(encode_values(items)) == tuple(items)


@given(st.lists(values, max_size=3))
def test_decode_accepts_text_as_well_as_bytes(items: list[HandleValue]) -> None:
    assert decode_values(encode_values(items).decode("utf-8")) == tuple(items)


def test_defaults_are_left_out_of_the_stored_row() -> None:
    value = HandleValue(1, "URL", Data("string", "x"), timestamp=5)
    assert orjson.loads(encode_values([value])) == [[1, "URL", "string", "x", 86400, 5]]


def test_non_defaults_go_into_the_trailing_object() -> None:
    value = HandleValue(
        1,
        "URL",
        Data("string", "x"),
        ttl=99,
        ttl_absolute=True,
        timestamp=5,
        permissions=0b1010,
        references=(Ref("88/B", 2),),
    )
    row = orjson.loads(encode_values([value]))[0]
    assert row[6] == {"a": 1, "p": 0b1010, "r": [["88/B", 2]]}
    assert DEFAULT_PERMISSIONS != 0b1010


def test_admin_and_vlist_payloads_are_compact_arrays() -> None:
    admin = HandleValue(100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88", 200, 0xFFF)))
    vlist = HandleValue(200, "HS_VLIST", Data("vlist", (Ref("88/A", 300),)))
    rows = orjson.loads(encode_values([admin, vlist]))
    assert rows[0][3] == ["0.NA/88", 200, 0xFFF]
    assert rows[1][3] == [["88/A", 300]]


def test_empty_list_round_trips() -> None:
    assert decode_values(encode_values([])) == ()
