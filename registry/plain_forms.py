"""The stored forms of plain JSONL records: the hot loop of ``idis import``.

:func:`plain_forms` is compiled from ``_plain_forms.c`` when the package is installed with a C
compiler at hand (``pip install -e .`` builds it), and is :func:`python_plain_forms` otherwise:
the two take the same records and give the same bytes, which ``tests/test_plain_forms.py``
checks.  In Python, a record's values become tuples that orjson then walks; compiled, the
stored JSON is written straight from the decoded record: with the Python version, a whole
import takes about a quarter more CPU (``loadtests/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from resolver.values import ADMIN_INDEX


def python_plain_forms(
    records: Sequence[Any],
    start: int,
    admin_forms: dict[str, bytes],
    now: int,
    texts: list[str],
    forms: list[bytes],
) -> int:
    """Append to ``texts`` and ``forms`` the handles and stored data of ``records[start:]``
    up to the first one that is not plain; its position (``len(records)`` if none).

    ``records`` are those of :func:`registry.importer._plain_decoder` (None where it refused a
    line): a record has a ``handle`` and a list of ``values``, a value an int ``index`` and
    ``ttl``, a str ``type`` and a ``data`` that is a str or has one as its ``value``.  A plain
    record's handle has a suffix and a prefix in ``admin_forms``, which maps it to the stored
    form of the default HS_ADMIN of its handles; its values are in increasing index order, none
    at ADMIN_INDEX, and its strings can be UTF-8.  Its stored data are its values as stored
    rows, ``[index, type, "string", data, ttl, now]``, with that HS_ADMIN in its place by index.
    """
    dumps = orjson.dumps
    fragments: dict[str, orjson.Fragment] = {}
    admin_index = ADMIN_INDEX  # a local, cheaper than a global to read for each value
    for position in range(start, len(records)):
        record = records[position]
        if record is None:
            return position
        text: str = record.handle
        prefix, _, suffix = text.partition("/")
        form = admin_forms.get(prefix)
        if form is None or not suffix:
            return position
        admin = fragments.get(prefix)
        if admin is None:
            admin = fragments[prefix] = orjson.Fragment(form)
        stored: list[Any] = []
        append = stored.append
        last = 0
        for value in record.values:
            index = value.index
            if index <= last:
                return position  # out of order, or twice
            if index >= admin_index and last < admin_index:
                if index == admin_index:
                    return position  # an HS_ADMIN of its own
                append(admin)
            data = value.data
            if type(data) is not str:
                data = data.value  # {"format": "string", "value": ...}
            append((index, value.type, "string", data, value.ttl, now))
            last = index
        if last < admin_index:
            append(admin)
        try:
            form = dumps(stored)
        except orjson.JSONEncodeError:  # a lone surrogate, which UTF-8 cannot hold
            return position
        texts.append(text)
        forms.append(form)
    return len(records)


compiled_plain_forms: Callable[..., int] | None
try:
    from registry._plain_forms import plain_forms as compiled_plain_forms
except ImportError:  # pragma: no cover - built wherever a C compiler was at hand
    compiled_plain_forms = None

plain_forms: Callable[[Sequence[Any], int, dict[str, bytes], int, list[str], list[bytes]], int] = (
    compiled_plain_forms or python_plain_forms
)
