"""Secret keys (HS_SECKEY) are stored only as salted scrypt hashes.

The stored text is ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64 fields).  Verification is
deliberately slow; :class:`registry.authentication.Authenticator` remembers recent successes
so that a client sending the same credentials on every request pays for it once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

SCHEME = "scrypt"
MIN_LENGTH = 12
MIN_DISTINCT = 6
"""A secret someone sets must have at least this many characters, this many of them
different: no short word, no ``aaaaaaaaaaaa``.  Generated secrets (32 characters of 64) pass
easily; so does a passphrase of a few words."""
_N, _R, _P = 2**14, 8, 1


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"{SCHEME}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def is_hashed(stored: str) -> bool:
    return stored.startswith(SCHEME + "$") and stored.count("$") == 5


def verify_secret(secret: str, stored: str) -> bool:
    """True if ``secret`` matches ``stored``; the final comparison takes constant time."""
    if not is_hashed(stored):
        return False
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def generate_secret() -> str:
    return secrets.token_urlsafe(24)


def weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak to be set, or None if it is strong enough."""
    if len(secret) < MIN_LENGTH or len(set(secret)) < MIN_DISTINCT:
        return (
            f"a secret needs at least {MIN_LENGTH} characters, {MIN_DISTINCT} of them "
            f"different (this one has {len(secret)}, {len(set(secret))} different)"
        )
    return None
