"""Who is asking: HTTP Basic credentials checked against HS_SECKEY values, as Handle.Net does.

The user name is the percent-encoded identity ``index:handle`` (``300%3A88.100.1/ADMIN``), the
password the secret.  Without an index, any HS_SECKEY value of the handle may match.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from registry.authorization import Fetch
from registry.secrets import needs_resealing, verify_secret
from resolver.errors import AuthenticationFailed
from resolver.identifiers import fold
from resolver.values import HS_SECKEY, Ref


def parse_identity(text: str) -> Ref:
    """``"300:88.100.1/ADMIN"`` → ``Ref("88.100.1/ADMIN", 300)``; no index means index 0."""
    index_text, colon, handle = text.partition(":")
    if colon and index_text.isdigit():
        return Ref(handle, int(index_text))
    return Ref(text, 0)


class Authenticator:
    """Turns an ``Authorization`` header into an identity, or raises 403 authentication failed.

    A secret still stored as a legacy scrypt hash is handed to ``reseal`` (identity, secret)
    once it verified, which stores it sealed (:meth:`registry.service.Registrar.reseal`).

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
    ) -> None:
        self._fetch = fetch
        self._reseal = reseal
        self._remember = remember_seconds
        self._max = max_remembered
        self._clock = clock
        self._verified: dict[tuple[str, bytes, str], float] = {}

    async def identify(self, authorization: str | None) -> Ref | None:
        """The authenticated identity, or None for an anonymous request."""
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationFailed("only HTTP Basic authentication is supported")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII header text
            raise AuthenticationFailed("malformed Basic credentials") from None
        user, colon, secret = decoded.partition(":")
        if not colon or not user:
            raise AuthenticationFailed("Basic credentials need index:handle and a secret")
        identity = parse_identity(unquote(user))
        if "/" not in identity.handle:
            raise AuthenticationFailed("the user name must be an identity such as 300:PREFIX/ADMIN")
        verified = await self._check(identity, secret)
        if verified is None:
            raise AuthenticationFailed(f"identity {identity} not verified")
        return verified

    async def _check(self, identity: Ref, secret: str) -> Ref | None:
        """The identity of the key that ``secret`` opens (with its actual index), or None."""
        record = await self._fetch(fold(identity.handle))
        if record is None:
            return None
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
        now = self._clock()
        for value in record.values:
            if value.type != HS_SECKEY or identity.index not in (0, value.index):
                continue
            stored = value.data.value if isinstance(value.data.value, str) else ""
            key = Ref(identity.handle, value.index)
            memo = (str(key), digest, stored)
            if self._verified.get(memo, 0.0) > now:
                return key
            # A legacy scrypt hash takes tens of milliseconds: keep it off the event loop.
            if await asyncio.to_thread(verify_secret, secret, stored):
                if self._reseal is not None and needs_resealing(stored):
                    await self._reseal(key, secret)
                if len(self._verified) >= self._max:
                    self._verified.clear()
                self._verified[memo] = now + self._remember
                return key
        return None
