"""The suite's scratch PostgreSQL database: statements on a fresh connection, homing
prefixes, seeding bench_http's identifiers server-side, and what a table costs in bytes and
block reads."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests import bench_http

PREFIX = bench_http.PREFIX
SUFFIX_FORMAT = bench_http.SUFFIX_FORMAT


async def _sql(dsn: str, *statements: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetch(s) for s in statements]
    finally:
        await conn.close()


def sql(dsn: str, *statements: str) -> list[Any]:
    """Run statements on a fresh connection; their rows."""
    return asyncio.run(_sql(dsn, *statements))


async def _home_prefixes(dsn: str, data_dir: Path, prefixes: Sequence[str], secret: str) -> None:
    from nodes.bootstrap import build_node
    from nodes.settings import load_settings
    from registry.prefixes import init_prefix

    settings = load_settings(database_url=dsn, data_dir=data_dir, migrate_on_start=False)
    node = build_node(settings)
    try:
        for prefix in prefixes:
            await init_prefix(node.store, node.invalidator, prefix, secret)
    finally:
        await node.close()


def home_prefixes(dsn: str, data_dir: Path, prefixes: Sequence[str], secret: str) -> None:
    """``idis prefix init`` for each prefix (in process: one start-up for all), one secret."""
    asyncio.run(_home_prefixes(dsn, data_dir, prefixes, secret))


def storage_of(dsn: str, table: str = "handles") -> dict[str, Any]:
    """Bytes of ``table`` in PostgreSQL (heap, TOAST, indexes) per row, beside the payload:
    the handle text and its stored values (``octet_length(handle) + octet_length(data)``)."""
    rows = sql(
        dsn,
        f"SELECT pg_total_relation_size('{table}') AS total,"
        f" pg_relation_size('{table}') AS heap, pg_indexes_size('{table}') AS indexes,"
        f" coalesce(pg_total_relation_size(reltoastrelid), 0) AS toast"
        f" FROM pg_class WHERE oid = '{table}'::regclass",
        f"SELECT count(*) AS n, sum(octet_length(handle) + octet_length(data)) AS payload,"
        f" sum(octet_length(key)) AS keys FROM {table}",
    )
    size, counts = rows[0][0], rows[1][0]
    n = int(counts["n"])
    return {
        "rows": n,
        "total_bytes": int(size["total"]),
        "heap_bytes": int(size["heap"]),
        "index_bytes": int(size["indexes"]),
        "toast_bytes": int(size["toast"]),
        "bytes_per_id": round(size["total"] / n, 1) if n else 0.0,
        "payload_per_id": round(int(counts["payload"]) / n, 1) if n else 0.0,
    }


def buffer_reads(dsn: str, table: str = "handles") -> dict[str, int]:
    """PostgreSQL's block counters of ``table``: pages found in shared buffers (hit) and read
    from the OS (read), heap and index.  They lag up to a second: sleep before reading."""
    row = sql(
        dsn,
        "SELECT pg_stat_clear_snapshot()",
        "SELECT coalesce(heap_blks_read, 0) AS heap_read, coalesce(heap_blks_hit, 0) AS heap_hit,"
        " coalesce(idx_blks_read, 0) AS idx_read, coalesce(idx_blks_hit, 0) AS idx_hit"
        f" FROM pg_statio_user_tables WHERE relname = '{table}'",
    )[1][0]
    return {k: int(v) for k, v in row.items()}


def per_lookup(before: dict[str, int], after: dict[str, int], lookups: int) -> dict[str, float]:
    """Block counters per lookup between two :func:`buffer_reads`."""
    n = max(1, lookups)
    return {k: round((after[k] - before[k]) / n, 2) for k in after}


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def seed_sql(now: int) -> str | None:
    """An ``INSERT ... SELECT FROM generate_series($1, $2)`` writing the rows of
    :func:`loadtests.bench_http.build_record` server-side (10x faster than building them in
    Python), built from the Python encoding itself; None if the encoding cannot be templated.
    The caller checks a sample of the rows against Python byte for byte."""
    from resolver.codecs.stored import encode_values

    variants = []
    for r in range(3):
        i = 30_000_000 + r  # i % 3 == r
        record = bench_http.build_record(i, now)
        text = encode_values(record.values).decode()
        marks = {
            "\x01": SUFFIX_FORMAT % i,
            "\x02": f"DN{25 + i % 7 * 5}",
            "\x03": f"B{2024_0000 + i // 500}",
        }
        for mark, value in marks.items():
            text = text.replace(value, mark)
        if "\x01" not in text or any(c in text for c in "\x04\x05"):
            return None
        pieces = []
        literal = ""
        for ch in text:
            if ch in marks:
                if literal:
                    pieces.append(_lit(literal))
                literal = ""
                pieces.append(
                    {
                        "\x01": "'SN' || lpad(i::text, 8, '0')",
                        "\x02": "'DN' || (25 + i % 7 * 5)::text",
                        "\x03": "'B' || (20240000 + i / 500)::text",
                    }[ch]
                )
            else:
                literal += ch
        if literal:
            pieces.append(_lit(literal))
        variants.append(" || ".join(pieces))
    handle = f"{_lit(PREFIX + '/')} || 'SN' || lpad(i::text, 8, '0')"
    data = (
        f"convert_to(CASE i % 3 WHEN 0 THEN {variants[0]} WHEN 1 THEN {variants[1]}"
        f" ELSE {variants[2]} END, 'UTF8')"
    )
    return (
        "INSERT INTO handles (key, handle, data, version)"
        f" SELECT upper({handle}), {handle}, {data}, 1 FROM generate_series($1::bigint,"
        " $2::bigint) AS i"
    )


async def seed_range(dsn: str, first: int, count: int, now: int) -> str:
    """Add identifiers ``first .. first + count - 1`` (bench_http's shape); how it was done."""
    import asyncpg

    from resolver.codecs.stored import encode_values

    statement = seed_sql(now)
    conn = await asyncpg.connect(dsn)
    try:
        if statement is not None and first + count <= 10**8:
            chunk = 500_000
            for lo in range(first, first + count, chunk):
                hi = min(first + count, lo + chunk) - 1
                await conn.execute(statement, lo, hi)
            sample = random.Random(first).sample(range(first, first + count), min(50, count))
            rows = await conn.fetch(
                "SELECT handle, data FROM handles WHERE key = ANY($1::text[])",
                [bench_http.handle_text(i).upper() for i in sample],
            )
            got = {r["handle"]: bytes(r["data"]) for r in rows}
            if len(got) == len(sample) and all(
                got.get(bench_http.handle_text(i))
                == encode_values(bench_http.build_record(i, now).values)
                for i in sample
            ):
                return "SQL generate_series (checked against Python byte for byte)"
            await conn.execute(
                "DELETE FROM handles WHERE key >= $1 AND key <= $2",
                bench_http.handle_text(first).upper(),
                bench_http.handle_text(first + count - 1).upper(),
            )
        from resolver.identifiers import fold

        for lo in range(first, first + count, 50_000):
            records = [
                bench_http.build_record(i, now) for i in range(lo, min(first + count, lo + 50_000))
            ]
            await conn.copy_records_to_table(
                "handles",
                records=[(fold(r.handle), r.handle, encode_values(r.values), 1) for r in records],
                columns=["key", "handle", "data", "version"],
            )
        return "COPY of rows built in Python"
    finally:
        await conn.close()
