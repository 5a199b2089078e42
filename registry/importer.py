"""Bulk loading of identifiers (``idis import FILE``): JSONL or CSV in, one row per handle out.

Input formats (``fmt``, or from the file name: ``.jsonl``/``.ndjson``, ``.csv``):

- JSONL: one record per line, ``{"handle": "88.100.1/A1", "values": [...]}``, the values as the
  Handle REST API takes them in a PUT body.  Blank lines are skipped.
- CSV with a header row, either ``handle,values`` (the values as a JSON array in one cell) or
  ``handle,index,type,data`` with one row per value (``data`` a plain string), consecutive rows
  with the same handle forming one record.  Column order is free; other columns are an error.

Every record is validated as the REST write path would (handle syntax, every value, at most
2048 values, a prefix homed on this node, no handle twice in the file), and settled by the same
rules as a creation: a record without HS_ADMIN gets the default one
(:func:`registry.service.default_admin`), HS_SECKEY secrets are stored hashed.  A bad record is
reported by line with its reason and skipped; as a record is one row and a row is only built
from a fully validated record, no part of a bad record is ever loaded.  An import replaces
existing records like a PUT with overwrite, keeping their display text, the timestamps of
unchanged values and the hashes of unchanged secrets, so importing a file twice changes
nothing the second time.

PostgreSQL loads through COPY, chunk by chunk (each chunk commits on its own); a chunk that
meets existing rows falls back to COPY into a temporary staging table and one
``INSERT ... ON CONFLICT DO UPDATE``.  Parsing the next chunk overlaps the COPY of the previous
one.  SQLite, the embedded default, upserts each chunk in one transaction.

The parser has a fast path for the common shape of values (string data, integer index and
ttl, no references), which builds the stored rows directly; every other record goes through
:func:`resolver.codecs.json_api.parse_values`.  Both must produce identical bytes, which
``tests/test_importer.py`` checks.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import io
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import quote

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from registry.secrets import hash_secret, is_hashed, verify_secret
from registry.service import default_admin
from resolver.codecs.json_api import MAX_TYPE_LENGTH, STRUCTURED_FORMATS, parse_values
from resolver.codecs.stored import encode_values
from resolver.codecs.timefmt import parse_iso
from resolver.errors import HandleError
from resolver.identifiers import (
    MAX_HANDLE_BYTES,
    PREFIX_HANDLE_PREFIX,
    Handle,
    fold,
    parent_prefixes,
)
from resolver.values import (
    DEFAULT_PERMISSIONS,
    DEFAULT_TTL,
    HS_ADMIN,
    HS_SECKEY,
    MAX_INDEX,
    MAX_VALUES,
    HandleValue,
)

if TYPE_CHECKING:
    from nodes.settings import Settings

Row: TypeAlias = tuple[str, str, bytes]
"""One ``handles`` row as loaded: ``(key, handle, data)``; ``version`` takes its default."""

FORMATS = ("jsonl", "csv")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CHUNK_ROWS = 20_000
"""Rows per COPY and per transaction: large enough to amortise round trips and commits, small
enough that a retried chunk or a chunk in flight costs little memory."""
SLICE_LINES = 1_000
"""Lines parsed between two turns of the event loop, which let a COPY in flight send data."""
MAX_KEPT_ERRORS = 10_000
"""Rejections kept in :attr:`ImportReport.errors`; all of them are counted and reported."""

_COLUMNS = ("key", "handle", "data")
_MAX_TTL = 2**31 - 1
_CACHE_LIMIT = 100_000
"""Entries kept in each of the parser's caches, so that a hostile file cannot exhaust memory."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Types whose values the fast path must leave to parse_values: structured formats, and secret
# keys (default permissions differ, and the secret must be hashed).
_SPECIAL_TYPES = frozenset({*STRUCTURED_FORMATS, HS_SECKEY})
_PERMISSIONS = {format(bits, "04b"): bits for bits in range(16)} | {"*": 0xF}
_index = itemgetter(0)


class ImportFailed(Exception):
    """The import cannot go on (missing file, unreachable or unmigrated database, bad header).

    Chunks committed before the failure stay loaded: :attr:`report` counts them.
    """

    def __init__(self, message: str, report: ImportReport | None = None) -> None:
        super().__init__(message)
        self.report = report or ImportReport()


class Rejected(Exception):
    """A record is bad for a reason no parser of the core raises."""


@dataclass
class ImportReport:
    loaded: int = 0
    """Valid records now stored as the file gives them: inserted, replaced or already there."""
    unchanged: int = 0
    """Of :attr:`loaded`, those that were already stored with the same content."""
    rejected: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    """``(line, reason)`` of the first :data:`MAX_KEPT_ERRORS` rejected records."""
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Records loaded per second."""
        return self.loaded / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        return (
            f"loaded {self.loaded} ({self.unchanged} unchanged), rejected {self.rejected},"
            f" elapsed {self.elapsed:.2f} s, {self.rate:,.0f} identifiers/s"
        )


# --- validating records ------------------------------------------------------------------


class RecordParser:
    """Turns records into ``handles`` rows, with the rules of a creation through the REST API.

    :meth:`row` raises :class:`resolver.errors.HandleError`, :class:`Rejected`, ``ValueError``
    or ``TypeError`` for a bad record, with a message meant for the user.  A key is only
    remembered once its record is valid, so a bad first occurrence does not shadow a good one.
    """

    def __init__(self, homed: Iterable[str], now: int) -> None:
        self.now = now
        self._homed = frozenset(fold(p) for p in homed)
        self._seen: set[int] = set()
        # Per prefix text, the stored-form default HS_ADMIN row (index 100) of handles under it;
        # present only for homed, valid prefixes, so a hit also stands for those checks.
        self._admin_rows: dict[str, list[Any]] = {}
        self._plain_types: set[str] = set()
        self._timestamps: dict[str, int] = {}
        self.secret_keys: set[str] = set()
        """Keys of the rows returned since the last :meth:`take_secret_keys` whose data still
        hold plaintext HS_SECKEY secrets: they are hashed when written (see :func:`settle`)."""

    def take_secret_keys(self) -> set[str]:
        keys, self.secret_keys = self.secret_keys, set()
        return keys

    def row(self, text: object, raw_values: object) -> Row:
        if type(text) is not str:
            raise Rejected("the handle must be a string")
        if raw_values is None:
            raise Rejected("the record has no values")
        prefix, _, suffix = text.partition("/")
        admin = self._admin_rows.get(prefix)
        # The checks of Handle.parse for an ASCII handle under a prefix already validated.
        if (
            admin is None
            or not suffix
            or not text.isascii()
            or len(text) > MAX_HANDLE_BYTES
            or _CONTROL.search(text) is not None
        ):
            return self._slow_row(text, raw_values)
        rows = self._fast_rows(raw_values, admin)
        if rows is None:
            return self._slow_row(text, raw_values)
        key = text.upper()  # fold() of an ASCII text
        self._remember(key)
        return key, text, orjson.dumps(rows)

    def _remember(self, key: str) -> None:
        # Hashes rather than keys: a few million keys would hold gigabytes.  A false duplicate
        # needs two keys of one file to collide in 64 bits, and would be reported, not lost.
        digest = hash(key)
        if digest in self._seen:
            raise Rejected("the handle appears earlier in the file")
        self._seen.add(digest)

    def _fast_rows(self, raw: object, admin: list[Any]) -> list[list[Any]] | None:
        """The stored rows of values of the common shape, plus the default HS_ADMIN.

        None when any value is of another shape (or invalid): the caller then parses the record
        with parse_values, which either produces the same rows or says what is wrong.
        """
        # None of these values can be an HS_ADMIN, so the default one is always added.
        if type(raw) is not list or not raw or len(raw) >= MAX_VALUES:
            return None
        now = self.now
        plain_types = self._plain_types
        rows: list[list[Any]] = []
        last = 0
        ordered = True
        for value in raw:
            if type(value) is not dict:
                return None
            index = value.get("index")
            if type(index) is not int or not 1 <= index <= MAX_INDEX:
                return None
            type_ = value.get("type")
            if type(type_) is not str:
                return None
            if type_ not in plain_types and not self._plain_type(type_):
                return None
            data = value.get("data")
            if type(data) is str:
                payload = data
            elif (
                type(data) is dict
                and data.get("format", "string") == "string"
                and type(payload := data.get("value")) is str
            ):
                pass
            else:
                return None
            ttl = value.get("ttl")
            if ttl is None:
                ttl = DEFAULT_TTL
            elif type(ttl) is not int or not 0 <= ttl <= _MAX_TTL:
                return None
            if value.get("references"):
                return None
            stamp = value.get("timestamp")
            if type(stamp) is not str:
                stamp = now
            else:
                stamp = self._timestamp(stamp)
                if stamp is None:
                    return None
            row = [index, type_, "string", payload, ttl, stamp]
            permissions = value.get("permissions")
            if permissions is not None:
                bits = _PERMISSIONS.get(permissions) if type(permissions) is str else None
                if bits is None:
                    return None
                if bits != DEFAULT_PERMISSIONS:
                    row.append({"p": bits})
            rows.append(row)
            if index <= last:
                ordered = False
            last = index
        if not ordered:
            rows.sort(key=_index)
            if any(a[0] == b[0] for a, b in zip(rows, rows[1:])):
                return None  # a repeated index: parse_values says so
            last = rows[-1][0]
        if last < admin[0]:
            rows.append(admin)
            return rows
        used = {row[0] for row in rows}
        free = next(i for i in range(admin[0], admin[0] + MAX_VALUES + 1) if i not in used)
        bisect.insort(rows, [free, *admin[1:]], key=_index)
        return rows

    def _plain_type(self, type_: str) -> bool:
        if not 0 < len(type_) <= MAX_TYPE_LENGTH or type_.upper() in _SPECIAL_TYPES:
            return False
        if len(self._plain_types) < _CACHE_LIMIT:
            self._plain_types.add(type_)
        return True

    def _timestamp(self, text: str) -> int | None:
        stamp = self._timestamps.get(text)
        if stamp is None:
            try:
                stamp = parse_iso(text)
            except ValueError:
                return None
            if len(self._timestamps) >= _CACHE_LIMIT:
                self._timestamps.clear()
            self._timestamps[text] = stamp
        return stamp

    def _slow_row(self, text: str, raw_values: object) -> Row:
        """Any record, through Handle.parse and parse_values."""
        handle = Handle.parse(text)
        self._check_lives_here(handle)
        values = parse_values(raw_values, self.now, keep_timestamp=True)
        if not values:
            raise Rejected("no values given")
        if not any(v.type == HS_ADMIN for v in values):
            values = (*values, default_admin(handle, values, self.now))
        if len(values) > MAX_VALUES:
            raise Rejected(f"more than {MAX_VALUES} values with the default HS_ADMIN")
        key = handle.key
        self._remember(key)
        if any(_plain_secret(v) for v in values):
            self.secret_keys.add(key)
        if not handle.is_prefix_record and len(self._admin_rows) < _CACHE_LIMIT:
            admin = default_admin(handle, (), self.now)
            self._admin_rows[handle.prefix] = orjson.loads(encode_values((admin,)))[0]
        return key, text, encode_values(sorted(values, key=lambda v: v.index))

    def _check_lives_here(self, handle: Handle) -> None:
        """The rule of :meth:`resolver.homes.Homes.serves`, on the prefixes read at the start."""
        if handle.is_prefix_record:
            if not any(p in self._homed for p in parent_prefixes(fold(handle.suffix))):
                raise Rejected(
                    f"prefix {handle.suffix} is not administered here"
                    f" (no prefix it derives from is homed on this node)"
                )
        elif handle.prefix_key not in self._homed:
            raise Rejected(f"prefix {handle.prefix} is not homed on this node")


def _plain_secret(value: HandleValue) -> bool:
    # The Registrar's test, exactly: it hashes values typed HS_SECKEY (case and all).
    return (
        value.type == HS_SECKEY and value.data.format == "string" and not is_hashed(value.data.value)
    )


# --- settling against stored records ----------------------------------------------------------


def settle(rows: list[Row], secret_keys: set[str], existing: Mapping[str, bytes]) -> list[Row]:
    """The rows to write, given the stored data of those keys that exist already.

    As the write path does: plaintext secrets are hashed, unless the stored value at that index
    holds a hash they match; a value with the same content as the stored one keeps the stored
    one (its timestamp, its hash).  Rows whose data then equal the stored data are left out.
    """
    out: list[Row] = []
    for row in rows:
        key, text, data = row
        old = existing.get(key)
        if old is None:
            if key in secret_keys:
                row = (key, text, _settle_data(data, None))
            out.append(row)
        elif data != old:
            data = _settle_data(data, old)
            if data != old:
                out.append((key, text, data))
    return out


def _settle_data(data: bytes, old: bytes | None) -> bytes:
    before = {row[0]: row for row in orjson.loads(old)} if old is not None else {}
    settled = []
    for row in orjson.loads(data):
        stored = before.get(row[0])
        if row[1] == HS_SECKEY and row[2] == "string" and not is_hashed(row[3]):
            if (
                stored is not None
                and stored[1] == HS_SECKEY
                and stored[2] == "string"
                and verify_secret(row[3], stored[3])
            ):
                row[3] = stored[3]
            else:
                row[3] = hash_secret(row[3])
        # Same content: everything but the timestamp (index 5) of the stored form.
        if stored is not None and row[:5] == stored[:5] and row[6:] == stored[6:]:
            row = stored
        settled.append(row)
    if old is not None and len(settled) == len(before) and all(r is before[r[0]] for r in settled):
        return old
    return orjson.dumps(settled)


# --- reading input ---------------------------------------------------------------------------


@dataclass(slots=True)
class Chunk:
    rows: list[Row]
    secret_keys: set[str]


class _Counter(io.RawIOBase):
    """A binary stream that counts the bytes read through it, for the progress bar."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._raw.readinto(buffer)
        self.count += n or 0
        return n


