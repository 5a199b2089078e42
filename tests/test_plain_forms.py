"""registry.plain_forms: the compiled function against the Python one, byte for byte, and the
compiled one against records it was not made for (it must refuse them, never crash)."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import importer
from registry.importer import _plain_decoder
from registry.plain_forms import compiled_plain_forms, python_plain_forms

NOW = 1_768_084_906
ADMIN = orjson.dumps([100, "HS_ADMIN", "admin", ["0.NA/88.100.1", 200, 4095], 86400, NOW])
ADMIN_FORMS = {"88.100.1": ADMIN, "88.7": ADMIN.replace(b"88.100.1", b"88.7")}


def test_the_compiled_function_is_built() -> None:
    """`pip install -e .` builds it where a C compiler is at hand, as on every machine the
    tests run on: a build that failed quietly would make imports slow, and leave it untested."""
    assert compiled_plain_forms is not None
    assert importer.plain_forms is compiled_plain_forms


def _run(function: Any, records: list[Any], start: int = 0) -> tuple[int, list[str], list[bytes]]:
    texts: list[str] = []
    forms: list[bytes] = []
    stop = function(records, start, ADMIN_FORMS, NOW, texts, forms)
    return stop, texts, forms


def _both(records: list[Any], start: int = 0) -> tuple[int, list[str], list[bytes]]:
    """What both functions make of ``records``, asserted to be the same."""
    assert compiled_plain_forms is not None
    expected = _run(python_plain_forms, records, start)
    assert _run(compiled_plain_forms, records, start) == expected
    return expected


# Any text, now and then controls, quotes, backslashes, non-BMP characters, lone surrogates.
_TEXT = st.one_of(
    *[st.text(max_size=12)] * 5,
    st.sampled_from(["", '"', "\\", "\x00\x1f\x7f", "\u2028", "😀", "\ud800", "名称"]),
)
_VALUE = st.builds(
    SimpleNamespace,
    index=st.integers(1, 300) | st.integers(1, 2**31 - 1),
    type=_TEXT,
    data=_TEXT | st.builds(SimpleNamespace, value=_TEXT),
    ttl=st.integers(0, 2**31 - 1),
)
_VALUES = st.lists(_VALUE, max_size=6, unique_by=lambda value: value.index)
_RECORD = st.builds(
    SimpleNamespace,
    # Mostly of a known prefix, with a suffix.
    handle=st.sampled_from(
        ["88.100.1/x", "88.7/x", "88.100.1/", "88.100.1/x", "88.7/", "88.100.1", "99.1/", ""]
    ).flatmap(lambda head: _TEXT.map(lambda tail: head + tail)),
    # Mostly in increasing index order, as plain records are.
    values=st.one_of(
        *[_VALUES.map(lambda values: sorted(values, key=lambda v: v.index))] * 3,
        st.lists(_VALUE),
    ),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_RECORD | _RECORD | st.none(), max_size=8), st.just(0) | st.integers(0, 8))
def test_same_bytes_as_python(records: list[Any], start: int) -> None:
    stop, texts, forms = _both(records, start)
    assert len(texts) == len(forms) == max(stop - start, 0)
    for form in forms:
        orjson.loads(form)  # JSON, and UTF-8


def test_a_run_of_records_and_what_ends_it() -> None:
    def value(index: int, data: Any = "x") -> SimpleNamespace:
        return SimpleNamespace(index=index, type="URL", data=data, ttl=86400)

    def record(handle: str, *values: SimpleNamespace) -> SimpleNamespace:
        return SimpleNamespace(handle=handle, values=list(values))

    records = [
        record("88.100.1/a", value(1), value(2, SimpleNamespace(value="y"))),
        record("88.100.1/b", value(101)),
        record("88.100.1/c", value(1), value(100)),  # an HS_ADMIN of its own
        record("88.100.1/d", value(2), value(1)),
        None,
        record("88.100.1/", value(1)),
    ]
    assert _both(records) == (
        2,
        ["88.100.1/a", "88.100.1/b"],
        [
            b'[[1,"URL","string","x",86400,%d],[2,"URL","string","y",86400,%d],%s]'
            % (NOW, NOW, ADMIN),
            b'[%s,[101,"URL","string","x",86400,%d]]' % (ADMIN, NOW),
        ],
    )
    for start in range(2, len(records)):
        assert _both(records, start) == (start, [], [])
    assert _both(records, len(records) + 3) == (len(records), [], [])


def test_records_of_the_decoder_as_it_learns_types() -> None:
    """Records of several decoders (struct types made anew as types are learned: the compiled
    function must not read one type's fields where another's were) and of other classes."""
    lines = [
        orjson.dumps(
            {
                "handle": f"88.100.1/{n}",
                "values": [
                    {"index": 1, "type": "URL", "data": {"format": "string", "value": f"u{n}"}},
                    {"index": 7, "type": "DESC", "data": f"d{n}", "ttl": n},
                ],
            }
        )
        for n in range(3)
    ]
    records: list[Any] = []
    for types in (["URL", "DESC"], ["DESC", "URL", "EMAIL"], ["URL", "DESC", "X"]):
        decode = _plain_decoder(types)
        assert decode is not None
        records.extend(map(decode, lines))
    records.insert(
        4,
        SimpleNamespace(
            handle="88.7/n", values=[SimpleNamespace(index=1, type="URL", data="n", ttl=1)]
        ),
    )
    stop, texts, forms = _both(records)
    assert stop == len(records) and texts[4] == "88.7/n"
    assert forms[0] == forms[3] == forms[7]


class _Slotted:
    """Fields as members of the class, as msgspec's are."""

    __slots__ = ("data", "index", "ttl", "type")

    def __init__(self, index: Any, type: Any, data: Any, ttl: Any) -> None:
        self.index, self.type, self.data, self.ttl = index, type, data, ttl


def test_a_class_changed_after_it_was_read() -> None:
    """A field read from a member, then the class changed: read anew, as Python would."""
    assert compiled_plain_forms is not None
    cls = type("Value", (_Slotted,), {"__slots__": ()})
    record = SimpleNamespace(handle="88.100.1/a", values=[cls(1, "URL", "x", 5)])
    first = _run(compiled_plain_forms, [record])
    assert first[0] == 1 and b'"x"' in first[2][0]
    cls.data = property(lambda self: "changed")  # type: ignore[attr-defined]
    again = _run(compiled_plain_forms, [record])
    assert again == _run(python_plain_forms, [record])
    assert b'"changed"' in again[2][0]


class _Reentrant(type):
    """Looking a field up on such a class runs Python code: here another call of the function,
    in the middle of one (as another thread could make)."""

    def __getattr__(cls, name: str) -> Any:
        assert compiled_plain_forms is not None
        nested = SimpleNamespace(handle="88.100.1/n", values=[_Slotted(1, "URL", "nested", 2)])
        compiled_plain_forms([nested], 0, ADMIN_FORMS, NOW, [], [])
        raise AttributeError(name)


class _InstanceFields(metaclass=_Reentrant):
    def __init__(self, index: int, type: str, data: str, ttl: int) -> None:
        self.index, self.type, self.data, self.ttl = index, type, data, ttl


def test_a_call_in_the_middle_of_a_call() -> None:
    """Fields looked up while another call reads other classes' fields: each call reads its
    own objects' fields, never at the other's places."""
    record = SimpleNamespace(handle="88.100.1/a", values=[_InstanceFields(3, "URL", "outer", 9)])
    _both([record])
    assert b'[3,"URL","string","outer",9,' in _run(compiled_plain_forms, [record])[2][0]


_HOSTILE: list[Any] = [
    SimpleNamespace(handle=7, values=[]),
    SimpleNamespace(handle="88.100.1/a", values=(SimpleNamespace(),)),
    SimpleNamespace(handle="88.100.1/a", values=[SimpleNamespace()]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(2**70, "URL", "x", 1)]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(-(2**70), "URL", "x", 1)]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(1.0, "URL", "x", 1)]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(True, "URL", "x", 1)]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(1, b"URL", "x", 1)]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(1, "URL", 5, 1)]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(1, "URL", SimpleNamespace(), 1)]),
    SimpleNamespace(handle="88.100.1/a", values=[_Slotted(1, "URL", "x", "1")]),
    SimpleNamespace(handle="88.100.1/a", values=[object.__new__(_Slotted)]),
    SimpleNamespace(handle="88.100.1/a"),
    SimpleNamespace(values=[]),
    object(),
    "88.100.1/a",
]


@pytest.mark.parametrize("hostile", _HOSTILE, ids=range(len(_HOSTILE)))
def test_the_compiled_function_refuses_what_it_was_not_made_for(hostile: Any) -> None:
    """Not a plain record: the run ends before it, or an exception says why; no crash, and
    the records before it are taken."""
    assert compiled_plain_forms is not None
    good = SimpleNamespace(handle="88.100.1/g", values=[_Slotted(1, "URL", "x", 1)])
    texts: list[str] = []
    forms: list[bytes] = []
    try:
        stop = compiled_plain_forms([good, hostile, good], 0, ADMIN_FORMS, NOW, texts, forms)
    except (AttributeError, TypeError):
        pass
    else:
        assert stop == 1
    assert texts == ["88.100.1/g"] and len(forms) == 1


@pytest.mark.parametrize(
    "args",
    [
        ((), 0, ADMIN_FORMS, NOW, [], []),
        ([], -1, ADMIN_FORMS, NOW, [], []),
        ([], 0, {"88.100.1": "not bytes"}, NOW, [], []),
        ([], 0, ADMIN_FORMS, 2**64, [], []),
        ([], 0, ADMIN_FORMS, NOW, (), []),
    ],
)
def test_the_compiled_function_checks_its_arguments(args: tuple[Any, ...]) -> None:
    assert compiled_plain_forms is not None
    record = SimpleNamespace(handle="88.100.1/a", values=[_Slotted(1, "URL", "x", 1)])
    if isinstance(args[0], list):
        args = ([record], *args[1:])
    with pytest.raises((TypeError, ValueError, OverflowError)):
        compiled_plain_forms(*args)


def test_no_reference_is_leaked() -> None:
    assert compiled_plain_forms is not None
    data = "a string of its own " * 3
    record = SimpleNamespace(handle="88.100.1/a", values=[_Slotted(1, "URL", data, 1)])
    records = [record, record, None]
    before = sys.getrefcount(data), sys.getrefcount(record)
    for _ in range(1000):
        _run(compiled_plain_forms, records)
    assert (sys.getrefcount(data), sys.getrefcount(record)) == before
