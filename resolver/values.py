"""Handle values and records: immutable, validated, free of any wire format.

A value is ``(index, type, data, ttl, timestamp, permissions, references)`` (RFC 3651 section 3).
``data`` is a :class:`Data`: a format name and a payload whose Python type the format fixes:

======== ==========================================
format   payload
======== ==========================================
string   ``str``
base64   ``str`` (the base64 text, already validated)
admin    :class:`AdminRef`
vlist    ``tuple[Ref, ...]``
site     ``dict`` (HS_SITE description, kept as given)
key      ``dict`` (public key description, kept as given)
======== ==========================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resolver.errors import InvalidValue

if TYPE_CHECKING:
    from resolver.search import Entry

# Value-level permission bits (RFC 3651 section 3.4).
ADMIN_READ = 8
ADMIN_WRITE = 4
PUBLIC_READ = 2
PUBLIC_WRITE = 1
DEFAULT_PERMISSIONS = ADMIN_READ | ADMIN_WRITE | PUBLIC_READ  # "1110"
SECRET_PERMISSIONS = ADMIN_READ | ADMIN_WRITE  # secret keys are never public

DEFAULT_TTL = 86400
MAX_INDEX = 2**32 - 1
MAX_VALUES = 2048
MAX_TYPE_LENGTH = 1024
MAX_TEXT_LENGTH = 2**20
"""Characters of one string in a value (its data, or any string inside structured data)."""
MAX_DATA_DEPTH = 32
"""Levels of nesting of structured (site, key) data.  The stored form and every answer wrap
the data in a few more levels, and orjson refuses to write more than 254: what passes here
must be writable everywhere.  Real site and key descriptions nest four or five levels."""
MAX_SECRET_KEYS = 8
"""HS_SECKEY values in one handle: each costs a deliberately slow hash (scrypt) when written."""

# Well-known indexes and types.
ADMIN_INDEX = 100
ADMIN_GROUP_INDEX = 200
SECRET_KEY_INDEX = 300
HS_ADMIN = "HS_ADMIN"
HS_VLIST = "HS_VLIST"
HS_SECKEY = "HS_SECKEY"
HS_PUBKEY = "HS_PUBKEY"
HS_ALIAS = "HS_ALIAS"
HS_SITE = "HS_SITE"


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to one value of a handle: ``index:handle`` (an identity when it names a key)."""

    handle: str
    index: int

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"


@dataclass(frozen=True, slots=True)
class AdminRef:
    """The payload of an HS_ADMIN value: who administers, with which of the 12 rights."""

    handle: str
    index: int
    permissions: int


@dataclass(frozen=True, slots=True)
class Data:
    format: str
    value: Any


@dataclass(frozen=True, slots=True)
class HandleValue:
    index: int
    type: str
    data: Data
    ttl: int = DEFAULT_TTL
    ttl_absolute: bool = False
    timestamp: int = 0
    """Seconds since the epoch, set by the server when the value is written."""
    permissions: int = DEFAULT_PERMISSIONS
    references: tuple[Ref, ...] = ()

    @property
    def public_read(self) -> bool:
        return bool(self.permissions & PUBLIC_READ)

    def type_matches(self, wanted: str) -> bool:
        """Handle type matching: ``URL`` matches ``URL`` only; ``URL.`` matches ``URL.foo``."""
        mine = self.type.upper()
        wanted = wanted.upper()
        if wanted.endswith("."):
            return mine.startswith(wanted) or mine == wanted[:-1]
        return mine == wanted

    def same_content(self, other: HandleValue) -> bool:
        """Equal in everything a client writes (the server-set timestamp does not count)."""
        return (
            self.index == other.index
            and self.type == other.type
            and self.data == other.data
            and self.ttl == other.ttl
            and self.ttl_absolute == other.ttl_absolute
            and self.permissions == other.permissions
            and self.references == other.references
        )


@dataclass(frozen=True, slots=True)
class Record:
    """All values of one handle as stored; ``version`` grows with every write (for CAS).

    ``stored`` is the values' stored form (:mod:`resolver.codecs.stored`) when the record was
    decoded from it, so that caches keep those bytes as they are instead of encoding the values
    again; see :meth:`with_stored`.  It takes no part in comparisons, and a record derived with
    :func:`dataclasses.replace` has none.
    """

    handle: str
    values: tuple[HandleValue, ...]
    version: int = 0
    stored: bytes | None = field(default=None, init=False, compare=False, repr=False)
    claims: tuple[tuple[str, int, str], ...] | None = field(
        default=None, init=False, compare=False, repr=False
    )
    """The unique values of its data template this record takes, ``(template key, item index,
    value)``, which a store writes in the record's own transaction (see
    :mod:`resolver.templates`); None leaves the claims of the key as they are."""
    entries: tuple[Entry, ...] | None = field(default=None, init=False, compare=False, repr=False)
    """The record's entries in the search index (see :mod:`resolver.search`), which a store
    writes in the record's own transaction, replacing the key's; None leaves them as they are
    (the registrar sets None only when neither the record nor the one it replaces has any)."""

    @classmethod
    def with_stored(
        cls, handle: str, values: tuple[HandleValue, ...], version: int, stored: bytes
    ) -> Record:
        """A record whose ``stored`` is ``stored``, which must be the stored form of ``values``
        (use :func:`resolver.codecs.stored.decode_record`)."""
        record = cls(handle, values, version)
        object.__setattr__(record, "stored", stored)  # frozen: as the generated __init__ does
        return record

    def with_claims(self, claims: tuple[tuple[str, int, str], ...] | None) -> Record:
        """This record (its handle, values and version) holding ``claims``."""
        record = Record(self.handle, self.values, self.version)
        object.__setattr__(record, "claims", claims)  # frozen: as with_stored does
        object.__setattr__(record, "entries", self.entries)
        return record

    def with_entries(self, entries: tuple[Entry, ...] | None) -> Record:
        """This record (its handle, values, version and claims) with search ``entries``."""
        record = self.with_claims(self.claims)
        object.__setattr__(record, "entries", entries)
        return record

    def by_index(self) -> dict[int, HandleValue]:
        return {v.index: v for v in self.values}

    def same_content(self, values: tuple[HandleValue, ...]) -> bool:
        mine = sorted(self.values, key=lambda v: v.index)
        theirs = sorted(values, key=lambda v: v.index)
        if len(mine) != len(theirs):
            return False
        return all(a.same_content(b) for a, b in zip(mine, theirs, strict=True))


# --- what every door accepts -----------------------------------------------------------------

# Control characters (C0, DEL, C1) and lone surrogates, which no text encoding can store.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, but for tab, line feed and carriage return, which text data may hold.
_DATA_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson writes


def check_text(text: str, what: str, *, multiline: bool = False) -> None:
    """Raise :class:`InvalidValue` unless ``text`` is storable text: at most
    :data:`MAX_TEXT_LENGTH` characters, no control character (but tab, line feed and carriage
    return when ``multiline``), no lone surrogate."""
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidValue(f"{what} is longer than {MAX_TEXT_LENGTH} characters")
    bad = (_DATA_CONTROL if multiline else _CONTROL).search(text)
    if bad is not None:
        raise InvalidValue(f"{what} holds the control character U+{ord(bad.group()):04X}")


def _check_structure(payload: object, what: str, depth: int) -> None:
    if depth > MAX_DATA_DEPTH:
        raise InvalidValue(f"{what} nests deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(payload, str):
        check_text(payload, what, multiline=True)
    elif isinstance(payload, dict):
        for key, item in payload.items():
            if not isinstance(key, str):
                raise InvalidValue(f"{what} has a key that is not a string")
            check_text(key, what)
            _check_structure(item, what, depth + 1)
    elif isinstance(payload, list | tuple):
        for item in payload:
            _check_structure(item, what, depth + 1)
    elif isinstance(payload, bool) or payload is None:
        return
    elif isinstance(payload, int):
        if not _INT_RANGE[0] <= payload <= _INT_RANGE[1]:
            raise InvalidValue(f"{what} holds an integer out of the 64-bit range")
    elif isinstance(payload, float):
        if not math.isfinite(payload):
            raise InvalidValue(f"{what} holds a number that is not finite")
    else:
        raise InvalidValue(f"{what} holds a {type(payload).__name__}, not JSON")


def check_value(value: HandleValue) -> None:
    """Raise :class:`InvalidValue` unless every door can store and answer ``value``: its
    type 1 to :data:`MAX_TYPE_LENGTH` characters without control characters, its data
    storable text of its format's Python type, structured data at most :data:`MAX_DATA_DEPTH`
    levels deep, handles named without control characters.

    The one set of input rules of values, whatever door (REST, batch, import, native Handle)
    they came in by: a value passing it never fails later, at write or when answered.
    """
    if not 0 < len(value.type) <= MAX_TYPE_LENGTH:
        raise InvalidValue(f"type must have 1 to {MAX_TYPE_LENGTH} characters")
    check_text(value.type, "type")
    data = value.data
    what = f"data of value {value.index}"
    if data.format in ("string", "base64"):
        if not isinstance(data.value, str):
            raise InvalidValue(f"{what} must be a string")
        check_text(data.value, what, multiline=True)
    elif data.format == "admin":
        if not isinstance(data.value, AdminRef):
            raise InvalidValue(f"{what} must name an administrator")
        check_text(data.value.handle, f"{what}: handle")
    elif data.format == "vlist":
        _check_refs(data.value, what)
    elif data.format in ("site", "key"):
        if not isinstance(data.value, dict | str):
            raise InvalidValue(f"{data.format} data must be an object")
        _check_structure(data.value, what, 1)
    else:
        raise InvalidValue(f"unknown data format {data.format!r}")
    _check_refs(value.references, f"references of value {value.index}")


def _check_refs(refs: object, what: str) -> None:
    if not isinstance(refs, tuple) or not all(isinstance(r, Ref) for r in refs):
        raise InvalidValue(f"{what} must be references to values")
    for ref in refs:
        check_text(ref.handle, f"{what}: handle")


def check_values(values: Sequence[HandleValue]) -> None:
    """Raise :class:`InvalidValue` unless ``values`` make a writable record: each passes
    :func:`check_value`, and together :func:`check_record`."""
    for value in values:
        check_value(value)
    check_record(values)


def check_record(values: Sequence[HandleValue]) -> None:
    """Raise :class:`InvalidValue` unless values, each checked already, make a writable
    record: at most :data:`MAX_VALUES` of them, no index twice, at most
    :data:`MAX_SECRET_KEYS` secret keys."""
    if len(values) > MAX_VALUES:
        raise InvalidValue(f"more than {MAX_VALUES} values")
    seen: set[int] = set()
    secrets = 0
    for value in values:
        if value.index in seen:
            raise InvalidValue(f"index {value.index} appears twice")
        seen.add(value.index)
        secrets += value.type.upper() == HS_SECKEY
    if secrets > MAX_SECRET_KEYS:
        raise InvalidValue(
            f"{secrets} secret keys ({HS_SECKEY}) in one handle: at most {MAX_SECRET_KEYS}"
        )
