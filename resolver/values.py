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

from dataclasses import dataclass, field
from typing import Any

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
        return record

    def by_index(self) -> dict[int, HandleValue]:
        return {v.index: v for v in self.values}

    def same_content(self, values: tuple[HandleValue, ...]) -> bool:
        mine = sorted(self.values, key=lambda v: v.index)
        theirs = sorted(values, key=lambda v: v.index)
        if len(mine) != len(theirs):
            return False
        return all(a.same_content(b) for a, b in zip(mine, theirs, strict=True))
