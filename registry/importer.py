"""Bulk loading of identifiers (``idis import FILE``): JSONL or CSV in, one row per handle out.

Input formats (``fmt``, or from the file name: ``.jsonl``/``.ndjson``, ``.csv``; the file
``-`` is standard input, JSONL unless told):

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
``INSERT ... ON CONFLICT DO UPDATE``.  The COPY parses records as it sends them, so the server
stores rows while the next ones are parsed, and while the database finishes a chunk the next
chunk's first records are parsed.  The rows of a chunk read from a JSONL file are not kept
meanwhile: should the chunk meet existing rows, its lines are read again.  SQLite, the
embedded default, upserts each chunk in one transaction.

The parser has fast paths for the common shape of values (string data, integer index and
ttl, no references, types seen before), which build the stored rows directly: with msgspec
installed, JSONL lines of that shape are decoded straight into typed records, whose stored
data :func:`registry.plain_forms.plain_forms` writes (compiled, where idis was installed
with a C compiler at hand); otherwise, and for CSV, from the dicts orjson makes.  Every other
record goes through :func:`resolver.codecs.json_api.parse_values`.  All must produce
identical bytes, which ``tests/test_importer.py`` and ``tests/test_plain_forms.py`` check.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import gc
import io
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, islice, pairwise
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, cast
from urllib.parse import quote

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from registry.changelog import ALL_KEY
from registry.import_index import ENTRY_COLUMNS, EntryRow, Indexer, stale_keys
from registry.plain_forms import plain_forms
from registry.secrets import is_stored, seal_secret, verify_secret
from registry.service import default_admin
from registry.stores.changes import append_changes
from registry.stores.sql import make_engine
from registry.templates import ImportGate, template_range
from resolver.codecs.json_api import parse_value, parse_values
from resolver.codecs.stored import encode_values
from resolver.codecs.timefmt import parse_iso
from resolver.errors import HandleError
from resolver.identifiers import (
    MAX_HANDLE_BYTES,
    Handle,
    fold,
    parent_prefixes,
)
from resolver.values import (
    ADMIN_INDEX,
    DEFAULT_PERMISSIONS,
    DEFAULT_TTL,
    HS_ADMIN,
    HS_SECKEY,
    MAX_INDEX,
    MAX_TEXT_LENGTH,
    MAX_VALUES,
    Data,
    HandleValue,
)

if TYPE_CHECKING:
    from nodes.settings import Settings

Row: TypeAlias = tuple[str, str, bytes]
"""One ``handles`` row as loaded: ``(key, handle, data)``; ``version`` takes its default."""

FORMATS = ("jsonl", "csv")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CHUNK_ROWS = 50_000
"""Rows per COPY and per transaction: large enough that what each costs the server (its start,
catching up at its end, the commit; the next chunk is parsed meanwhile) is little, small enough
that the rows kept in case the chunk must be merged (from CSV or standard input; a JSONL file
is read again instead), and those of the next chunk read meanwhile, cost little memory (about
30 MB a chunk)."""
PROGRESS_LINES = 1_000
"""Lines read between two progress reports."""
BLOCK_LINES = 128
"""JSONL lines parsed together (see :meth:`RecordParser.lines`): enough that what is done for
a block at once costs little a line, few enough that the block's decoded records stay in the
CPU's cache."""
MAX_KEPT_ERRORS = 10_000
"""Rejections kept in :attr:`ImportReport.errors`; all of them are counted and reported."""

_COLUMNS = ("key", "handle", "data")
_MAX_TTL = 2**31 - 1
_CACHE_LIMIT = 100_000
"""Entries kept in each of the parser's caches, so that a hostile file cannot exhaust memory."""
_MAX_CSV_FIELD = 16 * 2**20
_PERMISSIONS = {format(bits, "04b"): bits for bits in range(16)} | {"*": 0xF}
_index = itemgetter(0)
_key = itemgetter(0)
_DUPLICATE = "the handle appears earlier in the file"
_StoredRow: TypeAlias = tuple[Any, ...]
"""A value in the stored form (see :mod:`resolver.codecs.stored`), which orjson writes as an
array: ``(index, type, format, payload, ttl, timestamp[, extra])``."""

try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec only makes imports faster
    msgspec = None  # type: ignore[assignment]

_DECODER_TYPES = 1_000
"""Plain types named in the typed decoder of JSONL records (see :func:`_plain_decoder`)."""
_NOT_PLAIN: tuple[type[BaseException], ...] = ()
if msgspec is not None:
    _NOT_PLAIN = (msgspec.MsgspecError, ValueError, RecursionError)

    class _PlainData(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        """``{"format": "string", "value": ...}``, the format optional."""

        value: str
        format: Literal["string"] = "string"


def _plain_decoder(types: Iterable[str]) -> Callable[[bytes | str], Any] | None:
    """A msgspec decoder of JSONL records of plain values whose types are among ``types``
    (None without msgspec or types).

    A value there has an index, one of those types, string data and maybe a ttl in seconds,
    nothing else: what :meth:`RecordParser._plain_rows` takes, checked by msgspec as it parses,
    faster than orjson builds dicts; and so are the number of values (1 to MAX_VALUES - 1, so
    that the default HS_ADMIN fits) and the handle's length (MAX_HANDLE_BYTES characters: bytes
    for an ASCII handle, the only kind the typed path takes).  Unknown fields are refused at
    every level, so nothing is skipped unread (msgspec and orjson differ in how deep they
    nest), and a record decodes only if orjson reads it the same: both take the last of
    repeated keys and refuse invalid UTF-8 and lone surrogates.  A type decodes as the very
    string given here, never a new one.
    """
    names = tuple(types)
    if msgspec is None or not names:
        return None
    value = msgspec.defstruct(
        "PlainValue",
        [
            ("index", Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]),
            ("type", Literal[names]),
            ("data", str | _PlainData),
            ("ttl", Annotated[int, msgspec.Meta(ge=0, le=_MAX_TTL)], DEFAULT_TTL),
        ],
        forbid_unknown_fields=True,
        gc=False,
    )
    record = msgspec.defstruct(
        "PlainRecord",
        [
            ("handle", Annotated[str, msgspec.Meta(max_length=MAX_HANDLE_BYTES)]),
            (
                "values",
                Annotated[
                    list[value],  # type: ignore[valid-type]
                    msgspec.Meta(min_length=1, max_length=MAX_VALUES - 1),
                ],
            ),
        ],
        forbid_unknown_fields=True,
        gc=False,
    )
    return msgspec.json.Decoder(record).decode


def _decode_each(decode: Callable[[bytes | str], Any], lines: Sequence[bytes | str]) -> list[Any]:
    """``decode(line)`` for each line, None for the lines it refuses (see :data:`_NOT_PLAIN`).

    The lines are mapped in C rather than looped over in Python (some 0.1 µs a line): extend()
    keeps what it appended before an exception, and the map goes on after it.
    """
    decoded: list[Any] = []
    each = map(decode, lines)
    while True:
        try:
            decoded.extend(each)
            return decoded
        except _NOT_PLAIN:
            decoded.append(None)


class ImportFailed(Exception):
    """The import cannot go on (missing file, unreachable or unmigrated database, bad header).

    Chunks committed before the failure stay loaded: :attr:`report` counts them.
    """

    def __init__(self, message: str, report: ImportReport | None = None) -> None:
        super().__init__(message)
        self.report = report or ImportReport()


class Rejected(Exception):
    """A record is bad for a reason no parser of the core raises."""


# What the stored form (orjson's JSON, and plain_forms', byte for byte the same) of a string
# holding a character check_text refuses must contain: an escape of C0 other than tab and line
# ends, DEL, or C1 in UTF-8.  An escaped backslash before b, f or u00 matches too: such rows
# merely take the general path, which checks exactly.
_SUSPECT = re.compile(rb"\\u00|\\[bf]|\x7f|\xc2[\x80-\x9f]")


def _suspect(form: bytes) -> bool:
    """True unless the fast paths' ``form`` surely passes resolver.values.check_values (they
    take string data only, of types parse_value accepted)."""
    # Three scans for single bytes (memchr) cost far less than the regular expression, which
    # then runs on the rare form holding one of them.
    return len(form) > MAX_TEXT_LENGTH or (
        (b"\\" in form or b"\x7f" in form or b"\xc2" in form) and _SUSPECT.search(form) is not None
    )


_BAD_RECORD = (HandleError, Rejected, ValueError, TypeError)
"""What :meth:`RecordParser.row` raises for a bad record."""


@dataclass
class ImportReport:
    """What an import did; :meth:`summary` is the line ``idis import`` prints."""

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
        # present only for homed, valid prefixes, so a hit also stands for those checks.  The
        # same rows as JSON, for plain_forms.
        self._admin_rows: dict[str, _StoredRow] = {}
        self._admin_forms: dict[str, bytes] = {}
        self._plain_types: set[str] = set()
        """The types parse_values keeps as they are (see _plain_type)."""
        self._decode = _plain_decoder(())
        self._decoder_types = 0
        self._timestamps: dict[str, int] = {}
        self.secret_keys: set[str] = set()
        """Keys of the rows returned whose data still hold plaintext HS_SECKEY secrets: they are
        hashed when written (see :func:`settle`).  Rare, so kept for the whole import."""

    def line(self, line: bytes | str) -> Row | None:
        """The row of one JSONL line (None if it is blank), or :class:`Rejected` saying why its
        record is bad."""
        rows, errors = self.lines([line])
        if errors:
            raise Rejected(errors[0][1])
        return rows[0] if rows else None

    def lines(self, lines: Sequence[bytes | str]) -> tuple[list[Row], list[tuple[int, str]]]:
        """The rows of the good records of some JSONL lines, in line order, and ``(position in
        lines, reason)`` for each bad record; blank lines have neither.

        The same outcome as :meth:`line` on each line in turn, at less cost a line: the hot
        loop of an import.  With msgspec, lines of plain values of known types are decoded into
        typed records (:func:`_plain_decoder`) and their stored data written from those
        (:func:`registry.plain_forms.plain_forms`); the rest of the handle checks, the keys and
        the search for duplicates are then done for a run of such lines at once.  Any other
        line, and any record of them that meets something unusual (values out of order, a new
        prefix), goes through :meth:`any_line`, which learns the types and prefixes it meets
        (for the next lines given).
        """
        decode = self._decode
        records = _decode_each(decode, lines) if decode is not None else [None] * len(lines)
        rows: list[Row] = []
        # Reasons rather than exceptions: an exception's traceback would keep the block alive.
        errors: list[tuple[int, str]] = []
        position, end = 0, len(records)
        while position < end:
            # The run of plain records from here: under a prefix validated before (the
            # decoder checked the handle's length and the number of values; _add_run checks
            # the handle's characters).  Then the general path for the record that ends it,
            # once the run is done, so that of two records of one handle the later one is the
            # one rejected.
            texts: list[str] = []
            forms: list[bytes] = []
            stop = plain_forms(records, position, self._admin_forms, self.now, texts, forms)
            if texts:
                self._add_run(lines, position, texts, forms, rows, errors)
            if stop == end:
                break
            try:
                row = self.any_line(lines[stop])
            except _BAD_RECORD as error:
                errors.append((stop, _reason(error)))
            else:
                if row is not None:
                    rows.append(row)
            position = stop + 1
        return rows, errors

    def _add_run(
        self,
        lines: Sequence[bytes | str],
        start: int,
        texts: list[str],
        forms: list[bytes],
        rows: list[Row],
        errors: list[tuple[int, str]],
    ) -> None:
        """Add to ``rows`` those of ``lines[start:]``, whose handles are ``texts`` and whose
        stored forms are ``forms``, once their handles are checked (adding to ``errors`` as
        :meth:`lines` does).

        The rest of what row() checks of a handle, as Handle.parse would: for ASCII, printable
        means free of control characters, and characters are bytes.  Then the keys (fold() of an
        ASCII text) and no key seen before: all at once, and one by one only if something is
        amiss, to find what.
        """
        joined = "".join(texts)
        if joined.isascii() and joined.isprintable() and not _suspect(b"".join(forms)):
            keys = list(map(str.upper, texts))
            digests = list(map(hash, keys))  # see _remember
            fresh = set(digests)
            if len(fresh) == len(digests) and self._seen.isdisjoint(fresh):
                self._seen |= fresh
                rows.extend(zip(keys, texts, forms, strict=True))
                return
        for position, (text, form) in enumerate(zip(texts, forms, strict=True), start):
            row: Row | None
            try:
                if text.isascii() and text.isprintable() and not _suspect(form):
                    row = (text.upper(), text, form)
                    self._remember(row[0])
                else:
                    row = self.any_line(lines[position])  # which says what is wrong, if anything
            except _BAD_RECORD as error:
                errors.append((position, _reason(error)))
            else:
                if row is not None:
                    rows.append(row)

    def any_line(self, line: bytes | str) -> Row | None:
        """:meth:`line` without the typed decoding."""
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            if not line.strip():
                return None
            raise Rejected(f"invalid JSON: {error.msg} (column {error.colno})") from None
        if type(parsed) is not dict:
            raise Rejected("a record must be a JSON object with handle and values")
        try:
            return self.row(parsed.get("handle"), parsed.get("values"))
        finally:
            if self._decoder_types != len(self._plain_types) <= _DECODER_TYPES:
                self._decode = _plain_decoder(self._plain_types)
                self._decoder_types = len(self._plain_types)

    def row(self, text: object, raw_values: object) -> Row:
        """The row of the record of handle ``text`` with ``raw_values`` as a PUT body gives them
        (a list of values, mostly), or an exception saying why the record is bad."""
        if type(text) is not str:
            raise Rejected("the handle must be a string")
        if raw_values is None:
            raise Rejected("the record has no values")
        # What Handle.parse checks, for an ASCII handle under a prefix validated before: for
        # ASCII, printable means free of control characters, and characters are bytes.  (With
        # no slash, text[:-1] may name a prefix: the slash is checked too.)
        slash = text.find("/")
        admin = self._admin_rows.get(text[:slash])
        size = len(text)
        if (
            admin is None
            or not 0 < slash < size - 1
            or size > MAX_HANDLE_BYTES
            or not text.isascii()
            or not text.isprintable()
        ):
            return self._slow_row(text, raw_values)
        rows = self._plain_rows(raw_values, admin)
        if rows is None:
            rows = self._fast_rows(raw_values, admin)
            if rows is None:
                return self._slow_row(text, raw_values)
        form = orjson.dumps(rows)
        if _suspect(form):
            return self._slow_row(text, raw_values)
        key = text.upper()  # fold() of an ASCII text
        digest = hash(key)  # _remember, inline on this path
        if digest in self._seen:
            raise Rejected(_DUPLICATE)
        self._seen.add(digest)
        return key, text, form

    def _plain_rows(self, raw: object, admin: _StoredRow) -> list[_StoredRow] | None:
        """The stored rows of the commonest records, plus the default HS_ADMIN: values of index,
        type and data (and maybe ttl) only, in increasing index order, of types seen before.

        None for anything else (:meth:`_fast_rows` then has a go).  One pass, no call but the
        dict lookups; a value that is not a dict, or lacks a key, raises the KeyError or
        TypeError that sends the record on.
        """
        if type(raw) is not list or not 0 < len(raw) < MAX_VALUES:
            return None
        now = self.now
        plain_types = self._plain_types
        rows: list[_StoredRow] = []
        append = rows.append
        last = 0
        try:
            for value in raw:
                index = value["index"]
                type_ = value["type"]
                data = value["data"]
                # Increasing from 0: above 0 and no index twice.  An unhashable type raises.
                if type(index) is not int or index <= last or type_ not in plain_types:
                    return None
                if index >= ADMIN_INDEX and last < ADMIN_INDEX:
                    if index == ADMIN_INDEX:
                        return None  # the default HS_ADMIN goes elsewhere: _fast_rows
                    append(admin)
                if type(data) is not str:
                    if type(data) is not dict or data.get("format", "string") != "string":
                        return None
                    data = data.get("value")
                    if type(data) is not str:
                        return None
                if len(value) == 3:
                    append((index, type_, "string", data, DEFAULT_TTL, now))
                else:
                    ttl = value.get("ttl")
                    if len(value) != 4 or type(ttl) is not int or not 0 <= ttl <= _MAX_TTL:
                        return None
                    append((index, type_, "string", data, ttl, now))
                last = index
        except (KeyError, TypeError):
            return None
        if last > MAX_INDEX:
            return None
        if last < ADMIN_INDEX:
            append(admin)
        return rows

    def _remember(self, key: str) -> None:
        # Hashes rather than keys, at half the memory (some 60 bytes a record).  A false
        # duplicate needs two keys of one file to collide in 64 bits, and would be reported.
        digest = hash(key)
        if digest in self._seen:
            raise Rejected(_DUPLICATE)
        self._seen.add(digest)

    def _fast_rows(self, raw: object, admin: _StoredRow) -> list[Any] | None:
        """The stored rows of values of the common shape, plus the default HS_ADMIN.

        None when any value is of another shape (or invalid): the caller then parses the record
        with parse_values, which either produces the same rows or says what is wrong.
        """
        # None of these values can be an HS_ADMIN, so the default one is always added.
        if type(raw) is not list or not raw or len(raw) >= MAX_VALUES:
            return None
        now = self.now
        plain_types = self._plain_types
        rows: list[Any] = []
        last = 0
        ordered = True
        for value in raw:
            if type(value) is not dict:
                return None
            index = value.get("index")
            type_ = value.get("type")
            data = value.get("data")
            if type(index) is not int or not 0 < index <= MAX_INDEX or type(type_) is not str:
                return None
            if type_ not in plain_types and not self._plain_type(type_):
                return None
            if type(data) is not str:
                if type(data) is not dict or data.get("format", "string") != "string":
                    return None
                data = data.get("value")
                if type(data) is not str:
                    return None
            if len(value) == 3:  # index, type and data only: the defaults for the rest
                rows.append([index, type_, "string", data, DEFAULT_TTL, now])
            else:
                row = self._fast_row(value, index, type_, data)
                if row is None:
                    return None
                rows.append(row)
            if index <= last:
                ordered = False
            last = index
        if not ordered:
            rows.sort(key=_index)
            if any(a[0] == b[0] for a, b in pairwise(rows)):
                return None  # a repeated index: parse_values says so
        at = bisect.bisect_left(rows, ADMIN_INDEX, key=_index)
        if at == len(rows):
            rows.append(admin)
        elif rows[at][0] != ADMIN_INDEX:
            rows.insert(at, admin)
        else:
            used = {row[0] for row in rows}
            free = next(i for i in range(ADMIN_INDEX, ADMIN_INDEX + MAX_VALUES) if i not in used)
            bisect.insort(rows, [free, *admin[1:]], key=_index)
        return rows

    def _fast_row(
        self, value: dict[str, Any], index: int, type_: str, data: str
    ) -> list[Any] | None:
        """The stored row of a value with more than index, type and data; None as above."""
        ttl = value.get("ttl")
        if ttl is None:
            ttl = DEFAULT_TTL
        elif type(ttl) is not int or not 0 <= ttl <= _MAX_TTL:
            return None
        if value.get("references"):
            return None
        stamp = value.get("timestamp")
        if type(stamp) is not str:
            stamp = self.now
        else:
            stamp = self._timestamp(stamp)
            if stamp is None:
                return None
        row = [index, type_, "string", data, ttl, stamp]
        permissions = value.get("permissions")
        if permissions is not None:
            bits = _PERMISSIONS.get(permissions) if type(permissions) is str else None
            if bits is None:
                return None
            if bits != DEFAULT_PERMISSIONS:
                row.append({"p": bits})
        return row

    def _plain_type(self, type_: str) -> bool:
        """True if parse_values keeps values of this type as they are: string data allowed, the
        type spelled as given, default permissions (so not HS_ADMIN, HS_SECKEY, ...).

        Asked of parse_value itself, once per type, so that the fast path follows its rules.
        """
        probe = Data("string", "")
        try:
            value = parse_value({"index": 1, "type": type_, "data": ""}, 0)
        except (HandleError, ValueError, TypeError):
            return False
        if (value.type, value.data, value.permissions) != (type_, probe, DEFAULT_PERMISSIONS):
            return False
        # The types the creation rules act on (default HS_ADMIN, hashed secrets).
        if type_ in (HS_ADMIN, HS_SECKEY):
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
        if not handle.is_prefix_record and len(self._admin_rows) < _CACHE_LIMIT:
            admin = default_admin(handle, (), self.now)
            form = encode_values((admin,))[1:-1]  # the row, out of its list
            self._admin_rows[handle.prefix] = tuple(orjson.loads(form))
            self._admin_forms[handle.prefix] = form
        data = encode_values(sorted(values, key=lambda v: v.index))
        if any(_plain_secret(v) for v in values):
            self.secret_keys.add(key)
        return key, text, data

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
        value.type == HS_SECKEY
        and value.data.format == "string"
        and not is_stored(value.data.value)
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
        if row[1] == HS_SECKEY and row[2] == "string" and not is_stored(row[3]):
            if (
                stored is not None
                and stored[1] == HS_SECKEY
                and stored[2] == "string"
                and verify_secret(row[3], stored[3])
            ):
                row[3] = stored[3]
            else:
                row[3] = seal_secret(row[3])
        # Same content: everything but the timestamp (index 5) of the stored form.
        if stored is not None and row[:5] == stored[:5] and row[6:] == stored[6:]:
            row = stored
        settled.append(row)
    if old is not None and len(settled) == len(before) and all(r is before[r[0]] for r in settled):
        return old
    return orjson.dumps(settled)


# --- reading input ---------------------------------------------------------------------------


class _Counter(io.RawIOBase):
    """A binary stream that counts the bytes read through it, for the progress bar."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.count = 0
        self.fd: int | None = (
            raw.fileno() if isinstance(raw, io.FileIO) and raw.seekable() else None
        )
        """The descriptor of a regular file read from: its lines can be read again."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.fd is not None

    def tell(self) -> int:
        return int(self._raw.tell())

    def readinto(self, buffer: Any) -> int:
        n: int = self._raw.readinto(buffer)
        self.count += n or 0
        return n


def _lines_between(fd: int, start: int, end: int) -> Iterator[bytes]:
    """The lines of the file ``fd`` from byte ``start`` to byte ``end``, read without moving
    the file's position."""
    rest = b""
    while start < end:
        block = os.pread(fd, min(end - start, 1 << 20), start)
        if not block:
            break
        start += len(block)
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


@dataclass
class _Span:
    """The lines of a JSONL file read for one chunk, to be read again (:meth:`_Reader.replay`)."""

    start: int
    """Where the first line starts in the file."""
    line: int
    """The number of the line before the first."""
    end: int | None = None
    """Where the lines end, once they are all read."""
    rejected: set[int] = field(default_factory=set)
    """The numbers of the lines whose records were rejected."""


class _Reader:
    """The rows of the good records of some lines; bad records are counted and reported.

    :meth:`jsonl` and :meth:`csv` are lazy: records are parsed as their rows are asked for
    (JSONL lines a block of :data:`BLOCK_LINES` at a time), which lets a COPY send rows while
    the next ones are being parsed.
    """

    def __init__(
        self,
        parser: RecordParser,
        report: ImportReport,
        on_reject: Callable[[int, str], None] | None,
        on_progress: Callable[[], None],
        gate: ImportGate | None = None,
    ) -> None:
        self.parser = parser
        self.gate = gate
        self.indexer = Indexer(gate)
        """The search index rows of the rows read (registry/import_index.py)."""
        self.report = report
        self.on_reject = on_reject
        self.on_progress = on_progress
        self.records = 0
        """Records read so far, good and bad (updated every :data:`PROGRESS_LINES` lines at
        least)."""
        self.line = 0
        """JSONL lines read so far."""
        # Reading JSONL lines again (see replay): the file, where its reader stands, and the
        # span the lines read now belong to.
        self._fd: int | None = None
        self._tell: Callable[[], int] | None = None
        self._span: _Span | None = None

    @property
    def replayable(self) -> bool:
        """True if the lines :meth:`jsonl` reads can be read again (:meth:`start_span`)."""
        return self._fd is not None

    def replay_from(self, fd: int, tell: Callable[[], int]) -> None:
        """Let :meth:`replay` read lines again from the regular file ``fd``, whose lines
        :meth:`jsonl` is given by a reader standing at ``tell()``."""
        self._fd, self._tell = fd, tell

    def start_span(self) -> _Span:
        """The span of the lines :meth:`jsonl` reads from now on (until the next span)."""
        assert self._tell is not None
        self._span = _Span(self._tell(), self.line)
        return self._span

    def end_span(self, span: _Span) -> None:
        """End ``span`` where :meth:`jsonl` stands: its lines are all read."""
        assert self._tell is not None
        span.end = self._tell()

    def replay(self, span: _Span) -> list[Row]:
        """The rows of the lines of ``span`` read so far, parsed again, without their
        rejections (neither reported again nor read again).

        So that a chunk need not keep its rows in case it must be merged: keeping them cost
        about 1 µs a row (some 30% of an import's work), as 30 MB of fresh memory a chunk went
        back to the system and was faulted in again.
        """
        assert self._fd is not None and self._tell is not None
        end = self._tell() if span.end is None else span.end
        parser = self.parser
        rows: list[Row] = []
        numbered = (
            (number, text)
            for number, text in enumerate(_lines_between(self._fd, span.start, end), span.line + 1)
            if number not in span.rejected
        )
        # The keys of these rows are remembered already; among them, none twice.
        seen, parser._seen = parser._seen, set()
        try:
            while block := list(islice(numbered, BLOCK_LINES)):
                good, errors = parser.lines([text for _, text in block])
                if errors:
                    number = block[errors[0][0]][0]
                    raise ImportFailed(
                        f"line {number} reads differently than before: the file changed"
                    )
                rows.extend(good)
        finally:
            parser._seen = seen
        return rows

    def reject(self, line: int, reason: str) -> None:
        report = self.report
        report.rejected += 1
        if len(report.errors) < MAX_KEPT_ERRORS:
            report.errors.append((line, reason))
        if self._span is not None:
            self._span.rejected.add(line)
        if self.on_reject is not None:
            self.on_reject(line, reason)

    def jsonl(self, lines: Iterator[bytes | str], size: int) -> Iterator[list[Row]]:
        """The rows of the good records of the next of ``lines``, ``size`` rows at most, in
        blocks (a block's lines are parsed together).

        Lines are read no further than those rows need, so that the next call goes on from
        there and a span can start between the two.
        """
        while size > 0:
            # A line makes one row at most: no more lines than rows still wanted.
            block = list(islice(lines, min(BLOCK_LINES, size)))
            if not block:
                return
            rows, errors = self.parser.lines(block)
            first = self.line + 1
            self.line += len(block)
            for position, reason in errors:
                self.reject(first + position, reason)
            if self.gate is not None:
                rows = self._gated(rows, block, first, {p for p, _ in errors})
            self.records = self.line
            if (first - 1) // PROGRESS_LINES != self.line // PROGRESS_LINES:
                self.on_progress()
            size -= len(rows)
            yield rows

    def _gated(
        self, rows: list[Row], block: list[bytes | str], first: int, bad: set[int]
    ) -> list[Row]:
        """``rows`` (of ``block``'s good lines, from line ``first``) less those their data
        template refuses, which are rejected by line."""
        assert self.gate is not None
        if not self.gate.any_suspect([row[2] for row in rows]):
            return rows
        refusals = [(row, self.gate.refusal(row[2])) for row in rows]
        if all(reason is None for _, reason in refusals):
            return rows
        # Rare: find the lines of the refused rows (one good line a handle in a block).
        lines = {
            orjson.loads(text).get("handle"): n for n, text in enumerate(block) if n not in bad
        }
        for row, reason in refusals:
            if reason is not None:
                self._refuse(first + lines[row[1]], row, reason)
        return [row for row, reason in refusals if reason is None]

    def _refuse(self, line: int, row: Row, reason: str) -> None:
        # Forgotten, as a bad record's key is: a later good record of the handle may load.
        self.parser._seen.discard(hash(row[0]))
        self.parser.secret_keys.discard(row[0])
        self.reject(line, reason)

    def csv(self, lines: Iterable[str]) -> Iterator[Row]:
        # A record of many values can hold more than the default 128 KiB in its values cell.
        csv.field_size_limit(max(csv.field_size_limit(), _MAX_CSV_FIELD))
        reader = csv.reader(lines)
        try:
            header = [name.strip().lower() for name in next(reader)]
        except StopIteration:
            return
        records: Iterator[tuple[int, str, object]]
        if sorted(header) == ["handle", "values"]:
            records = _csv_records(reader, header)
        elif sorted(header) == ["data", "handle", "index", "type"]:
            records = _csv_value_rows(reader, header)
        else:
            raise ImportFailed(
                "the CSV header must name the columns handle,values or handle,index,type,data,"
                f" not {','.join(header)}"
            )
        number = 0
        for number, (line, text, raw) in enumerate(records, 1):
            if isinstance(raw, _Bad):
                self.reject(line, raw.reason)
            else:
                try:
                    good = self.parser.row(text, raw)
                except (HandleError, Rejected, ValueError, TypeError) as error:
                    self.reject(line, _reason(error))
                else:
                    refusal = self.gate.refusal(good[2]) if self.gate is not None else None
                    if refusal is None:
                        yield good
                    else:
                        self._refuse(line, good, refusal)
            if not number % PROGRESS_LINES:
                self.records = number
                self.on_progress()
        self.records = number


class Chunk:
    """The rows of ``blocks`` (lists of rows, which read records of ``reader``'s as they are
    asked for), written in one transaction.

    The rows are read once, by :meth:`for_copy` or :meth:`collect`; before that, the first
    blocks may be read ahead (:meth:`read_ahead`).  A COPY that meets existing records is
    redone as a merge, which needs the rows it read again: the reader reads their lines again
    if it can (a JSONL file), else the rows are kept as they pass (:attr:`kept`).
    """

    def __init__(self, blocks: Iterator[list[Row]], reader: _Reader) -> None:
        self._blocks = blocks
        self._ahead: list[list[Row]] = []
        self._failed: Exception | None = None
        self._sent = False  # by a COPY, without keeping them
        self._reader = reader
        self._span = reader.start_span() if reader.replayable else None
        self.secret_keys = reader.parser.secret_keys
        """Keys whose rows hold plaintext secrets (:attr:`RecordParser.secret_keys`)."""
        self.kept: list[Row] = []
        self.entries: list[EntryRow] = []
        """The search index rows of the rows :meth:`for_copy` yielded."""
        self.count = 0
        """The rows written (set by the writer)."""
        self.all_read = asyncio.Event()
        """Set once every row is read: the writer then only waits for the database."""

    def read_ahead(self) -> bool:
        """Read the next block of rows, before the rows are asked for; False if there is none.

        An error reading it is raised when the rows are asked for, where it would have been
        without reading ahead.
        """
        if self._failed is not None:
            return False
        try:
            block = next(self._blocks, None)
        except Exception as error:  # raised again by _each_block
            self._failed = error
            return False
        if block is None:
            self._read_all()
            return False
        self._ahead.append(block)
        return True

    def _rows(self) -> Iterator[Row]:
        return chain.from_iterable(self._each_block())

    def _each_block(self) -> Iterator[list[Row]]:
        ahead, self._ahead = self._ahead, []
        yield from ahead
        if self._failed is not None:
            raise self._failed
        # Not "yield from": closing this generator, left half read, would close the blocks.
        for block in self._blocks:  # noqa: UP028
            yield block
        self._read_all()

    def _read_all(self) -> None:
        if self._span is not None and self._span.end is None:
            self._reader.end_span(self._span)
        self.all_read.set()

    def for_copy(self) -> Iterable[Row]:
        """The rows as new records: plaintext secrets hashed.

        They are kept for :meth:`collect` only if their lines cannot be read again.
        """
        blocks = self._each_block()
        if self._span is None:
            blocks = map(self._keep, blocks)
        else:
            self._sent = True
        return chain.from_iterable(map(self._index, map(self._hash_secrets, blocks)))

    def _index(self, block: list[Row]) -> list[Row]:
        self.entries += self._reader.indexer.rows(block)
        return block

    def index_rows(self, rows: Sequence[Row]) -> list[EntryRow]:
        """The search index rows of ``rows`` (settled rows of a merge)."""
        return self._reader.indexer.rows(rows)

    def _keep(self, block: list[Row]) -> list[Row]:
        self.kept.extend(block)
        return block

    def _hash_secrets(self, block: list[Row]) -> list[Row]:
        secret_keys = self.secret_keys
        if secret_keys and not secret_keys.isdisjoint(map(_key, block)):
            return settle(block, secret_keys, {})
        return block

    def collect(self) -> list[Row]:
        """All the rows, as parsed (after :meth:`for_copy`: all it did not yield yet too)."""
        if self._span is not None and self._sent:
            self.kept = self._reader.replay(self._span)  # sent by the COPY, not kept
        self.kept.extend(self._rows())
        self.count = len(self.kept)
        return self.kept


def _in_blocks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """The next ``size`` of ``rows`` at most, in blocks of :data:`BLOCK_LINES`."""
    some = islice(rows, size)
    while block := list(islice(some, BLOCK_LINES)):
        yield block


@dataclass(frozen=True, slots=True)
class _Bad:
    """What is wrong with a CSV record, in place of its values."""

    reason: str


def _csv_records(reader: Any, header: list[str]) -> Iterator[tuple[int, str, object]]:
    """``(line, handle, raw values or _Bad)`` of ``handle,values`` rows."""
    handle_at, values_at = header.index("handle"), header.index("values")
    line = reader.line_num
    for cells in _cells(reader):
        start, line = line + 1, reader.line_num
        if not cells:
            continue
        if len(cells) != 2:
            yield start, "", _Bad(f"expected 2 fields, found {len(cells)}")
            continue
        try:
            raw = orjson.loads(cells[values_at])
        except orjson.JSONDecodeError as error:
            raw = _Bad(f"the values are not valid JSON: {error.msg} (column {error.colno})")
        yield start, cells[handle_at], raw


def _csv_value_rows(reader: Any, header: list[str]) -> Iterator[tuple[int, str, object]]:
    """``(first line, handle, raw values or _Bad)`` of each run of ``handle,index,type,data``
    rows with the same handle."""
    handle_at, index_at = header.index("handle"), header.index("index")
    type_at, data_at = header.index("type"), header.index("data")
    text: str | None = None
    first = 0
    values: list[dict[str, object]] = []
    problem: _Bad | None = None
    line = reader.line_num
    for cells in _cells(reader):
        start, line = line + 1, reader.line_num
        if not cells:
            continue
        handle = cells[handle_at] if len(cells) > handle_at else ""
        if handle != text:
            if text is not None:
                yield first, text, problem or values
            text, first, values, problem = handle, start, [], None
        if len(cells) != 4:
            # The whole record is bad: loading its other rows would load half a record.
            problem = problem or _Bad(f"line {start} has {len(cells)} fields, not 4")
            continue
        # Plain digits become the integer the fast path takes; parse_values reads anything
        # else (and says what is wrong with it).
        index = cells[index_at]
        number: object = int(index) if index.isascii() and index.isdigit() else index
        values.append({"index": number, "type": cells[type_at], "data": cells[data_at]})
    if text is not None:
        yield first, text, problem or values


def _cells(reader: Any) -> Iterator[list[str]]:
    """The rows of a csv reader; a row the csv module cannot read stops the import."""
    try:
        yield from reader
    except csv.Error as error:
        raise ImportFailed(f"line {reader.line_num}: unreadable CSV: {error}") from None


def _reason(error: Exception) -> str:
    if isinstance(error, HandleError):
        return error.message
    return str(error) or type(error).__name__


def _format(source: object, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ImportFailed(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-":
        suffix = Path(source).suffix.lower()
        if suffix not in SUFFIX_FORMATS:
            raise ImportFailed(
                f"cannot tell the format of {os.fspath(source)} from its name"
                " (.jsonl, .ndjson, .csv): give it (--format jsonl or csv)"
            )
        return SUFFIX_FORMATS[suffix]
    return "jsonl"


def _open_source(
    source: str | os.PathLike[str] | Iterable[bytes | str], kind: str, stack: ExitStack
) -> tuple[Iterable[bytes | str], _Counter | None]:
    """The lines of ``source``, and the counter of bytes read when it is a file."""
    if not isinstance(source, (str, os.PathLike)):
        if kind == "csv":
            return (
                line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
                for line in source
            ), None
        return source, None
    if os.fspath(source) == "-":
        raw: Any = sys.stdin.buffer
    else:
        try:
            raw = stack.enter_context(open(source, "rb", buffering=0))  # noqa: SIM115
        except OSError as error:
            raise ImportFailed(f"cannot read {os.fspath(source)}: {error.strerror}") from None
    counter = _Counter(raw)
    binary = io.BufferedReader(counter, 1 << 20)
    if kind == "jsonl":
        return binary, counter
    # Undecodable bytes survive as surrogates, which make their record invalid (and reported)
    # rather than the whole file unreadable.
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
    return text, counter


# --- writing -----------------------------------------------------------------------------

_STAGE = "idis_import_stage"
_EXISTING_PG = "SELECT key, data FROM handles WHERE key = ANY($1::text[])"
_CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (key text, handle text, data bytea)"
    " ON COMMIT DELETE ROWS"
)
# The display text of an existing handle stays as registered, as with a PUT; the WHERE keeps
# a concurrent identical write from counting as a change.
_MERGE_PG = (
    f"INSERT INTO handles AS h (key, handle, data) SELECT key, handle, data FROM {_STAGE}"
    " ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, version = h.version + 1"
    " WHERE h.data IS DISTINCT FROM EXCLUDED.data"
)
_DROP_ENTRIES_PG = "DELETE FROM attr_index WHERE key = ANY($1::text[])"
_DROP_ENTRIES_SQLITE = "DELETE FROM attr_index WHERE key = ?"
_INSERT_ENTRIES_SQLITE = (
    f"INSERT INTO attr_index ({', '.join(ENTRY_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
)
_EXISTING_SQLITE = "SELECT key, data FROM handles WHERE key IN (SELECT value FROM json_each(?))"
_UPSERT_SQLITE = (
    "INSERT INTO handles (key, handle, data) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET data = excluded.data, version = handles.version + 1"
    " WHERE handles.data IS NOT excluded.data"
)


class _PostgresWriter:
    """COPY chunk by chunk on one connection; a chunk meeting existing rows is merged."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._conn = connection
        self._merging = False

    @classmethod
    async def connect(cls, dsn: str) -> _PostgresWriter:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute("SELECT 1 FROM handles LIMIT 0")
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def homed_prefixes(self) -> list[str]:
        return [record[0] for record in await self._conn.fetch("SELECT prefix FROM prefixes")]

    async def templates(self, prefixes: Iterable[str]) -> ImportGate:
        found = []
        for prefix in prefixes:
            low, high = template_range(fold(prefix))
            found += await self._conn.fetch(_TEMPLATES, low, high)
        return ImportGate((record[0], record[1]) for record in found)

    async def write(self, chunk: Chunk) -> int:
        """Store the chunk in one transaction; the number of rows that were already stored.

        The COPY reads the rows while it sends them, so that the server stores each row while
        the next ones are parsed.
        """
        if not self._merging:
            try:
                # One transaction: the records and their search index rows, or neither.
                async with self._conn.transaction():
                    status = await self._conn.copy_records_to_table(
                        "handles", records=chunk.for_copy(), columns=_COLUMNS
                    )
                    if chunk.entries:
                        await self._conn.copy_records_to_table(
                            "attr_index", records=chunk.entries, columns=ENTRY_COLUMNS
                        )
                chunk.count = int(status.rpartition(" ")[2])  # "COPY <rows>"
                return 0
            except asyncpg.UniqueViolationError:
                pass  # some of these handles exist already: merge the chunk instead
        kept = chunk.collect()
        if not kept:
            return 0
        async with self._conn.transaction():
            found = await self._conn.fetch(_EXISTING_PG, [row[0] for row in kept])
            existing = {record[0]: record[1] for record in found}
            # Off the event loop: verifying or hashing a secret takes tens of milliseconds.
            rows = await asyncio.to_thread(settle, kept, chunk.secret_keys, existing)
            if rows:
                await self._conn.execute(_CREATE_STAGE)
                await self._conn.copy_records_to_table(_STAGE, records=rows, columns=_COLUMNS)
                await self._conn.execute(_MERGE_PG)
                entries = chunk.index_rows(rows)
                stale = stale_keys(rows, existing, entries)
                if stale:
                    await self._conn.execute(_DROP_ENTRIES_PG, stale)
                if entries:
                    await self._conn.copy_records_to_table(
                        "attr_index", records=entries, columns=ENTRY_COLUMNS
                    )
        # Existing handles come in runs (a file imported again): merge at once while they do,
        # rather than pay for a failing COPY per chunk.
        self._merging = bool(existing)
        return len(kept) - len(rows)

    async def close(self) -> None:
        await self._conn.close()


class _SqliteWriter:
    """An upsert per chunk and transaction (in a thread: SQLite's calls block)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._writing: asyncio.Future[int] | None = None

    @classmethod
    async def connect(cls, path: str) -> _SqliteWriter:
        return cls(await asyncio.to_thread(cls._connect, path))

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        # mode=rw: a missing file is an error here, not a new empty database.
        connection = sqlite3.connect(
            f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            # As the store does: readers proceed during the import, and the import waits for
            # a server's write lock rather than fail.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute("SELECT 1 FROM handles LIMIT 0")
        except BaseException:
            connection.close()
            raise
        return connection

    async def homed_prefixes(self) -> list[str]:
        def read() -> list[str]:
            return [row[0] for row in self._conn.execute("SELECT prefix FROM prefixes")]

        return await asyncio.to_thread(read)

    async def templates(self, prefixes: Iterable[str]) -> ImportGate:
        def read() -> ImportGate:
            ranges = [template_range(fold(prefix)) for prefix in prefixes]
            query = _TEMPLATES.replace("$1", "?").replace("$2", "?")
            return ImportGate(
                row for low_high in ranges for row in self._conn.execute(query, low_high)
            )

        return await asyncio.to_thread(read)

    async def write(self, chunk: Chunk) -> int:
        """Store the chunk in one transaction; the number of rows that were already stored."""
        kept = chunk.collect()
        if not kept:
            return 0
        self._writing = asyncio.ensure_future(
            asyncio.to_thread(self._write, kept, chunk.secret_keys, chunk.index_rows)
        )
        # Shielded: a cancelled import (Ctrl-C) cannot stop the thread, and :meth:`close` must
        # know when it is done.
        return await asyncio.shield(self._writing)

    def _write(
        self,
        kept: list[Row],
        secret_keys: set[str],
        index_rows: Callable[[Sequence[Row]], list[EntryRow]],
    ) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            keys = orjson.dumps([row[0] for row in kept]).decode()
            existing = dict(conn.execute(_EXISTING_SQLITE, (keys,)).fetchall())
            rows = settle(kept, secret_keys, existing)
            conn.executemany(_UPSERT_SQLITE, rows)
            entries = index_rows(rows)
            stale = stale_keys(rows, existing, entries)
            conn.executemany(_DROP_ENTRIES_SQLITE, [(key,) for key in stale])
            conn.executemany(_INSERT_ENTRIES_SQLITE, entries)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return len(kept) - len(rows)

    async def close(self) -> None:
        """Close the connection once a write still running in its thread has ended (its chunk
        then is committed or rolled back whole): closing it under the thread would crash the
        interpreter."""
        if self._writing is not None:
            await asyncio.wait([self._writing])
            if not self._writing.cancelled():
                self._writing.exception()  # retrieved: the caller saw its own cancellation
        await asyncio.to_thread(self._conn.close)


_Writer: TypeAlias = _PostgresWriter | _SqliteWriter
_TEMPLATES = "SELECT key, data FROM handles WHERE key >= $1 AND key < $2"
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error)


async def _connect(url: str) -> _Writer:
    try:
        parsed = make_url(url)
    except ValueError:
        raise ImportFailed(f"{url!r} is not a database URL") from None
    where = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            return await _SqliteWriter.connect(parsed.database or "")
        if backend in ("postgresql", "postgres"):
            dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            return await _PostgresWriter.connect(dsn)
    except (asyncpg.UndefinedTableError, sqlite3.OperationalError) as error:
        if "handles" in str(error):
            raise ImportFailed(f"{where} has no idis tables: run `idis migrate` first") from None
        raise ImportFailed(f"cannot use the database {where}: {error}") from None
    except _DATABASE_ERRORS as error:
        raise ImportFailed(f"cannot use the database {where}: {error}") from None
    raise ImportFailed(f"unsupported database URL {where}: use sqlite:/// or postgresql://")


# --- the import --------------------------------------------------------------------------


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile (as it was after).

    An import makes millions of short-lived containers, and no cycles but a few of asyncio's
    a chunk: the collector's passes over the rows of a chunk, which found nothing to free,
    took some 5% of an import's time (a 200k-row import: 78 of them, 0.06 s of 1.1 s).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def _write(
    writer: _Writer, chunk: Chunk, following: Callable[[], Chunk]
) -> tuple[int, Chunk]:
    """``writer.write(chunk)``, and the chunk after it, whose first rows are read meanwhile.

    Once the chunk's rows are all read, the writer only waits for the database (to store the
    last rows sent, to commit, to merge): rows read then cost no time.
    """
    writing = asyncio.ensure_future(writer.write(chunk))
    read = asyncio.ensure_future(chunk.all_read.wait())
    try:
        await asyncio.wait((writing, read), return_when=asyncio.FIRST_COMPLETED)
        after = following()
        # One block at a time, so that the writer sees the database's answer soon after it
        # comes.
        while not writing.done() and after.read_ahead():
            await asyncio.sleep(0)
    except BaseException:
        # Interrupted: as if the write had been, and it ends before the connection closes.
        writing.cancel()
        await asyncio.wait((writing,))
        raise
    finally:
        read.cancel()
    return await writing, after


async def import_records(
    url: str,
    source: str | os.PathLike[str] | Iterable[bytes | str],
    *,
    fmt: str | None = None,
    now: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    on_reject: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    report: ImportReport | None = None,
) -> ImportReport:
    """Load the records of ``source`` into the (migrated) database at ``url``.

    ``source`` is a file path, ``"-"`` for standard input, or the lines themselves (bytes or
    str).  ``fmt`` is ``"jsonl"`` or ``"csv"``; by default it follows the file's suffix, and
    lines are JSONL.  ``now`` stamps the values that carry no timestamp.  ``on_reject(line,
    reason)`` is called for each bad record when it is found, ``on_progress(bytes_read,
    records_read)`` every :data:`PROGRESS_LINES` lines (bytes only count for files).
    ``report``, if given, is the report to fill, read as it goes by whoever shows progress.

    Bad records are counted and skipped; the report says how many records were loaded.
    Raises :class:`ImportFailed` when the import cannot start or go on; chunks committed by
    then stay loaded and the exception's report counts them.  Nothing here invalidates caches:
    that is the caller's business (:func:`run_import` does it).
    """
    started = time.perf_counter()
    report = ImportReport() if report is None else report
    kind = _format(source, fmt)
    with ExitStack() as stack:
        stack.enter_context(_cyclic_gc_paused())
        lines, counter = _open_source(source, kind, stack)
        writer = await _connect(url)
        try:
            homed = await writer.homed_prefixes()
            parser = RecordParser(homed, now or int(time.time()))
            gate = await writer.templates(homed)

            def progress() -> None:
                if on_progress is not None:
                    on_progress(counter.count if counter else 0, reader.records)

            reader = _Reader(parser, report, on_reject, progress, gate)
            take: Callable[[int], Iterator[list[Row]]]  # the next chunk's rows, so many at most
            if kind == "jsonl":
                if counter is not None and counter.fd is not None:
                    reader.replay_from(counter.fd, cast(io.BufferedReader, lines).tell)
                take = partial(reader.jsonl, iter(lines))
            else:
                take = partial(_in_blocks, reader.csv(cast(Iterable[str], lines)))  # decoded
            chunk = Chunk(take(chunk_rows), reader)
            while True:
                unchanged, following = await _write(
                    writer, chunk, lambda: Chunk(take(chunk_rows), reader)
                )
                if not chunk.count:
                    break
                report.loaded += chunk.count
                report.unchanged += unchanged
                chunk = following
            progress()
        except ImportFailed as error:
            error.report = report
            raise
        except _DATABASE_ERRORS as error:
            raise ImportFailed(
                f"import stopped after loading {report.loaded} records: {error}", report
            ) from error
        finally:
            await writer.close()
            report.elapsed = time.perf_counter() - started
    return report


# --- the command ---------------------------------------------------------------------------


async def log_everything(url: str) -> None:
    """Append :data:`registry.changelog.ALL_KEY` to the change log of the database at ``url``."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await append_changes(conn, [ALL_KEY])
    finally:
        await engine.dispose()


def run_import(
    settings: Settings,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    quiet: bool = False,
    report: ImportReport | None = None,
) -> int:
    """``idis import FILE``; the exit code: 0 all loaded, 1 some records rejected, 2 fatal.

    Bad records go to stderr as ``FILE:LINE: reason`` and the summary to stdout; the progress
    bar shows on a terminal unless ``quiet``.  A bulk load bypasses the write path's
    invalidation, so afterwards every worker of this host drops its cached answers, and the
    change log gets :data:`registry.changelog.ALL_KEY`: every other host does the same, and a
    mirror following the change feed re-synchronises.  ``report`` is filled as the import goes
    (``idis import`` shows it in the node's metrics).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    name = os.fspath(path)
    show = not quiet and sys.stdout.isatty()
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        size: int | None = os.path.getsize(name) if name != "-" else None
    except OSError:
        size = None  # the import reports the missing file
    bar = Progress(
        BarColumn(bar_width=24),
        DownloadColumn(),
        TextColumn("{task.fields[records]:,} records, {task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    )
    task = bar.add_task("import", total=size, records=0, rate=0.0)
    started = time.perf_counter()

    def rejected(line: int, reason: str) -> None:
        if show:
            console.print(f"{name}:{line}: {reason}", markup=False)
        else:
            print(f"{name}:{line}: {reason}", file=sys.stderr)

    def progressed(done: int, records: int) -> None:
        rate = records / max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=done, records=records, rate=rate)

    code = 0
    try:
        with bar:
            report = asyncio.run(
                import_records(
                    settings.database_url,
                    path,
                    fmt=fmt,
                    on_reject=rejected,
                    on_progress=progressed if show else None,
                    report=report,
                )
            )
    except ImportFailed as error:
        print(f"idis import: {error}", file=sys.stderr)
        report, code = error.report, 2
    except KeyboardInterrupt:
        _invalidate(settings)  # the chunks committed before the interrupt stay loaded
        raise
    if report.elapsed:  # the import started: say what it did, even if it stopped
        print(report.summary())
    if report.loaded > report.unchanged and not _invalidate(settings):
        code = 2
    if report.loaded > report.unchanged and settings.quota.registrations_per_prefix:
        _recount(settings)
    return code or (1 if report.rejected else 0)


def _recount(settings: Settings) -> None:
    """Bring the registration quota's counts (604) up to what lives under each prefix now.

    An import is the operator's bulk load, not an integrator's door: it is not refused, but
    its handles count, so that quota stays the number of handles a prefix holds; a prefix now
    past its quota is said so (creations there are refused until some are deleted)."""
    from registry.stores.counters import SqlCounters

    async def recount() -> dict[str, int]:
        counters = SqlCounters(settings.database_url)
        try:
            return await counters.recount_registrations()
        finally:
            await counters.close()

    limit = settings.quota.registrations_per_prefix
    try:
        counts = asyncio.run(recount())
    except Exception as error:  # the database went away after the load
        print(f"idis import: cannot recount the registration quota ({error})", file=sys.stderr)
        return
    for prefix, count in sorted(counts.items()):
        if count > limit:
            print(
                f"idis import: prefix {prefix} now holds {count} handles, past its registration"
                f" quota of {limit}: creations under it are refused (604) until some are deleted",
                file=sys.stderr,
            )


def _invalidate(settings: Settings) -> bool:
    """Make every worker of every host drop its cached answers (this host's at once, the
    others' through the change log); False (and say so) if it fails."""
    from nodes.bootstrap import build_generations
    from nodes.generation_board import GenerationBoard

    try:
        asyncio.run(log_everything(settings.database_url))
    except Exception as error:  # the database went away after the load
        print(
            f"idis import: loaded, but cannot log the load in the change log ({error}); other"
            " hosts and mirrors see the new records as their caches expire",
            file=sys.stderr,
        )
        return False
    try:
        generations = build_generations(settings)
    except (OSError, ValueError) as error:
        print(
            f"idis import: loaded, but cannot invalidate the caches of running workers ({error});"
            " restart them to see the new records at once",
            file=sys.stderr,
        )
        return False
    try:
        generations.bump_all()
    finally:
        if isinstance(generations, GenerationBoard):
            generations.close()
    return True
