"""API tokens: bearer credentials an identity issues for itself, limited to a prefix and rights.

A token is 32 random bytes (URL-safe base64); the node keeps only its SHA-256, enough for a
secret of that entropy (no salt or slow hash: nothing to guess).  Presented as
``Authorization: Bearer TOKEN`` wherever a password is accepted, it authenticates as the
identity that issued it, wrapped in :class:`registry.authorization.Scoped`: the identity's own
rights, intersected with the token's, and only under its prefix.  The SNMS login
(``POST /identity/token``) issues one for 24 hours over every prefix with every right, so an
SNMS session can do exactly what its identity can.

A token checked is remembered in the worker for :data:`REMEMBER_SECONDS` at most, so that
reads with a token cost no database round trip each: a revocation takes effect at once in the
worker that revoked it, and within that delay in the others.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from registry.authentication import parse_identity
from registry.authorization import ALL_RIGHTS, Fetch, Right, Scoped, rights
from resolver.errors import InsufficientPermissions, InvalidValue
from resolver.identifiers import fold, prefix_handle
from resolver.values import Ref

REMEMBER_SECONDS = 5.0
MAX_REMEMBERED = 10_000
MAX_TTL = 366 * 86400
LOGIN_TTL = 86400
"""What an SNMS login token lives (DESIGN.md section 2.3: 24 hours)."""


@dataclass(frozen=True, slots=True)
class Token:
    """A token as stored: never the token itself, its SHA-256 (``digest``) only."""

    id: str
    digest: str
    identity: str
    """``index:handle`` of the issuer, the handle folded."""
    prefix: str
    """``""``: every prefix."""
    rights: int
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def scoped(self) -> Scoped:
        ref = parse_identity(self.identity)
        return Scoped(ref.handle, ref.index, prefix=self.prefix, mask=self.rights)


class TokenStore(Protocol):
    """Where tokens are kept (registry/stores/tokens.py)."""

    async def add(self, token: Token) -> None: ...

    async def by_digest(self, digest: str) -> Token | None: ...

    async def of_identity(self, identity: str) -> list[Token]: ...

    async def revoke(self, token_id: str, identity: str, when: datetime) -> bool:
        """Revoke the identity's token ``token_id``; False if it has none such unrevoked."""
        ...

    async def close(self) -> None: ...


def parse_rights(raw: object) -> int:
    """A list of right names (``["ADD_HANDLE", "READ_VALUE"]``, see
    :class:`registry.authorization.Right`), or a bit mask, as a mask."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if not isinstance(raw, list) or not raw:
        raise InvalidValue("rights is a list of right names (ADD_HANDLE, ...) or a bit mask")
    mask = 0
    for name in raw:
        if not isinstance(name, str) or name.upper() not in Right.__members__:
            raise InvalidValue(f"unknown right {name!r}: one of {', '.join(Right.__members__)}")
        mask |= Right[name.upper()]
    return mask


def rights_names(mask: int) -> list[str]:
    return [right.name for right in Right if mask & right and right.name]


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def identity_key(identity: Ref) -> str:
    return f"{identity.index}:{fold(identity.handle)}"


class Tokens:
    """Issuing, checking, listing and revoking tokens (the store keeps them)."""

    def __init__(
        self, store: TokenStore, fetch: Fetch, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._fetch = fetch
        self._clock = clock
        self._known: dict[str, tuple[Scoped, float]] = {}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def issue(
        self, issuer: Ref, *, prefix: str, mask: int, ttl: float, label: str = ""
    ) -> tuple[str, Token]:
        """A new token of ``issuer`` and its stored form; the token text is shown only here.

        A token cannot issue tokens (its holder would outlive its expiry).  A token limited to
        a prefix needs an issuer that holds some right over that prefix (``0.NA/PREFIX``):
        tokens are for administrators, and never grant more than their issuer holds anyway.
        """
        if isinstance(issuer, Scoped):
            raise InsufficientPermissions("a token cannot issue tokens: log in with the secret")
        if not 0 < mask <= ALL_RIGHTS:
            raise InvalidValue(f"rights must be a mask from 1 to {ALL_RIGHTS}")
        if not 0 < ttl <= MAX_TTL:
            raise InvalidValue(f"a token lives from 1 to {MAX_TTL} seconds")
        if prefix:
            if "/" in prefix:
                raise InvalidValue(f"{prefix!r} is a handle prefix, without a slash")
            authority = prefix_handle(prefix)
            if not await rights(issuer, await self._fetch(fold(authority)), self._fetch):
                raise InsufficientPermissions(f"{issuer} administers nothing of {authority}")
        text = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        now = self._now()
        token = Token(
            id=secrets.token_hex(8),
            digest=digest_of(text),
            identity=identity_key(issuer),
            prefix=fold(prefix),
            rights=mask,
            label=label[:200],
            created_at=now,
            expires_at=datetime.fromtimestamp(now.timestamp() + ttl, UTC),
        )
        await self._store.add(token)
        return text, token

    async def authenticate(self, text: str) -> Scoped | None:
        """The identity a token stands for, or None if it is unknown, expired or revoked."""
        digest = digest_of(text)
        now = self._clock()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        token = await self._store.by_digest(digest)
        if token is None or token.revoked_at is not None or token.expires_at.timestamp() <= now:
            self._known.pop(digest, None)
            return None
        if len(self._known) >= MAX_REMEMBERED:
            self._known.clear()
        scoped = token.scoped()
        self._known[digest] = (scoped, min(now + REMEMBER_SECONDS, token.expires_at.timestamp()))
        return scoped

    async def list(self, issuer: Ref) -> list[Token]:
        return await self._store.of_identity(identity_key(issuer))

    async def revoke(self, issuer: Ref, token_id: str) -> bool:
        """Revoke one of ``issuer``'s tokens; forgotten at once by this worker."""
        if isinstance(issuer, Scoped):
            raise InsufficientPermissions("a token cannot revoke tokens: log in with the secret")
        done = await self._store.revoke(token_id, identity_key(issuer), self._now())
        if done:
            self._known.clear()  # which digest it was is not known here: cheap to re-check
        return done

    async def close(self) -> None:
        await self._store.close()
