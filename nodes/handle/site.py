"""This node's site as the native protocol describes it, and the site's key.

The key is an RSA private key in a PEM file outside the database (``IDIS_HANDLE_KEY_FILE``,
default ``<data dir>/site-key.pem``), made by ``idis site keygen``; its public half goes into
the site's HS_SITE values and the get-site-info answer, so that clients can check what the
site signs.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from nodes.settings import Settings
from resolver.codecs.handle_wire import Sign
from resolver.sites import site_data

KEY_BITS = 2048


def generate_key(path: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write a new RSA key to ``path`` (mode 0600, refused if it exists unless
    ``overwrite``); its public half in Handle.Net's JSON form."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass --force to replace it)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return public_json(key.public_key())


def _b64(number: int) -> str:
    raw = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_json(key: rsa.RSAPublicKey) -> dict[str, Any]:
    numbers = key.public_numbers()
    return {"kty": "RSA", "n": _b64(numbers.n), "e": _b64(numbers.e)}


def _private_key(settings: Settings) -> rsa.RSAPrivateKey | None:
    path = settings.site_key_path
    if not path.is_file():
        return None
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    return key


def load_public_key(settings: Settings) -> dict[str, Any] | None:
    """The site's public key (JSON form) if its key file exists, else None."""
    key = _private_key(settings)
    return None if key is None else public_json(key.public_key())


def load_signer(settings: Settings) -> Sign | None:
    """Signs with the site's key (RSA, PKCS#1 v1.5), or None without a key file."""
    key = _private_key(settings)
    if key is None:
        return None
    hashes_by_name = {"SHA-256": hashes.SHA256, "SHA1": hashes.SHA1}

    def sign(data: bytes, hash_name: str) -> bytes:
        return key.sign(data, padding.PKCS1v15(), hashes_by_name[hash_name]())

    return sign


def native_port(settings: Settings) -> int | None:
    address = settings.handle_address
    return address[1] if address else None


def node_site(settings: Settings, description: str = "") -> dict[str, Any]:
    """The HS_SITE description of this node: its HTTP base URL and native interfaces."""
    return site_data(
        [settings.site_url],
        description or f"idis node {settings.name}",
        native_port=native_port(settings),
        public_key=load_public_key(settings),
    )
