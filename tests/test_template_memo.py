"""A batch reads each template once: :meth:`registry.templates.TemplateCheck.checked` with a
memo fetches a template for its first record only, and checks every record against it."""

from __future__ import annotations

import json

import pytest

from registry.templates import TemplateCheck
from resolver.errors import InvalidValue
from resolver.identifiers import Handle, fold
from resolver.templates import Template
from resolver.values import Data, HandleValue, Record

NAME = "88.100.1/TEMPLATE.memo"
DOC = json.dumps(
    {
        "prefix": "88.100.1",
        "version": 1,
        "items": [{"name": "w", "key": "weight", "index": 2001, "type": "number"}],
    }
)


def values(weight: str) -> tuple[HandleValue, ...]:
    return (
        HandleValue(1001, "TEMPLATE", Data("string", NAME)),
        HandleValue(2001, "weight", Data("string", weight)),
    )


async def test_a_memo_reads_each_template_once() -> None:
    fetched: list[str] = []

    async def fetch(key: str) -> Record | None:
        fetched.append(key)
        return Record(NAME, (HandleValue(1, "IDIS.TEMPLATE", Data("string", DOC)),))

    check = TemplateCheck(fetch)
    memo: dict[str, Template] = {}
    for n in range(3):
        _, template = await check.checked(
            Handle.parse(f"88.100.1/R{n}"), values(str(n)), None, memo
        )
        assert template is not None and template.item_at(2001) is not None
    assert fetched == [fold(NAME)]
    # Still checked against it: a bad value is refused, memo or not.
    with pytest.raises(InvalidValue, match="weight"):
        await check.checked(Handle.parse("88.100.1/BAD"), values("heavy"), None, memo)
    # Without a memo, each record reads it (through the node's caches).
    await check.checked(Handle.parse("88.100.1/R9"), values("9"))
    assert len(fetched) == 2
