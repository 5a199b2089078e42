"""Bulk import (``idis import``): on SQLite and PostgreSQL, in process and through the CLI."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

try:
    import msgspec
except ImportError:  # pragma: no cover
    msgspec = None

from nodes.generation_board import GenerationBoard
from registry import importer
from registry.changelog import ALL_KEY
from registry.importer import (
    ImportFailed,
    ImportReport,
    RecordParser,
    Rejected,
    import_records,
)
from registry.plain_forms import python_plain_forms
from registry.secrets import is_stored, verify_secret
from registry.stores import SqlStore
from resolver.codecs.stored import decode_values
from resolver.errors import HandleError
from resolver.identifiers import Handle
from resolver.values import AdminRef, Data, HandleValue, Record

PREFIX = "88.100.1"
NOW = 1_768_084_906
ADMIN = HandleValue(
    100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88.100.1", 200, 0b011111111111)), timestamp=NOW
)


def url_value(index: int, url: str) -> dict[str, Any]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": url}}


def line(handle: str, *values: dict[str, Any]) -> bytes:
    return orjson.dumps({"handle": handle, "values": list(values)})


async def _home(url: str) -> None:
    store = SqlStore(url)
    try:
        await store.home_prefix(PREFIX)
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "pg"])
def db(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend with 88.100.1 homed.

    Synchronous, because migrating (in the URL fixtures) runs an event loop of its own.
    """
    url = str(request.getfixturevalue(f"{request.param}_url"))
    asyncio.run(_home(url))
    return url


async def records(url: str) -> dict[str, Record]:
    """Every record of the database by key."""
    store = SqlStore(url)
    try:
        _, handles = await store.list_handles(PREFIX, 0, 10_000)
        _, prefix_records = await store.list_handles("0.NA", 0, 10_000)
        return await store.get_many([h.upper() for h in handles + prefix_records])
    finally:
        await store.close()


async def _logged(url: str) -> list[str]:
    """The keys of the database's change log, in order."""
    store = SqlStore(url)
    try:
        return [change.key for change in await store.changes_after(0)]
    finally:
        await store.close()


async def run(url: str, lines: list[bytes] | list[str], **options: Any) -> ImportReport:
    return await import_records(url, lines, now=options.pop("now", NOW), **options)


# --- loading ---------------------------------------------------------------------------


async def test_jsonl_applies_the_rules_of_a_creation(db: str) -> None:
    own_admin = {
        "index": 100,
        "type": "HS_ADMIN",
        "data": {
            "format": "admin",
            "value": {"handle": "88.100.1/boss", "index": "300", "permissions": "011111111111"},
        },
    }
    lines = [
        line("88.100.1/Plain", url_value(1, "https://example.com/a")),
        line("88.100.1/own-admin", url_value(1, "https://example.com/b"), own_admin),
        line(
            "88.100.1/taken-100",
            {
                "index": 100,
                "type": "DESC",
                "data": "x",
                "ttl": 60,
                "timestamp": "2020-01-01T00:00:00Z",
            },
        ),
        line("88.100.1/secret", {"index": 300, "type": "HS_SECKEY", "data": "s3cret"}),
        line("0.NA/88.100.1.7", {"index": 1, "type": "DESC", "data": "derived prefix"}),
    ]
    report = await run(db, lines)
    assert (report.loaded, report.rejected, report.errors) == (5, 0, [])
    got = await records(db)
    assert got["88.100.1/PLAIN"] == Record(
        "88.100.1/Plain",
        (HandleValue(1, "URL", Data("string", "https://example.com/a"), timestamp=NOW), ADMIN),
        1,
    )
    # A record with its own HS_ADMIN keeps it, and gets no other.
    admins = [v for v in got["88.100.1/OWN-ADMIN"].values if v.type == "HS_ADMIN"]
    assert admins == [
        HandleValue(
            100, "HS_ADMIN", Data("admin", AdminRef("88.100.1/boss", 300, 2047)), timestamp=NOW
        )
    ]
    # Index 100 taken: the default HS_ADMIN takes the next free index; timestamps given stay.
    taken = got["88.100.1/TAKEN-100"].values
    assert [(v.index, v.type) for v in taken] == [(100, "DESC"), (101, "HS_ADMIN")]
    assert (taken[0].ttl, taken[0].timestamp) == (60, 1_577_836_800)
    # Secrets are stored hashed, never as given.
    (secret,) = [v for v in got["88.100.1/SECRET"].values if v.type == "HS_SECKEY"]
    assert is_stored(secret.data.value) and verify_secret("s3cret", secret.data.value)
    assert secret.permissions == 0b1100
    # A derived prefix record is administered by its parent's administrators.
    derived = got["0.NA/88.100.1.7"].values
    assert derived[-1].data == Data("admin", AdminRef("0.NA/88.100.1", 200, 2047))


@pytest.mark.parametrize("enabled", [True, False])
async def test_cyclic_gc_is_paused_during_an_import_only(sqlite_url: str, enabled: bool) -> None:
    await _home(sqlite_url)
    during: list[bool] = []
    lines = [line(f"88.100.1/g{i}", url_value(1, "u")) for i in range(2 * importer.PROGRESS_LINES)]
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        report = await run(sqlite_url, lines, on_progress=lambda *_: during.append(gc.isenabled()))
        assert report.loaded == len(lines)
        assert during and not any(during)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


async def test_chunks_of_pg_import_load_everything(pg_url: str) -> None:
    await _home(pg_url)
    first = [line(f"88.100.1/n{i}", url_value(1, f"https://e.com/{i}")) for i in range(10)]
    assert (await run(pg_url, first[3:6])).loaded == 3
    # Chunks of 4: the second and third meet the records loaded above and are merged, the
    # fourth goes back to COPY.
    report = await run(pg_url, first, chunk_rows=4)
    assert (report.loaded, report.unchanged, report.rejected) == (10, 3, 0)
    got = await records(pg_url)
    assert sorted(got) == sorted(f"88.100.1/N{i}" for i in range(10))
    assert {r.version for r in got.values()} == {1}


async def test_a_cancelled_sqlite_import_closes_only_after_its_write_ends(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during a chunk's write: the thread writing cannot be stopped, so the database
    is closed after it (the chunk committed whole), not under it (which crashes Python)."""
    await _home(sqlite_url)
    started, outcomes = threading.Event(), []
    write = importer._SqliteWriter._write

    def slow_write(self: Any, *args: Any) -> int:
        started.set()
        time.sleep(0.3)  # the import is cancelled meanwhile
        try:
            done = write(self, *args)
        except Exception as error:
            outcomes.append(error)
            raise
        outcomes.append(done)
        return done

    monkeypatch.setattr(importer._SqliteWriter, "_write", slow_write)
    lines = [line(f"88.100.1/c{i}", url_value(1, f"https://e.com/{i}")) for i in range(50)]
    task = asyncio.ensure_future(run(sqlite_url, lines, chunk_rows=20))
    assert await asyncio.to_thread(started.wait, 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert outcomes == [0], "the write went on to its commit on an open connection"
    got = await records(sqlite_url)
    assert sorted(got) == sorted(f"88.100.1/C{i}" for i in range(20)), "one chunk, whole"


async def test_jsonl_file_chunks_meeting_existing_records_are_read_again(
    pg_url: str, tmp_path: Path
) -> None:
    """A JSONL file's chunk is not kept while it is copied: when it meets existing records, its
    lines are read again for the merge, without their rejections (reported once)."""
    await _home(pg_url)
    good = [line(f"88.100.1/n{i}", url_value(1, f"https://e.com/{i}")) for i in range(12)]
    assert (await run(pg_url, [good[5], good[9]])).loaded == 2

    def secret(name: str) -> bytes:
        return line(f"88.100.1/{name}", {"index": 300, "type": "HS_SECKEY", "data": name})

    lines = [
        *good[0:3],
        secret("key1"),  # 1-4: the first chunk of 4, copied
        b"",
        b"not json",
        good[0],
        secret("key2"),
        *good[4:7],  # 5-11: the second, meets n5, merged
        *good[7:11],  # 12-15: merged at once
        good[11],
    ]
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejected: list[tuple[int, str]] = []
    report = await import_records(
        pg_url, path, now=NOW, chunk_rows=4, on_reject=lambda n, why: rejected.append((n, why))
    )
    assert (report.loaded, report.unchanged, report.rejected) == (13, 2, 2)
    assert [n for n, _ in rejected] == [n for n, _ in report.errors] == [6, 7]
    got = await records(pg_url)
    assert sorted(got) == sorted(
        [f"88.100.1/N{i}" for i in range(12) if i != 3] + ["88.100.1/KEY1", "88.100.1/KEY2"]
    )
    assert {r.version for r in got.values()} == {1}
    for name in ("key1", "key2"):
        (value,) = [v for v in got[f"88.100.1/{name.upper()}"].values if v.type == "HS_SECKEY"]
        assert verify_secret(name, value.data.value)
    # Again, later: every chunk meets existing records, and nothing changes.
    again = await import_records(pg_url, path, now=NOW + 60, chunk_rows=4)
    assert (again.loaded, again.unchanged, again.rejected) == (13, 13, 2)
    assert await records(pg_url) == got


async def test_csv_with_a_values_column(db: str) -> None:
    values = orjson.dumps([url_value(1, "https://e.com/1")]).decode()
    lines = [
        "handle,values\n",
        f'88.100.1/c1,"{values.replace(chr(34), chr(34) * 2)}"\n',
        "88.100.1/c2,[not json\n",
        "88.100.1/c3\n",
        '88.100.1/c4,"""a string"""\n',
    ]
    report = await run(db, lines, fmt="csv")
    assert report.loaded == 1
    assert [n for n, _ in report.errors] == [3, 4, 5]
    assert "not valid JSON" in report.errors[0][1]
    assert "JSON object" in report.errors[2][1]
    assert set(await records(db)) == {"88.100.1/C1"}


async def test_csv_with_one_row_per_value(db: str) -> None:
    lines = [
        "handle,index,type,data\n",
        "88.100.1/r1,1,URL,https://e.com/1\n",
        '88.100.1/r1,2,DESC,"with, comma"\n',
        "88.100.1/r2,1,URL,https://e.com/2\n",
        "88.100.1/r3,1,URL,https://e.com/3\n",
        "88.100.1/r3,x,DESC,bad index\n",
        "88.100.1/r4,1,URL,https://e.com/4\n",
        "88.100.1/r4,2,DESC\n",
        "88.100.1/r5,1,URL,https://e.com/5\n",
    ]
    report = await run(db, lines, fmt="csv")
    assert report.loaded == 3
    # A bad value row makes its whole record bad, reported at the record's first line.
    assert [n for n, _ in report.errors] == [5, 7]
    assert "index" in report.errors[0][1] and "line 8" in report.errors[1][1]
    got = await records(db)
    assert set(got) == {"88.100.1/R1", "88.100.1/R2", "88.100.1/R5"}
    assert [(v.index, v.data.value) for v in got["88.100.1/R1"].values][:2] == [
        (1, "https://e.com/1"),
        (2, "with, comma"),
    ]


async def test_csv_header_must_be_known(sqlite_url: str) -> None:
    with pytest.raises(ImportFailed, match="CSV header"):
        await run(sqlite_url, ["id,url\n", "1,2\n"], fmt="csv")


async def test_unreadable_csv_stops_the_import_after_the_chunks_before(db: str) -> None:
    """The next chunk's rows are read while the database writes a chunk: an unreadable line
    among them stops the import once that chunk is written, as it would without reading
    ahead, and the chunks written before stay loaded and counted."""
    lines = ["handle,index,type,data\n"]
    lines += [f"88.100.1/u{i},1,URL,https://e.com/{i}\n" for i in range(3)]
    lines += ["88.100.1/bad\rx,1,URL,x\n", "88.100.1/u9,1,URL,x\n"]
    with pytest.raises(ImportFailed, match="unreadable CSV") as failed:
        await run(db, lines, fmt="csv", chunk_rows=2)
    assert failed.value.report.loaded == 2
    assert sorted(await records(db)) == ["88.100.1/U0", "88.100.1/U1"]


# --- bad records ---------------------------------------------------------------------------


async def test_bad_records_are_reported_by_line_and_nothing_of_them_loads(db: str) -> None:
    good = url_value(1, "https://e.com/ok")
    lines: list[bytes] = [
        line("88.100.1/good-1", good),
        b'{"handle": "88.100.1/broken", "values": [',
        line("no-slash", good),
        line("88.100.1/bad-value", good, {"index": 2, "type": "URL", "data": {"format": "nope"}}),
        line("88.100.1/GOOD-1", good),
        line("88.999/elsewhere", good),
        line("88.100.1/repeated-index", good, url_value(1, "https://e.com/again")),
        b"",
        line("88.100.1/no-values"),
        line("88.100.1/too-many", *[url_value(i, "u") for i in range(1, 2049)]),
        b"[1, 2]",
        line("0.NA/77.1", good),
        line("88.100.1/good-2", good, {"index": 2, "type": "DESC", "data": "fine"}),
    ]
    rejected: list[tuple[int, str]] = []
    report = await run(db, lines, on_reject=lambda n, reason: rejected.append((n, reason)))
    assert report.loaded == 2
    assert report.rejected == 10 == len(report.errors)
    assert report.errors == rejected
    reasons = dict(report.errors)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    assert reasons[2].startswith("invalid JSON")
    assert "'/'" in reasons[3]
    assert "format" in reasons[4]
    assert reasons[5] == "the handle appears earlier in the file"
    assert reasons[6] == "prefix 88.999 is not homed on this node"
    assert "appears twice" in reasons[7]
    assert reasons[9] == "no values given"
    assert "2048" in reasons[10]
    assert "JSON object" in reasons[11]
    assert "77.1 is not administered here" in reasons[12]
    assert set(await records(db)) == {"88.100.1/GOOD-1", "88.100.1/GOOD-2"}


@pytest.mark.usefixtures("plain_forms")
async def test_values_no_door_accepts_are_rejected_by_line(db: str) -> None:
    """The rules of resolver.values.check_values hold on every path of the parser: the first
    records teach it the prefix and the type URL, so that the later ones take the fast paths."""

    def data(text: str) -> dict[str, Any]:
        return {"index": 1, "type": "URL", "data": text}

    lines: list[bytes] = [
        line("88.100.1/good-0", data("https://e.com/0")),
        line("88.100.1/good-1", data("https://e.com/1")),
        line("88.100.1/nul", data("https://e.com/\x00")),
        line("88.100.1/escape", {**data("\x1b[2J"), "ttl": 60}),
        line("88.100.1/del", data("a\x7fb"), {"index": 2, "type": "URL", "data": "x"}),
        line("88.100.1/c1", {**data(""), "data": {"format": "string", "value": "\x85"}}),
        line("88.100.1/type", {"index": 1, "type": "URL\x00", "data": "x"}),
        b'{"handle": "88.100.1/deep", "values": [{"index": 1, "type": "HS_SITE", "data": '
        + b'{"format": "site", "value": ' + b'{"a": ' * 254 + b"1" + b"}" * 254 + b"}}]}",
        line("88.100.1/good-2", data("tab\tand\nline ends are text")),
        line("88.100.1/good-3", data("C:\\bin\\u0000 is text")),
    ]  # fmt: skip
    report = await run(db, lines)
    reasons = dict(report.errors)
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8], reasons
    for number in (3, 4, 5, 6, 7):
        assert "control character" in reasons[number], reasons[number]
    assert "deeper than" in reasons[8]
    assert set(await records(db)) == {f"88.100.1/GOOD-{n}" for n in range(4)}


# --- importing again -----------------------------------------------------------------------


async def test_importing_again_changes_nothing(db: str) -> None:
    lines = [
        line("88.100.1/a", url_value(1, "https://e.com/a")),
        line("88.100.1/b", url_value(1, "https://e.com/b"), {"index": 2, "type": "X", "data": "y"}),
        line("88.100.1/key", {"index": 300, "type": "HS_SECKEY", "data": "s3cret"}),
    ]
    first = await run(db, lines)
    before = await records(db)
    # Later, so every value would get another timestamp and the secret another salt.
    again = await run(db, lines, now=NOW + 3600)
    assert (again.loaded, again.unchanged, again.rejected) == (3, 3, 0)
    assert first.unchanged == 0
    assert await records(db) == before


async def test_import_replaces_existing_records(db: str) -> None:
    await run(
        db,
        [
            line(
                "88.100.1/Keep-Case",
                url_value(1, "https://old"),
                {"index": 2, "type": "X", "data": "y"},
            ),
            line("88.100.1/same", url_value(1, "https://same")),
            line("88.100.1/key", {"index": 300, "type": "HS_SECKEY", "data": "old secret"}),
        ],
    )
    before = await records(db)
    report = await run(
        db,
        [
            line(
                "88.100.1/keep-case",
                url_value(1, "https://new"),
                {"index": 2, "type": "X", "data": "y"},
            ),
            line("88.100.1/same", url_value(1, "https://same")),
            line("88.100.1/key", {"index": 300, "type": "HS_SECKEY", "data": "new secret"}),
            line("88.100.1/fresh", url_value(1, "https://fresh")),
        ],
        now=NOW + 60,
    )
    assert (report.loaded, report.unchanged) == (4, 1)
    got = await records(db)
    changed = got["88.100.1/KEEP-CASE"]
    # The display text stays as registered; values that did not change keep their timestamps.
    assert (changed.handle, changed.version) == ("88.100.1/Keep-Case", 2)
    assert [(v.index, v.data.value, v.timestamp) for v in changed.values[:2]] == [
        (1, "https://new", NOW + 60),
        (2, "y", NOW),
    ]
    assert got["88.100.1/SAME"] == before["88.100.1/SAME"]
    (secret,) = [v for v in got["88.100.1/KEY"].values if v.type == "HS_SECKEY"]
    assert verify_secret("new secret", secret.data.value)
    assert got["88.100.1/KEY"].version == 2
    assert got["88.100.1/FRESH"].version == 1


# --- the fast path -------------------------------------------------------------------------

_INDEXES: list[object] = [1, 2, 3, 7, 100, 101, 2000, 0, -1, 2**32, True, "5", " 6", 1.5, None]
_TYPES: list[object] = [
    "URL",
    "DESC",
    "url.x",
    "HS_ADMIN",
    "hs_vlist",
    "HS_SECKEY",
    "hs_seckey",
    "hs_site",
    "HS_ALIAS",
    "x" * 1025,
    "",
    5,
    None,
]
_DATA: list[object] = [
    "text",
    "",
    "產品",
    {"format": "string", "value": "v"},
    {"value": "no format"},
    {"format": "string"},
    {"format": "string", "value": 3},
    {"format": "base64", "value": "aGk="},
    {"format": "hex", "value": "6869"},
    {"format": None, "value": "v"},
    7,
    None,
]
_OPTIONAL: dict[str, list[object]] = {
    "ttl": [60, 0, -1, 2**31, "3600", "2030-01-01T00:00:00Z", True, None, 1.0],
    "timestamp": ["2020-01-01T00:00:00Z", "yesterday", 1234, None],
    "permissions": ["1110", "0110", "*", "1111", "abc", 5, None],
    "references": [[], [{"handle": "88.100.1/x", "index": 1}], "", None],
    "extra": ["ignored"],
}


def _random_value(rnd: random.Random, plain: bool) -> dict[str, object]:
    """A value, of the common shape when ``plain``, else of any shape, valid or not."""
    if plain:
        value: dict[str, object] = {
            "index": rnd.randint(1, 3000),
            "type": rnd.choice(["URL", "DESC", "EMAIL", "名称", "HS_ALIAS"]),
            "data": rnd.choice(["x", {"format": "string", "value": "y"}]),
        }
    else:
        value = {
            "index": rnd.choice(_INDEXES),
            "type": rnd.choice(_TYPES),
            "data": rnd.choice(_DATA),
        }
        for name in rnd.sample(list(_OPTIONAL), rnd.randint(0, 3)):
            value[name] = rnd.choice(_OPTIONAL[name])
        if rnd.random() < 0.1:
            del value[rnd.choice(["index", "type", "data"])]
    return value


def _outcome(parse: Any, handle: str, values: object) -> bytes | str:
    try:
        return parse(handle, values)[2]  # type: ignore[no-any-return]
    except (HandleError, Rejected, ValueError, TypeError):
        return "rejected"


def test_fast_path_stores_what_parse_values_would() -> None:
    """The parser's fast path against the general one, on values of every shape."""
    rnd = random.Random(2026)
    fast_taken = 0
    for n in range(4000):
        fast = RecordParser([PREFIX], NOW)
        fast.row("88.100.1/first", [url_value(1, "u")])  # caches the prefix: enables the fast path
        slow = RecordParser([PREFIX], NOW)
        plain = n % 2 == 0
        values: object = [_random_value(rnd, plain) for _ in range(rnd.randint(1, 6))]
        if n % 97 == 0:
            values = rnd.choice([[], {}, "x", None, {"values": values}])
        admin = fast._admin_rows[PREFIX]
        if fast._fast_rows(values, admin) is not None:
            fast_taken += 1
        handle = f"88.100.1/h{n}"
        assert _outcome(fast.row, handle, values) == _outcome(slow._slow_row, handle, values), (
            values
        )
    assert fast_taken > 1500


def _almost_plain_value(rnd: random.Random) -> dict[str, object]:
    """A value of the common shape with one thing changed, valid or not."""
    value = _random_value(rnd, True)
    change = rnd.randrange(5)
    if change == 0:
        value["index"] = rnd.choice(_INDEXES)
    elif change == 1:
        value["type"] = rnd.choice(_TYPES)
    elif change == 2:
        value["data"] = rnd.choice(_DATA)
    elif change == 3:
        name = rnd.choice(list(_OPTIONAL))
        value[name] = rnd.choice(_OPTIONAL[name])
    else:
        del value[rnd.choice(["index", "type", "data"])]
    return value


def _line_outcome(parser: RecordParser, line: bytes) -> bytes | str:
    try:
        row = parser.line(line)
    except (HandleError, Rejected, ValueError, TypeError):
        return "rejected"
    return "blank" if row is None else row[2]


def _reference_outcome(parser: RecordParser, line: bytes) -> bytes | str:
    """What the import made of a JSONL line before any fast path: orjson, then parse_values."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "rejected" if line.strip() else "blank"
    if type(record) is not dict:
        return "rejected"
    text, values = record.get("handle"), record.get("values")
    if type(text) is not str or values is None:
        return "rejected"
    return _outcome(parser._slow_row, text, values)


def _spellings(rnd: random.Random, record: dict[str, Any]) -> bytes:
    """``record`` as JSON in one of many spellings, some of them broken."""
    how = rnd.randrange(12)
    if how == 0:  # spaces, and non-ASCII escaped
        return json.dumps(record, ensure_ascii=True).encode()
    if how == 1:  # keys in another order
        values = record["values"]
        if isinstance(values, list):
            values = [dict(reversed(v.items())) if isinstance(v, dict) else v for v in values]
        return json.dumps({"values": values, "handle": record["handle"]}).encode()
    if how == 2:  # repeated keys: the last one counts
        text = orjson.dumps(record)
        return text.replace(b'{"index":', b'{"index":"x","index":', 1)
    if how == 3:
        return orjson.dumps(record).replace(b'"handle":', b'"handle":7,"handle":', 1)
    if how == 4:  # a field more
        return orjson.dumps({**record, "note": [[{"deep": 1}]]})
    if how == 5:  # escapes where there were none
        return orjson.dumps(record).replace(b"/", b"\\/").replace(b"e", b"\\u0065")
    if how == 6:  # numbers in other forms
        return orjson.dumps(record).replace(
            b'"index":1,',
            rnd.choice(
                [
                    b'"index":1.0,',
                    b'"index":1e0,',
                    b'"index":-0,',
                    b'"index":true,',
                    b'"index":4294967296,',
                ]
            ),
        )
    if how == 7:  # bytes that are not UTF-8, or raw control characters
        text = orjson.dumps(record)
        at = rnd.randrange(len(text))
        return text[:at] + rnd.choice([b"\xff", b"\xed\xa0\x80", b"\x01", b"\xc3"]) + text[at:]
    if how == 8:  # broken JSON
        text = orjson.dumps(record)
        return text[: rnd.randrange(len(text))]
    if how == 9:  # ttl null, or data with a key more
        return orjson.dumps(record).replace(
            b'"data":"x"',
            rnd.choice(
                [
                    b'"data":"x","ttl":null',
                    b'"data":{"value":"x","format":"string","more":1}',
                    b'"data":{"value":"x"}',
                ]
            ),
        )
    return orjson.dumps(record) + rnd.choice([b"", b"\n", b"\r\n", b"  "])


_WARM = [url_value(1, "u")] + [
    {"index": i, "type": t, "data": "x"}
    for i, t in enumerate(["DESC", "EMAIL", "名称", "HS_ALIAS", "url.x"], 2)
]
"""Values of the prefix and the plain types the random lines use."""
_HANDLES = [
    "88.100.1/{n}",
    "88.100.1/Ü{n}",
    "88.100.1/ {n}",
    "88.100.1/a\tb{n}",
    "77.1/{n}",
    "88.100.1/{n}/x",
    "0.NA/88.100.1.{n}",
    "88.100.1",
    "88.100.1/{n}x",
    "88.100.1/{n}",
]


def _random_lines(rnd: random.Random, count: int, handles: int) -> Iterator[bytes]:
    """JSONL lines of every spelling and record of every shape, ``handles`` of them at most
    under one handle each (so some handles come twice)."""
    for n in range(count):
        values: object = [_random_value(rnd, True) for _ in range(rnd.randint(0, 5))]
        if n % 3:
            values.insert(rnd.randint(0, len(values)), _almost_plain_value(rnd))
        values = sorted(values, key=lambda v: str(v.get("index")).zfill(12)) if n % 5 else values
        if n % 89 == 0:
            values = rnd.choice([[], {}, "x", None, {"values": values}])
        text = rnd.choice(_HANDLES).format(n=n % handles)
        if n % 7 == 0:  # the longest handle, and one character more
            text = f"88.100.1/{n % handles:04d}" + "x" * rnd.choice([2035, 2036])
        record: dict[str, Any] = {"handle": text, "values": values}
        raw = _spellings(rnd, record) if n % 2 else orjson.dumps(record)
        if n % 250 == 0:
            raw = rnd.choice([b"", b"   ", b"[1, 2]", b"null", b'{"handle": "88.100.1/v"}'])
        yield raw


@pytest.fixture(params=["compiled", "python"])
def plain_forms(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The import's hot loop compiled (as installed), then in Python."""
    if request.param == "python":
        monkeypatch.setattr(importer, "plain_forms", python_plain_forms)


@pytest.mark.usefixtures("plain_forms")
def test_jsonl_lines_store_what_parse_values_would() -> None:
    """Lines through RecordParser.line (msgspec's typed decoding when installed) against
    orjson and the general parser, lines of every spelling and record of every shape."""
    rnd = random.Random(2027)
    fast = RecordParser([PREFIX], NOW)
    slow = RecordParser([PREFIX], NOW)
    # (The first record of a prefix takes the general path, the next ones learn the types.)
    for first in ("88.100.1/first", "88.100.1/second"):
        assert _line_outcome(fast, line(first, *_WARM)) != "rejected"
        assert _line_outcome(slow, line(first, *_WARM)) != "rejected"
    assert fast._decode is not None or msgspec is None
    typed = 0
    for raw in _random_lines(rnd, 5000, 4000):
        if fast._decode is not None:
            try:
                fast._decode(raw)
                typed += 1
            except (ValueError, RecursionError, msgspec.MsgspecError):
                pass
        assert _line_outcome(fast, raw) == _reference_outcome(slow, raw), raw
    assert msgspec is None or typed > 1000


@pytest.mark.usefixtures("plain_forms")
def test_blocks_of_lines_store_what_lines_one_by_one_would() -> None:
    """RecordParser.lines, which checks runs of typed records at once: each line's outcome as
    RecordParser.line gives it, a handle's later lines rejected whether in the same block as
    its first or not."""
    rnd = random.Random(2028)
    lines = [line("88.100.1/first", *_WARM), *_random_lines(rnd, 6000, 1500)]
    one = RecordParser([PREFIX], NOW)
    expected = [_line_outcome(one, raw) for raw in lines]
    blocks = RecordParser([PREFIX], NOW)
    got: list[bytes | str] = []
    while len(got) < len(lines):
        block = lines[len(got) : len(got) + rnd.choice([1, 2, 64, 300])]
        rows, errors = blocks.lines(block)
        rejected = {position for position, _ in errors}
        made = iter(rows)
        for position, raw in enumerate(block):
            if position in rejected:
                got.append("rejected")
            else:
                got.append(next(made)[2] if raw.strip() else "blank")
        assert next(made, None) is None
    assert got == expected
    assert expected.count("rejected") > 1000 and len(set(expected)) > 2000


def test_fast_path_checks_handles_as_handle_parse_does() -> None:
    parser = RecordParser([PREFIX], NOW)
    parser.row("88.100.1/first", [url_value(1, "u")])  # caches the prefix: enables the fast path
    suffixes = [
        "",
        "a",
        "with space",
        "a/b",
        "ünï",
        "x" * 2039,
        "x" * 2040,
        "a\tb",
        "a\x7f",
        "\x00",
    ]
    for n, suffix in enumerate(suffixes):
        text = f"88.100.1/{suffix}"
        try:
            expected: str | None = Handle.parse(text).key
        except HandleError:
            expected = None
        values = [url_value(1, str(n))]  # distinct records, so no duplicate of an earlier one
        try:
            got: str | None = parser.row(text, values)[0]
        except HandleError:
            got = None
        assert got == expected, suffix


# --- failures --------------------------------------------------------------------------------


async def test_missing_file_and_unmigrated_database_are_fatal(
    tmp_path: Path, pg_empty_url: str
) -> None:
    with pytest.raises(ImportFailed, match="cannot read"):
        await import_records(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "missing.jsonl")
    source = tmp_path / "ok.jsonl"
    source.write_bytes(line("88.100.1/a", url_value(1, "u")) + b"\n")
    with pytest.raises(ImportFailed, match="idis migrate"):
        await import_records(pg_empty_url, source)
    with pytest.raises(ImportFailed, match="cannot use the database"):
        await import_records("postgresql://postgres@127.0.0.1:1/none", source)
    with pytest.raises(ImportFailed, match="format"):
        await import_records(pg_empty_url, tmp_path / "records.txt")


# --- the command -----------------------------------------------------------------------------


def _idis(
    args: list[str], url: str, data_dir: Path, **options: Any
) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, IDIS_DATABASE_URL=url, IDIS_DATA_DIR=str(data_dir), **options.pop("env", {})
    )
    return subprocess.run(
        [sys.executable, "-m", "nodes.cli", "import", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **options,
    )


def test_command_end_to_end(pg_url: str, tmp_path: Path) -> None:
    asyncio.run(_home(pg_url))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    board = GenerationBoard(data_dir / "generations.board")
    generation = board.current("88.100.1/A")

    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join(line(f"88.100.1/a{i}", url_value(1, "u")) for i in range(50)))
    done = _idis([str(good)], pg_url, data_dir)
    assert done.returncode == 0, done.stderr
    assert "loaded 50 (0 unchanged), rejected 0" in done.stdout
    # Every worker's cached answers are invalidated, and the change log tells other hosts to.
    assert board.current("88.100.1/A") != generation
    assert asyncio.run(_logged(pg_url))[-1] == ALL_KEY

    mixed = tmp_path / "mixed.csv"
    mixed.write_text("handle,index,type,data\n88.100.1/c,1,URL,u\n99.1/c,1,URL,u\n")
    done = _idis([str(mixed)], pg_url, data_dir)
    assert done.returncode == 1
    assert f"{mixed}:3: prefix 99.1 is not homed on this node" in done.stderr
    assert "loaded 1 (0 unchanged), rejected 1" in done.stdout

    done = _idis(["-", "--format", "jsonl"], pg_url, data_dir, input=good.read_text())
    assert done.returncode == 0, done.stderr
    assert "loaded 50 (50 unchanged)" in done.stdout

    done = _idis([str(tmp_path / "missing.jsonl")], pg_url, data_dir)
    assert done.returncode == 2
    assert "cannot read" in done.stderr
    # The command migrates before importing unless told not to; an unreachable database then
    # fails in the import, with a message rather than a traceback.
    done = _idis(
        [str(good)],
        "postgresql://postgres@127.0.0.1:1/none",
        data_dir,
        env={"IDIS_MIGRATE_ON_START": "false"},
    )
    assert done.returncode == 2
    assert "cannot use the database" in done.stderr and "Traceback" not in done.stderr
    board.close()


def test_decoded_rows_match_the_stored_codec() -> None:
    """Rows built by the fast path decode with the stored codec to the values a PUT stores."""
    parser = RecordParser([PREFIX], NOW)
    parser.row("88.100.1/first", [url_value(1, "u")])
    _, _, data = parser.row(
        "88.100.1/x",
        [
            url_value(7, "u"),
            {"index": 2, "type": "D", "data": "d", "ttl": 5, "permissions": "1111"},
        ],
    )
    assert decode_values(data) == (
        HandleValue(2, "D", Data("string", "d"), ttl=5, timestamp=NOW, permissions=0b1111),
        HandleValue(7, "URL", Data("string", "u"), timestamp=NOW),
        ADMIN,
    )
