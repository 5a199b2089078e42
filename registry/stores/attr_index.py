"""The search index of the SQL stores: writing a record's entries and answering a search.

Entries (:mod:`resolver.search`) are written by :class:`registry.stores.sql.SqlStore` in the
transaction of the record's write (as unique template values are), so a search never names a
handle whose committed record does not carry what was asked, and a refused write leaves no row.

A search is one statement: a range of the ``(type, v_text, key, idx)`` index (exact and
prefix matches) or of ``(type, v_num, key, idx)`` (ranges), restricted to the key range of the
prefix, ordered as the index is (keyset paging), joined to ``handles`` for the display texts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.tables import attr_index
from resolver.search import Hit, Query, text_after
from resolver.values import Record

Insert = Callable[[sa.Table], Any]
COLUMNS = ("key", "idx", "type", "v_text", "v_num", "public")
"""The columns of ``attr_index`` in the order of ``(key, *Entry)``."""


async def replace_entries(
    conn: AsyncConnection,
    insert: Insert,
    written: Sequence[tuple[str, Record]],
    created: Collection[str] = (),
) -> None:
    """Make the entries of each key of ``written`` those of its record, in ``conn``'s
    transaction; records whose ``entries`` is None leave their key's entries alone.

    ``created`` are keys this transaction created (a handle's entries go with its deletion,
    so a new handle has none): their DELETE is skipped, which in a batch of new templated
    records would otherwise probe the index once per key for rows that cannot exist.  A key
    written twice gets the entries of its last record.
    """
    last = {k: r for k, r in written if r.entries is not None}
    if not last:
        return
    stale = [k for k in last if k not in created]
    if stale:
        await conn.execute(attr_index.delete().where(attr_index.c.key.in_(stale)))
    found = [(key, e) for key, record in last.items() for e in record.entries or ()]
    if not found:
        return
    if conn.dialect.name == "postgresql":
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is not None and driver.is_in_transaction():
            # COPY, on the write's own connection and transaction (begun by the handles'
            # write): a batch of 1000 templated records is 10 000 rows, which took a median
            # of 150 ms by COPY against 200 ms by INSERT ... SELECT FROM unnest (the arrays'
            # encoding checks every element), most of either being the btrees' upkeep.
            copied = [(key, *e) for key, e in found]
            await driver.copy_records_to_table("attr_index", records=copied, columns=COLUMNS)
            return
        # One statement of six arrays, whatever the count: a batch of 2000 records of ten
        # attributes each is 20 000 rows, which a multi-row VALUES binds one by one.
        arrays = {
            "keys": [k for k, _ in found],
            "idxs": [e.idx for _, e in found],
            "types": [e.type for _, e in found],
            "texts": [e.text for _, e in found],
            "nums": [e.number for _, e in found],
            "publics": [e.public for _, e in found],
        }
        await conn.execute(_UNNEST, arrays)
        return
    rows = [
        {"key": k, "idx": e.idx, "type": e.type, "v_text": e.text, "v_num": e.number,
         "public": e.public}
        for k, e in found
    ]  # fmt: skip
    await conn.execute(insert(attr_index), rows)


_UNNEST = sa.text(
    "INSERT INTO attr_index (key, idx, type, v_text, v_num, public)"
    " SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:idxs AS int[]), CAST(:types AS text[]),"
    " CAST(:texts AS text[]), CAST(:nums AS float8[]), CAST(:publics AS bool[]))"
)


async def drop_entries(conn: AsyncConnection, key: str) -> None:
    """Remove a deleted handle's entries, in the delete's transaction."""
    await conn.execute(attr_index.delete().where(attr_index.c.key == key))


_ORDER = {
    "exact": "a.key, a.idx",
    "starts": "a.v_text, a.key, a.idx",
    "range": "a.v_num, a.key, a.idx",
}
_MATCH = {
    "exact": "a.v_text = :text",
    "starts": "a.v_text >= :text",
    "range": "a.v_num IS NOT NULL",
}


@lru_cache(maxsize=64)
def search_sql(
    mode: str, private: bool, after: bool, text_high: bool, low: bool, high: bool
) -> str:
    """The statement of a search of this shape, with ``:name`` parameters (see :func:`params`).

    Few shapes exist, so each is built once and (on PostgreSQL) prepared once per connection.
    """
    where = ["a.type = :type", _MATCH[mode], "a.key >= :key_low", "a.key < :key_high"]
    if mode == "starts" and text_high:
        where.append("a.v_text < :text_high")
    if low:
        where.append("a.v_num >= :low")
    if high:
        where.append("a.v_num <= :high")
    if not private:
        where.append("a.public")
    if after:
        column = {"exact": "", "starts": "a.v_text, ", "range": "a.v_num, "}[mode]
        first = {"exact": "", "starts": ":after_v, ", "range": ":after_v, "}[mode]
        where.append(f"({column}a.key, a.idx) > ({first}:after_key, :after_idx)")
    return (
        "SELECT h.handle, a.v_text, a.v_num, a.key, a.idx, a.public FROM attr_index a"
        " JOIN handles h ON h.key = a.key"
        f" WHERE {' AND '.join(where)} ORDER BY {_ORDER[mode]} LIMIT :limit"
    )


def statement(query: Query) -> tuple[str, dict[str, Any]]:
    """The SQL text (``:name`` parameters) and parameters of ``query``, asking for one row
    more than the page to know whether another page follows."""
    key_low, key_high = query.key_range
    text = query.exact if query.exact is not None else query.starts
    text_high = text_after(query.starts) if query.starts is not None else ""
    args: dict[str, Any] = {
        "type": query.type,
        "key_low": key_low,
        "key_high": key_high,
        "limit": query.limit + 1,
    }
    if text is not None:
        args["text"] = text
    if text_high:
        args["text_high"] = text_high
    if query.low is not None:
        args["low"] = query.low
    if query.high is not None:
        args["high"] = query.high
    if query.after is not None:
        if query.mode != "exact":
            args["after_v"] = query.after[0]
        args["after_key"], args["after_idx"] = query.after[1], query.after[2]
    sql = search_sql(
        query.mode,
        query.private,
        query.after is not None,
        bool(text_high),
        query.low is not None,
        query.high is not None,
    )
    return sql, args


_NAME = re.compile(r":([a-z_]+)")


@lru_cache(maxsize=64)
def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with ``:name`` parameters as asyncpg's ``$n``, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _NAME.sub(number, sql), tuple(names)


def hits(query: Query, rows: Sequence[Sequence[Any]]) -> list[Hit]:
    """The hits of the rows :func:`statement` selected, with their keyset positions."""
    first = 2 if query.mode == "range" else 1
    return [Hit(row[0], (row[first], row[3], row[4]), bool(row[5])) for row in rows]
