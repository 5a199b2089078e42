"""Secret keys (HS_SECKEY) are stored encrypted (AES-256-GCM) with a key held outside the database.

The native protocol's challenge-response proves a secret by a MAC keyed with the secret
itself, so the server must be able to recover it: a one-way hash cannot serve.  The stored
text is ``aesgcm$<key id>$<base64 nonce + ciphertext>``; the key id (the first bytes of the
key's SHA-256) names which key file opens it, so values sealed under another key are refused,
not mistaken.  The key is a 32-byte file (``IDIS_SECRET_KEY_FILE``, default
``<data dir>/secret.key``, made with mode 0600 on first use); nodes that share records (one
operator's hosts) share the file.

Secrets stored by earlier versions as scrypt hashes (``scrypt$n$r$p$salt$hash``) still verify
for HTTP Basic (:func:`verify_secret`), and are re-sealed on their holder's next successful
login (:func:`needs_resealing`); they cannot answer a native challenge until then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEME = "aesgcm"
LEGACY_SCHEME = "scrypt"
KEY_SIZE = 32
_NONCE = 12
_AAD = b"idis HS_SECKEY v1"
MIN_LENGTH = 12
MIN_DISTINCT = 6
"""A secret someone sets must have at least this many characters, this many of them
different: no short word, no ``aaaaaaaaaaaa``.  Generated secrets (32 characters of 64) pass
easily; so does a passphrase of a few words."""


class SecretKeyMissing(RuntimeError):
    """No secret key is configured in this process (see :func:`use_key_file`)."""


_keys: dict[str, AESGCM] = {}
_current: str | None = None


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def use_key(key: bytes) -> str:
    """Seal new secrets with ``key`` from now on (keys used before still open their values).
    Returns the key id."""
    global _current
    if len(key) != KEY_SIZE:
        raise ValueError(f"a secret key is {KEY_SIZE} bytes")
    kid = _key_id(key)
    _keys[kid] = AESGCM(key)
    _current = kid
    return kid


def create_key_file(path: Path) -> bool:
    """Write a new random key to ``path`` (mode 0600) unless one is there; True if written.
    Atomic: processes starting together (workers, a CLI command) all end up with one key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(AESGCM.generate_key(bit_length=KEY_SIZE * 8))
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)  # fails if another process made the key first
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


def use_key_file(path: Path) -> str:
    """Load the key in ``path`` (creating it on first use) and seal with it; the key id."""
    create_key_file(path)
    key = path.read_bytes()
    if len(key) != KEY_SIZE:
        raise SecretKeyMissing(f"{path} does not hold a {KEY_SIZE}-byte secret key")
    return use_key(key)


def seal_secret(secret: str) -> str:
    """The stored form of ``secret``: encrypted under the current key."""
    if _current is None:
        raise SecretKeyMissing("no secret key configured (IDIS_SECRET_KEY_FILE)")
    nonce = os.urandom(_NONCE)
    sealed = _keys[_current].encrypt(nonce, secret.encode("utf-8"), _AAD)
    return f"{SCHEME}${_current}${base64.b64encode(nonce + sealed).decode()}"


def open_secret(stored: str) -> bytes | None:
    """The secret (UTF-8 bytes) in a sealed value, or None: not sealed, sealed under a key
    this process does not hold, or tampered with."""
    scheme, _, rest = stored.partition("$")
    kid, _, blob = rest.partition("$")
    box = _keys.get(kid) if scheme == SCHEME else None
    if box is None:
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
        return box.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)
    except (ValueError, InvalidTag):
        return None


def is_stored(stored: str) -> bool:
    """True if ``stored`` is a secret's stored form (sealed, or a legacy scrypt hash), not
    plaintext."""
    parts = stored.split("$")
    return (parts[0] == SCHEME and len(parts) == 3) or (
        parts[0] == LEGACY_SCHEME and len(parts) == 6
    )


def needs_resealing(stored: str) -> bool:
    """True for a legacy scrypt hash: its holder's next successful login re-seals it."""
    return stored.startswith(LEGACY_SCHEME + "$") and is_stored(stored)


def verify_secret(secret: str, stored: str) -> bool:
    """True if ``secret`` matches ``stored`` (sealed or legacy scrypt); the final comparison
    takes constant time."""
    if stored.startswith(SCHEME + "$"):
        opened = open_secret(stored)
        return opened is not None and hmac.compare_digest(opened, secret.encode("utf-8"))
    if not needs_resealing(stored):
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


def legacy_hash(secret: str) -> str:
    """A scrypt hash as versions before sealing stored secrets (for migration tests)."""
    n, r, p = 2**14, 8, 1
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.b64encode
    return f"{LEGACY_SCHEME}${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


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
