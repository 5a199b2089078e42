"""The search part of the RecordStore contract (``Record.entries``, ``search``), run against
every backend (memory, SQLite, PostgreSQL): what a write indexes, in its own transaction."""

from __future__ import annotations

from dataclasses import replace

import pytest

from resolver.identifiers import fold
from resolver.ports import RecordStore
from resolver.search import Query, bound, entries, has_entries, kinds_of, page_of
from resolver.templates import UniqueValueTaken
from resolver.values import Data, HandleValue, Record

KINDS = {2001: "text", 2002: "number", 2003: "date"}


def item_record(handle: str, serial: str, weight: str, made: str, *, public: bool = True) -> Record:
    values = (
        HandleValue(1, "URL", Data("string", f"https://example.com/{serial}")),
        HandleValue(2001, "serialNumber", Data("string", serial)),
        HandleValue(2002, "weight", Data("string", weight)),
        HandleValue(2003, "madeOn", Data("string", made), permissions=0b1110 if public else 0b1100),
    )
    return Record(handle, values).with_entries(entries(values, KINDS))


async def search(store: RecordStore, **fields: object) -> list[str]:
    """Every handle the search finds, following the pages."""
    query = Query(fold(str(fields.pop("prefix", "88.100.1"))), str(fields.pop("type")), **fields)  # type: ignore[arg-type]
    found: list[str] = []
    for _ in range(100):
        hits = await store.search(query)
        handles, following = page_of(hits, query.limit)
        found += handles
        if following is None:
            return found
        query = replace(query, after=hits[query.limit - 1].position)
    raise AssertionError("more than 100 pages")


async def seed(store: RecordStore) -> None:
    rows = [
        ("88.100.1/A", "AB-1", "10", "2026-01-05"),
        ("88.100.1/B", "AB-2", "12.5", "2026-02-01"),
        ("88.100.1/C", "XY-3", "99", "2025-12-31"),
        ("88.100.2/D", "AB-4", "11", "2026-01-10"),
        ("88.100.1.7/E", "AB-5", "11", "2026-01-10"),
    ]
    items = [(fold(h), item_record(h, s, w, d), None) for h, s, w, d in rows]
    assert await store.put_many(items) == [True] * len(rows)


async def test_exact_prefix_and_range(store: RecordStore) -> None:
    await seed(store)
    assert await search(store, type="SERIALNUMBER", exact="AB-2") == ["88.100.1/B"]
    assert await search(store, type="SERIALNUMBER", starts="AB-") == ["88.100.1/A", "88.100.1/B"]
    # Ordered by (value, key): the derived prefix's AB-5 comes last; 88.100.2 stays out.
    assert await search(store, type="SERIALNUMBER", starts="AB-", subtree=True) == [
        "88.100.1/A",
        "88.100.1/B",
        "88.100.1.7/E",
    ]
    assert await search(store, type="WEIGHT", low=10.0, high=12.5) == ["88.100.1/A", "88.100.1/B"]
    assert await search(store, type="WEIGHT", low=11.0) == ["88.100.1/B", "88.100.1/C"]
    # Text items are not numbers, whatever they look like.
    assert await search(store, type="SERIALNUMBER", low=0.0) == []


async def test_dates_range_and_private_values(store: RecordStore) -> None:
    await store.put(
        fold("88.100.1/P"), item_record("88.100.1/P", "P-1", "1", "2026-01-07", public=False), None
    )
    await seed(store)
    low, high = bound("2026-01-01", "min"), bound("2026-01-31", "max")
    assert await search(store, type="MADEON", low=low, high=high) == ["88.100.1/A"]
    assert await search(store, type="MADEON", low=low, high=high, private=True) == [
        "88.100.1/A",
        "88.100.1/P",
    ]


async def test_paging_is_keyset(store: RecordStore) -> None:
    handles = [f"88.100.1/N{n:03d}" for n in range(25)]
    items = [
        (fold(h), item_record(h, "SAME", str(n), "2026-01-01"), None) for n, h in enumerate(handles)
    ]
    assert await store.put_many(items) == [True] * 25
    assert await search(store, type="SERIALNUMBER", exact="SAME", limit=7) == handles
    by_weight = await search(store, type="WEIGHT", low=0.0, limit=4)
    assert by_weight == sorted(handles, key=lambda h: int(h[-3:]))


async def test_rewrite_and_delete_update_results(store: RecordStore) -> None:
    await seed(store)
    key = fold("88.100.1/A")
    current = await store.get(key)
    assert current is not None
    assert await store.put(
        key, item_record("88.100.1/A", "ZZ-9", "10", "2026-01-05"), current.version
    )
    assert await search(store, type="SERIALNUMBER", exact="AB-1") == []
    assert await search(store, type="SERIALNUMBER", exact="ZZ-9") == ["88.100.1/A"]
    # A record without entries (None) leaves them; an empty tuple removes them.
    plain = Record("88.100.1/A", (HandleValue(1, "URL", Data("string", "https://x")),))
    assert await store.put(key, plain.with_entries(()), current.version + 1)
    assert await search(store, type="SERIALNUMBER", exact="ZZ-9") == []
    assert await store.delete(fold("88.100.1/B"), 1)
    assert await search(store, type="SERIALNUMBER", starts="AB") == []


async def test_refused_write_leaves_no_entries(store: RecordStore) -> None:
    first = item_record("88.100.1/U1", "U-1", "1", "2026-01-01").with_claims(
        (("88.100.1/T", 2001, "U-1"),)
    )
    assert await store.put(fold("88.100.1/U1"), first, None)
    clash = item_record("88.100.1/U2", "U-2", "1", "2026-01-01").with_claims(
        (("88.100.1/T", 2001, "U-1"),)
    )
    with pytest.raises(UniqueValueTaken):
        await store.put_many([(fold("88.100.1/U2"), clash, None)])
    assert await search(store, type="SERIALNUMBER", exact="U-2") == []
    assert await store.get(fold("88.100.1/U2")) is None


def test_import_rows_equal_the_write_paths_entries() -> None:
    """``idis import`` reads index rows off stored forms: they must be what the registrar's
    :func:`resolver.search.entries` makes of the same values, typed by the same template."""
    from registry.import_index import Indexer
    from registry.templates import ImportGate, may_be_templated
    from resolver.codecs.stored import encode_values
    from resolver.templates import parse_template

    doc = (
        '{"prefix": "88.100.1", "version": 1, "items": ['
        '{"name": "n", "key": "serialNumber", "index": 2001, "type": "text", "searchable": true},'
        '{"name": "w", "key": "weight", "index": 2002, "type": "number", "searchable": true},'
        '{"name": "d", "key": "madeOn", "index": 2003, "type": "date", "searchable": true},'
        '{"name": "o", "key": "old", "index": 2004, "type": "text", "state": "disabled",'
        ' "searchable": true},'
        '{"name": "c", "key": "colour", "index": 2005, "type": "text"}]}'
    )
    template = HandleValue(1, "IDIS.TEMPLATE", Data("string", doc))
    gate = ImportGate([(fold("88.100.1/TEMPLATE.t"), encode_values((template,)))])
    named = HandleValue(1001, "TEMPLATE", Data("string", "88.100.1/TEMPLATE.t"))
    disabled = HandleValue(2004, "old", Data("string", "kept, not indexed"))
    unsearched = HandleValue(2005, "colour", Data("string", "red, not searchable"))
    record = item_record("88.100.1/X", "S" * 300, "12.5", "2026-01-31", public=False)
    kinds = kinds_of(parse_template(doc))
    assert kinds == KINDS  # neither the disabled item nor the unsearchable one is indexed
    for values in (
        (*record.values, named, disabled, unsearched),
        (*record.values, disabled, unsearched),
    ):
        wanted = [
            (fold("88.100.1/X"), e.idx, e.type, e.text, e.number, e.public)
            for e in entries(values, kinds if named in values else {})
        ]
        assert len(wanted) == (3 if named in values else 0)
        row = (fold("88.100.1/X"), "88.100.1/X", encode_values(values))
        assert Indexer(gate).rows([row]) == wanted
        # Without templates on the node nothing is indexed, whatever the record holds.
        assert Indexer(None).rows([row]) == []
    plain = (HandleValue(1, "URL", Data("string", "https://x/[2000]")),)
    assert Indexer(gate).rows([("K", "k", encode_values(plain))]) == []
    assert not may_be_templated(encode_values((HandleValue(2000, "T", Data("string", "x")),)))
    assert may_be_templated(encode_values((named,)))


def test_only_templated_records_have_entries() -> None:
    """Values at 2000 and above of a record naming no template are not indexed: the template
    declares what is, and plain writes pay one check."""
    values = (
        HandleValue(1, "URL", Data("string", "https://x")),
        HandleValue(2001, "serialNumber", Data("string", "S-1")),
        HandleValue(2500, "colour", Data("string", "red")),
    )
    assert not has_entries(values)
    assert entries(values) == () and entries(values, {}) == ()
    # Templated: only the items' indexes (2500 is no item of KINDS).
    assert [e.idx for e in entries(values, KINDS)] == [2001]
    named = (*values, HandleValue(1001, "TEMPLATE", Data("string", "88.100.1/TEMPLATE.t")))
    assert has_entries(named)
