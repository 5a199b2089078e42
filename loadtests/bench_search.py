"""Search by attribute (``GET /api/search``) beside a primary-key resolution
(``GET /api/handles/<h>``) of the same node at the same size, in one run.

    python -m loadtests.bench_search [--quick] [--rows N] [--requests R]
                                     [--database-url URL] [--json out.json]

A scratch PostgreSQL database (beside ``--database-url``'s) is seeded with N identifiers
``88.100.1/SR%08d`` of one templated shape only (each names the template at 1001 and holds
the ten typed items of :data:`loadtests.bench_templates.ITEMS`: text, number, date, date-time,
boolean, enumeration, URL, reference, list, number; the index holds the values of searchable
items of templated records only: :data:`SEARCH_ITEMS` makes the model, the production date
and the weight searchable, the two searched and the date the templates bench also indexes)
and their three ``attr_index`` rows each, by ``generate_series`` in SQL: the index's btrees
are dropped for the load and built afterwards (a sort each, much faster than row by row),
then the tables are analysed.  A sample of identifiers is decoded in
Python and its index rows compared with what :func:`resolver.search.entries` makes of it, so
the SQL seeding matches what the write path would have written.

One node (one worker) serves the database.  Requests go one at a time on one keep-alive
connection, interleaved (lookup, exact search, range search, lookup, ...) so that a load
drifting on a shared machine touches all three alike; each names a different identifier or
value (nothing answered from a cache):

- ``lookup``: ``GET /api/handles/88.100.1/SR...`` of a random identifier;
- ``exact``: ``GET /api/search?prefix=88.100.1&type=model&value=M-...`` (one hit);
- ``range``: ``GET /api/search?...&type=weight&min=X&max=X+0.1&pageSize=10`` (about ten hits).

:func:`measure` returns (keys): ``rows``, ``seed_seconds``, ``requests`` (of each kind),
``lookup_p50_ms``/``lookup_p99_ms``, ``exact_p50_ms``/``exact_p99_ms``,
``range_p50_ms``/``range_p99_ms``, ``exact_ratio``/``range_ratio`` (search p50 / lookup
p50; target <= 3), ``target``, ``plans`` (the shape of ``EXPLAIN (ANALYZE, BUFFERS)`` of each
search: the index scanned, rows, buffers), ``errors`` (answers not 200 or with the wrong
hits), ``passed``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from loadtests import bench_http
from loadtests.bench_templates import ITEMS
from loadtests.generators import pinned
from nodes.processes import ServeProcess
from registry import migrate
from registry.stores import attr_index
from resolver.codecs.stored import decode_values, encode_values
from resolver.search import Query, bound, entries, kinds_of
from resolver.templates import parse_template
from resolver.values import Data, HandleValue

PREFIX = bench_http.PREFIX
TEMPLATE = f"{PREFIX}/TEMPLATE.BENCH-SEARCH"
TARGET = 3.0
QUICK_ROWS = 1_000_000
FULL_ROWS = 10_000_000
SEED_CHUNK = 1_000_000
MAX_SECONDS = 120.0
"""Longest the measured requests may take, whatever their count."""

SEARCH_ITEMS = [
    {**item, "searchable": item["key"] in ("model", "madeOn", "weight")} for item in ITEMS
]
""":data:`loadtests.bench_templates.ITEMS` with the items searched here (model, weight)
searchable, and the production date as there."""
TEMPLATE_DOC = json.dumps(
    {"prefix": PREFIX, "version": 1, "items": SEARCH_ITEMS}, ensure_ascii=False
)

# Each item's data as SQL of the identifier's number i, and its sortable number (or NULL).
_TS = "(TIMESTAMPTZ '2025-01-01 00:00:00+00' + (i * 37) * INTERVAL '1 second')"
_DAY = "(DATE '2025-01-01' + (i % 365)::int)"
_ATTRS: list[tuple[int, str, str, str]] = [
    (2001, "model", "'M-' || lpad(i::text, 8, '0')", "NULL"),
    (2002, "capacity", "((i * 7919) % 10000 / 10)::text || '.' || ((i * 7919) % 10)::text",
     "((i * 7919) % 10000) / 10.0"),
    (2003, "madeOn", f"to_char({_DAY}, 'YYYY-MM-DD')",
     f"extract(epoch FROM {_DAY}::timestamp AT TIME ZONE 'UTC')"),
    (2004, "checkedAt", f"to_char({_TS} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
     f"extract(epoch FROM {_TS})"),
    (2005, "passed", "CASE WHEN i % 10 = 0 THEN 'false' ELSE 'true' END", "NULL"),
    (2006, "grade", "(ARRAY['A','B','C'])[1 + (i % 3)::int]", "NULL"),
    (2007, "manual", "'https://example.com/m/' || (i % 1000)::text", "NULL"),
    (2008, "lot", f"'{PREFIX}/LOT-' || (i / 500)::text", "NULL"),
    (2009, "tags", "'[\"li-ion\",\"v' || (i % 5)::text || '\"]'", "NULL"),
    (2010, "weight", "(i / 100)::text || '.' || lpad((i % 100)::text, 2, '0')", "i / 100.0"),
]  # fmt: skip


def handle_text(i: int) -> str:
    return f"{PREFIX}/SR{i:08d}"


def _json_text(sql: str) -> str:
    """SQL making a JSON string literal of the text ``sql`` makes (no quotes or backslashes
    but those of the tags' JSON, which to_json escapes)."""
    return f"to_json({sql})::text"


def _seed_statements(now: int) -> tuple[str, str]:
    """The INSERTs of identifiers ``$1 .. $2``: their records, and their index rows."""
    admin = orjson.dumps([100, "HS_ADMIN", "admin", [f"0.NA/{PREFIX}", 200, 2047], 86400, now])
    pieces = [
        '\'[[1,"URL","string",\' || '
        + _json_text("'https://example.com/p/' || i::text")
        + f" || ',86400,{now}],'",
        f"'{admin.decode()},'",
        f'\'[1001,"TEMPLATE","string","{TEMPLATE}",86400,{now}]\'',
    ]
    for index, key, text, _ in _ATTRS:
        pieces.append(f"',[{index},\"{key}\",\"string\",' || {_json_text(text)} || ',86400,{now}]'")
    pieces.append("']'")
    data = "convert_to(" + " || ".join(pieces) + ", 'UTF8')"
    handle = f"'{PREFIX}/SR' || lpad(i::text, 8, '0')"
    records = (
        "INSERT INTO handles (key, handle, data, version)"
        f" SELECT upper({handle}), {handle}, {data}, 1"
        " FROM generate_series($1::bigint, $2::bigint) AS i"
    )
    searchable = kinds_of(parse_template(TEMPLATE_DOC))
    rows = ", ".join(
        f"({index}, '{key.upper()}', {text}, ({number})::float8)"
        for index, key, text, number in _ATTRS
        if index in searchable
    )
    index_rows = (
        "INSERT INTO attr_index (key, idx, type, v_text, v_num, public)"
        f" SELECT upper({handle}), a.idx, a.type, a.v_text, a.v_num, true"
        " FROM generate_series($1::bigint, $2::bigint) AS i,"
        f" LATERAL (VALUES {rows}) AS a(idx, type, v_text, v_num)"
    )
    return records, index_rows


_DROP = [
    "ALTER TABLE attr_index DROP CONSTRAINT attr_index_pkey",
    "DROP INDEX attr_index_text",
    "DROP INDEX attr_index_num",
]
_BUILD = [
    "ALTER TABLE attr_index ADD PRIMARY KEY (key, idx)",
    "CREATE INDEX attr_index_text ON attr_index (type, v_text, key, idx)",
    "CREATE INDEX attr_index_num ON attr_index (type, v_num, key, idx) WHERE v_num IS NOT NULL",
]


async def seed(dsn: str, rows: int, now: int) -> float:
    """Seed ``rows`` identifiers (see the module's docstring); the seconds it took."""
    started = time.monotonic()
    records, index_rows = _seed_statements(now)
    template = (HandleValue(1, "IDIS.TEMPLATE", Data("string", TEMPLATE_DOC), timestamp=now),)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute("INSERT INTO prefixes (key, prefix) VALUES ($1, $1)", PREFIX)
        await conn.execute(
            "INSERT INTO handles (key, handle, data) VALUES ($1, $2, $3)",
            TEMPLATE.upper(),
            TEMPLATE,
            encode_values(template),
        )
        for statement in _DROP:
            await conn.execute(statement)
        for first in range(0, rows, SEED_CHUNK):
            last = min(rows, first + SEED_CHUNK) - 1
            await conn.execute(records, first, last)
            await conn.execute(index_rows, first, last)
        for statement in _BUILD:
            await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE handles")
        await conn.execute("VACUUM ANALYZE attr_index")
        await _check_seed(conn, rows)
    finally:
        await conn.close()
    return time.monotonic() - started


async def _check_seed(conn: asyncpg.Connection, rows: int) -> None:
    """Raise unless sampled identifiers' index rows are what the write path would make."""
    kinds = kinds_of(parse_template(TEMPLATE_DOC))
    for i in random.Random(rows).sample(range(rows), min(20, rows)):
        key = handle_text(i).upper()
        data = await conn.fetchval("SELECT data FROM handles WHERE key = $1", key)
        found = await conn.fetch(
            "SELECT idx, type, v_text, v_num, public FROM attr_index WHERE key = $1 ORDER BY idx",
            key,
        )
        got = [tuple(row) for row in found]
        wanted = [
            (e.idx, e.type, e.text, e.number, e.public)
            for e in entries(decode_values(bytes(data)), kinds)
        ]
        if got != wanted:
            raise RuntimeError(f"seeded index rows of {key} differ: {got} != {wanted}")


def _explain_query(query: Query) -> tuple[str, list[Any]]:
    sql, args = attr_index.statement(query)
    text, names = attr_index.numbered(sql)
    return text, [args[name] for name in names]


def _plan_shape(plan: dict[str, Any]) -> list[str]:
    """``Node Type (Index Name) rows=... hit=... read=...`` of each plan node, depth first."""
    shape = []
    stack = [(plan, 0)]
    while stack:
        node, depth = stack.pop()
        name = node.get("Index Name")
        shape.append(
            "  " * depth
            + f"{node['Node Type']}{f' ({name})' if name else ''}"
            + f" rows={node.get('Actual Rows')} hit={node.get('Shared Hit Blocks')}"
            + f" read={node.get('Shared Read Blocks')}"
        )
        stack.extend((child, depth + 1) for child in reversed(node.get("Plans", [])))
    return shape


async def explain(dsn: str, queries: dict[str, Query]) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        plans = {}
        for name, query in queries.items():
            text, args = _explain_query(query)
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {text}", *args)
            plans[name] = _plan_shape(json.loads(raw)[0]["Plan"])
        return plans
    finally:
        await conn.close()


def _weight(i: int) -> str:
    return f"{i // 100}.{i % 100:02d}"


def _paths(rows: int, count: int, seed: int) -> dict[str, list[tuple[str, list[str]]]]:
    """Distinct requests of each kind and the handles each must answer (None: any 200)."""
    rnd = random.Random(seed)
    ids = rnd.sample(range(rows - 20), min(3 * count, rows - 20))
    lookups = [(f"/api/handles/{handle_text(i)}", [handle_text(i)]) for i in ids[:count]]
    exact = []
    for i in ids[count : 2 * count]:
        params = urlencode({"prefix": PREFIX, "type": "model", "value": f"M-{i:08d}"})
        exact.append((f"/api/search?{params}", [handle_text(i)]))
    ranges = []
    for i in ids[2 * count :]:
        low, high = _weight(i), _weight(i + 9)  # weights i/100 .. (i+9)/100: ten identifiers
        params = urlencode(
            {"prefix": PREFIX, "type": "weight", "min": low, "max": high, "pageSize": 10}
        )
        ranges.append((f"/api/search?{params}", [handle_text(n) for n in range(i, i + 10)]))
    return {"lookup": lookups, "exact": exact, "range": ranges}


def _right(kind: str, status: int, body: bytes, wanted: list[str]) -> bool:
    if status != 200:
        return False
    answer = orjson.loads(body)
    if kind == "lookup":
        return bool(answer.get("handle") == wanted[0])
    return bool(answer.get("handles") == wanted)


def run_requests(port: int, paths: dict[str, list[tuple[str, list[str]]]]) -> dict[str, Any]:
    """Interleaved requests, one at a time; latencies (ms) of each kind and errors."""
    latencies: dict[str, list[float]] = {kind: [] for kind in paths}
    errors = 0
    conn = http.client.HTTPConnection(bench_http.HOST, port, timeout=10)
    deadline = time.monotonic() + MAX_SECONDS
    try:
        for turn in range(min(len(v) for v in paths.values())):
            if time.monotonic() > deadline:
                break
            for kind, requests in paths.items():
                path, wanted = requests[turn]
                started = time.perf_counter()
                status, body, _ = bench_http.fetch(port, path, conn)
                latencies[kind].append((time.perf_counter() - started) * 1000)
                errors += not _right(kind, status, body, wanted)
    finally:
        conn.close()
    return {"latencies": latencies, "errors": errors}


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def measure(
    workdir: Path,
    dsn: str,
    quick: bool,
    rows: int | None = None,
    requests: int = 0,
    *,
    server_cpus: Sequence[int] | None = None,
    client_cpus: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Seed a scratch database beside ``dsn``'s, serve it, measure (keys: module docstring).

    ``server_cpus`` pin the node, ``client_cpus`` the requests (``idis bench`` keeps them
    apart); unpinned by default."""
    rows = rows or (QUICK_ROWS if quick else FULL_ROWS)
    requests = requests or (1000 if quick else 3000)
    server = make_url(dsn)
    admin = server.render_as_string(hide_password=False)
    name = f"idis_bench_search_{uuid.uuid4().hex[:10]}"
    scratch = server.set(database=name).render_as_string(hide_password=False)
    asyncio.run(bench_http._create_database(admin, name))
    servers: list[ServeProcess] = []
    try:
        migrate.upgrade(scratch)
        now = int(time.time())
        seconds = asyncio.run(seed(scratch, rows, now))
        print(f"seeded {rows:,} identifiers (x3 index rows) in {seconds:.0f} s", flush=True)
        node = bench_http.start_listed(
            bench_http.bench_node("search", scratch, workdir / "data", workdir, cpus=server_cpus),
            servers,
        )
        paths = _paths(rows, requests, seed=rows)
        # Warm-up on requests of their own (the connection, the prepared statements).
        warm = _paths(rows, 50, seed=rows + 1)
        with pinned(client_cpus):
            run_requests(node.port, warm)
            measured = run_requests(node.port, paths)
        lat = measured["latencies"]
        i = paths["exact"][0][1][0]
        number = int(i.rpartition("SR")[2])
        plans = asyncio.run(
            explain(
                scratch,
                {
                    "exact": Query(PREFIX, "MODEL", exact=f"M-{number:08d}", limit=100),
                    "range": Query(
                        PREFIX,
                        "WEIGHT",
                        low=bound(_weight(number), "min"),
                        high=bound(_weight(number + 9), "max"),
                        limit=10,
                    ),
                },
            )
        )
    finally:
        for process in reversed(servers):
            process.stop()
        asyncio.run(bench_http._drop_database(admin, name))
    result: dict[str, Any] = {"rows": rows, "seed_seconds": round(seconds, 1)}
    result["requests"] = len(lat["lookup"])
    for kind in ("lookup", "exact", "range"):
        result[f"{kind}_p50_ms"] = _p(lat[kind], 0.5)
        result[f"{kind}_p99_ms"] = _p(lat[kind], 0.99)
    lookup = statistics.median(lat["lookup"])
    result["exact_ratio"] = round(statistics.median(lat["exact"]) / lookup, 2)
    result["range_ratio"] = round(statistics.median(lat["range"]) / lookup, 2)
    result["target"] = TARGET
    result["plans"] = plans
    result["errors"] = measured["errors"]
    result["passed"] = (
        measured["errors"] == 0
        and result["exact_ratio"] <= TARGET
        and result["range_ratio"] <= TARGET
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m loadtests.bench_search", description=__doc__)
    cli.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} identifiers")
    cli.add_argument("--rows", type=int, default=0, help="identifiers (overrides --quick)")
    cli.add_argument("--requests", type=int, default=0, help="requests of each kind")
    cli.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database of the server to benchmark on (the scratch database goes beside it)",
    )
    cli.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = cli.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idis-bench-search-") as tmp:
        result = measure(Path(tmp), args.database_url, args.quick, args.rows or None, args.requests)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
