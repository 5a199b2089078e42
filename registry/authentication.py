"""Who is asking: HTTP Basic credentials checked against HS_SECKEY values, as Handle.Net does.

The user name is the percent-encoded identity ``index:handle`` (``300%3A88.100.1/ADMIN``), the
password the secret.  Without an index, any HS_SECKEY value of the handle may match.

Authentications are throttled per identity and per source address (a :class:`FailureThrottle`,
see :mod:`nodes.throttle`): every secret that has to be checked is counted first, and once
either has had too many, a request is refused with :class:`resolver.errors.Throttled` before
the secret is checked, so that guessing is bounded (and costs no scrypt where a legacy hash is
still stored).  Credentials that succeeded
recently are remembered and accepted without hashing or counting, so in effect the failures
are what is counted, and an attack on an identity does not lock out a client already logged
in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import unquote

from registry.authorization import Fetch
from registry.secrets import needs_resealing, open_secret, verify_secret
from resolver.errors import AuthenticationFailed
from resolver.identifiers import fold
from resolver.values import HS_SECKEY, Record, Ref


def parse_identity(text: str) -> Ref:
    """``"300:88.100.1/ADMIN"`` → ``Ref("88.100.1/ADMIN", 300)``; no index means index 0."""
    index_text, colon, handle = text.partition(":")
    if colon and index_text.isdigit():
        return Ref(handle, int(index_text))
    return Ref(text, 0)


class FailureThrottle(Protocol):
    """Counts events per ``(kind, who)`` subject (see :class:`nodes.throttle.Throttle`)."""

    async def acquire(self, subjects: Sequence[tuple[str, str]], what: str = ...) -> None:
        """Count one attempt against each subject; raise :class:`resolver.errors.Throttled`
        instead when a limit is spent."""

    async def check(self, subjects: Sequence[tuple[str, str]], what: str = ...) -> None:
        """Raise :class:`resolver.errors.Throttled` while any subject has failed too often."""

    async def hit(self, subjects: Sequence[tuple[str, str]]) -> None:
        """Count one failure against each subject."""


def failure_subjects(identity: str | None, source: str | None) -> list[tuple[str, str]]:
    """The subjects an authentication counts against, the source first: a source refused is
    not counted against the identity it named, so that one address cannot lock out more
    identities than its own allowance reaches."""
    subjects = [("source", source)] if source else []
    return [*subjects, ("identity", identity)] if identity else subjects


BearerCheck = Callable[[str], Awaitable[Ref | None]]
"""The identity an API token stands for, None if it stands for none (registry/tokens.py)."""


class Authenticator:
    """Turns an ``Authorization`` header into an identity, or raises 403 authentication failed.

    A secret still stored as a legacy scrypt hash is handed to ``reseal`` (identity, secret)
    once it verified, which stores it sealed (:meth:`registry.service.Registrar.reseal`).

    ``Basic`` credentials name an identity and its secret; ``Bearer`` an API token, checked
    by ``bearer`` (unknown tokens are counted as failures of the source address).

    Successful checks are remembered for ``remember_seconds`` keyed by identity, a digest of
    the presented secret and the stored hash, so a changed secret is re-checked at once.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        reseal: Callable[[Ref, str], Awaitable[None]] | None = None,
        remember_seconds: float = 300.0,
        max_remembered: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        throttle: FailureThrottle | None = None,
        bearer: BearerCheck | None = None,
    ) -> None:
        self._fetch = fetch
        self._bearer = bearer
        self._throttle = throttle
        self._reseal = reseal
        self._remember = remember_seconds
        self._max = max_remembered
        self._clock = clock
        self._verified: dict[tuple[str, bytes, str], float] = {}
        self.failures = 0

    async def identify(self, authorization: str | None, source: str | None = None) -> Ref | None:
        """The authenticated identity, or None for an anonymous request.

        ``source`` is the client's address, which failures are counted against too (and in
        :attr:`failures`, which the node's metrics read).
        """
        try:
            return await self._identify(authorization, source)
        except AuthenticationFailed:
            self.failures += 1
            raise

    async def _identify(self, authorization: str | None, source: str | None) -> Ref | None:
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and self._bearer is not None:
            return await self.token(credentials.strip(), source)
        if scheme.lower() != "basic":
            raise AuthenticationFailed("only HTTP Basic or Bearer authentication is supported")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII header text
            raise AuthenticationFailed("malformed Basic credentials") from None
        user, colon, secret = decoded.partition(":")
        if not colon or not user:
            raise AuthenticationFailed("Basic credentials need index:handle and a secret")
        return await self.verify(unquote(user), secret, source)

    async def token(self, text: str, source: str | None = None) -> Ref:
        """The identity the API token ``text`` stands for; unknown ones count as failures."""
        subjects = failure_subjects(None, source)
        if self._throttle is not None:
            await self._throttle.check(subjects, "failed authentications")
        identity = await self._bearer(text) if self._bearer is not None and text else None
        if identity is None:
            if self._throttle is not None:
                await self._throttle.hit(subjects)
            raise AuthenticationFailed("token unknown, expired or revoked")
        return identity

    async def verify(self, user: str, secret: str, source: str | None = None) -> Ref:
        """The identity ``user`` (``300:PREFIX/ADMIN``) if ``secret`` is its secret."""
        identity = parse_identity(user)
        if "/" not in identity.handle:
            raise AuthenticationFailed("the user name must be an identity such as 300:PREFIX/ADMIN")
        record = await self._fetch(fold(identity.handle))
        keys = _keys(identity, record)
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
        now = self._clock()
        for key, stored in keys:
            if self._verified.get((str(key), digest, stored), 0.0) > now:
                return key
        # Per handle, so that spelling the index or the case differently gains no attempts.
        if self._throttle is not None:
            # Counted before hashing, atomically: however many guesses arrive at once, no
            # more than the limit are hashed.  A success counts too, once: it is remembered.
            subjects = failure_subjects(fold(identity.handle), source)
            await self._throttle.acquire(subjects, "unverified authentications")
        for key, stored in keys:
            # A legacy scrypt hash takes tens of milliseconds: keep it off the event loop.
            if await asyncio.to_thread(verify_secret, secret, stored):
                if self._reseal is not None and needs_resealing(stored):
                    await self._reseal(key, secret)
                if len(self._verified) >= self._max:
                    self._verified.clear()
                self._verified[(str(key), digest, stored)] = now + self._remember
                return key
        raise AuthenticationFailed(f"identity {identity} not verified")


async def sealed_secret(fetch: Fetch, identity: Ref) -> str | None:
    """The secret of ``identity`` in clear, for logins that prove it without sending it (the
    SNMS ``/identity/token/v1`` dated digest); None when its key is a legacy scrypt hash, which
    cannot be opened, or sealed under a key this process does not hold."""
    for _, stored in _keys(identity, await fetch(fold(identity.handle))):
        opened = open_secret(stored)
        if opened is not None:
            return opened.decode("utf-8", "replace")
    return None


def _keys(identity: Ref, record: Record | None) -> list[tuple[Ref, str]]:
    """The keys of ``record`` that ``identity`` names, each with its stored secret hash."""
    if record is None:
        return []
    return [
        (Ref(identity.handle, value.index), value.data.value)
        for value in record.values
        if value.type == HS_SECKEY
        and identity.index in (0, value.index)
        and isinstance(value.data.value, str)
    ]
