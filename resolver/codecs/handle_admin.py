"""The native protocol's administration and challenge-response messages: bytes in, bytes out.

Administration bodies (Handle.Net ``Encoder``): create (100), add (102) and modify (104) carry
the handle and a list of values; remove (103) the handle and a list of indexes; delete (101)
and list handles (105) the handle only.  A challenge (response code 402) carries the request's
digest (hash code, digest) and a 16-byte nonce; the answer (opCode 200) carries the key type
(``HS_SECKEY``/``HS_PUBKEY``), the identity's handle and index, and the signed response.

A secret key's answer is a MAC over ``nonce + request digest`` keyed by the secret
(``Util.doMac``): its first byte names the algorithm (MD5, SHA-1 or SHA-256 of
``secret + data + secret``, HMAC-SHA1/-SHA256, or PBKDF2-HMAC-SHA1 whose salt, iterations and
key length the client chose and sends along); before protocol 2.1 it is a bare MD5.  A public
key's answer is the hash algorithm's name and a signature over ``nonce + request digest``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from resolver.codecs.handle_data import decode_site, decode_value, encode_value, public_key_json
from resolver.codecs.handle_wire import (
    MAX_HANDLE_BYTES,
    OC_ADD_VALUE,
    OC_CREATE_HANDLE,
    OC_MODIFY_VALUE,
    OC_REMOVE_VALUE,
    Reader,
    Request,
    string,
)
from resolver.errors import InvalidValue, ProtocolError
from resolver.values import (
    HS_ADMIN,
    HS_PUBKEY,
    HS_SECKEY,
    HS_SITE,
    HS_VLIST,
    MAX_INDEX,
    AdminRef,
    Data,
    HandleValue,
    Ref,
    check_values,
)

NONCE_SIZE = 16
MAX_VALUES_IN_REQUEST = 1000
MAX_PBKDF2_ITERATIONS = 200_000
"""The most PBKDF2 iterations a client may make the server compute for one answer."""

SECRET_KEY_TYPE = b"HS_SECKEY"
PUBLIC_KEY_TYPE = b"HS_PUBKEY"

MAC_MD5_OLD = 0
MAC_MD5 = 1
MAC_SHA1 = 2
MAC_SHA256 = 3
MAC_HMAC_SHA1 = 0x12
MAC_HMAC_SHA256 = 0x13
MAC_PBKDF2_HMAC_SHA1 = 0x22

_INT = struct.Struct(">i")
_DIGESTS = {MAC_MD5_OLD: "md5", MAC_MD5: "md5", MAC_SHA1: "sha1", MAC_SHA256: "sha256"}


@dataclass(frozen=True, slots=True)
class AdminBody:
    """What an administration request asks: the handle, and the values or indexes."""

    handle: bytes
    values: tuple[HandleValue, ...] = ()
    indexes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ChallengeAnswer:
    key_type: bytes
    identity: Ref
    signed: bytes


def decode_admin(request: Request, now: int) -> AdminBody:
    """The body of an administration request; values get ``now`` as their timestamp (as the
    reference server stamps them).  :class:`ProtocolError` if malformed, :class:`InvalidValue`
    for data that is not what its type says."""
    body = request.body
    reader = Reader(body, 0, len(body))
    handle = reader.blob(MAX_HANDLE_BYTES)
    values: tuple[HandleValue, ...] = ()
    indexes: tuple[int, ...] = ()
    if request.op_code in (OC_CREATE_HANDLE, OC_ADD_VALUE, OC_MODIFY_VALUE):
        values = tuple(
            _from_wire(*decode_value(reader), now)
            for _ in range(reader.count(MAX_VALUES_IN_REQUEST))
        )
        check_values(values)  # the input rules of every door (resolver/values.py)
    elif request.op_code == OC_REMOVE_VALUE:
        indexes = tuple(reader.i32() for _ in range(reader.count(MAX_VALUES_IN_REQUEST)))
    return AdminBody(handle, values, indexes)


def _from_wire(value: HandleValue, raw: bytes, now: int) -> HandleValue:
    """A value as decoded from the wire (data as base64) with its data in idis' formats,
    checked as REST checks an input value."""
    type_ = value.type.upper() if value.type[:3].upper() == "HS_" else value.type
    if not 0 < value.index <= MAX_INDEX:
        raise InvalidValue(f"index must be from 1 to {MAX_INDEX}")
    return HandleValue(
        value.index,
        type_,
        wire_data(type_, raw),
        value.ttl,
        value.ttl_absolute,
        now,
        value.permissions,
        value.references,
    )


def wire_data(type_: str, raw: bytes) -> Data:
    """A value's data from its wire bytes: structured types decoded (HS_ADMIN, HS_VLIST,
    HS_SITE, RSA HS_PUBKEY), text kept as text, anything else base64."""
    try:
        if type_ == HS_ADMIN:
            reader = Reader(raw, 0, len(raw))
            permissions = int.from_bytes(reader.raw(2), "big")
            handle = reader.blob(MAX_HANDLE_BYTES).decode("utf-8")
            return Data("admin", AdminRef(handle, reader.u32(), permissions))
        if type_ == HS_VLIST:
            reader = Reader(raw, 0, len(raw))
            refs = [
                Ref(reader.blob(MAX_HANDLE_BYTES).decode("utf-8"), reader.u32())
                for _ in range(reader.count())
            ]
            return Data("vlist", tuple(refs))
        if type_ == HS_SITE:
            return Data("site", decode_site(raw))
        if type_ == HS_PUBKEY:
            # RSA has a JSON form; other keys (DSA, SM2) keep the protocol's bytes.
            key = public_key_json(raw)
            return Data("key", key) if key is not None else _base64(raw)
        if type_ == HS_SECKEY:
            # A secret must be text: only text is stored sealed (never as readable base64).
            return Data("string", raw.decode("utf-8"))
    except (ProtocolError, UnicodeDecodeError, ValueError) as error:
        raise InvalidValue(f"invalid {type_} data: {error}") from None
    try:
        return Data("string", raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _base64(raw)


def _base64(raw: bytes) -> Data:
    return Data("base64", base64.b64encode(raw).decode("ascii"))


def decode_challenge_answer(request: Request) -> ChallengeAnswer:
    reader = Reader(request.body, 0, len(request.body))
    key_type = reader.blob(64)
    handle = reader.blob(MAX_HANDLE_BYTES).decode("utf-8", "replace")
    index = reader.i32()
    signed = reader.blob(65536)
    return ChallengeAnswer(key_type, Ref(handle, index), signed)


# --- secret keys ---------------------------------------------------------------------------


def _mac(algorithm: int, data: bytes, secret: bytes, params: bytes | None) -> bytes:
    """``Util.doMac``: the MAC of ``data`` under ``secret``; for PBKDF2 the whole encoding
    (salt, iterations, key length in bits, MAC) with the parameters read from ``params``."""
    if algorithm in _DIGESTS:
        return hashlib.new(_DIGESTS[algorithm], secret + data + secret).digest()
    if algorithm == MAC_HMAC_SHA1:
        return hmac.new(secret, data, hashlib.sha1).digest()
    if algorithm == MAC_HMAC_SHA256:
        return hmac.new(secret, data, hashlib.sha256).digest()
    if algorithm == MAC_PBKDF2_HMAC_SHA1 and params is not None:
        reader = Reader(params, 0, len(params))
        salt = reader.blob(1024)
        iterations = reader.i32()
        bits = reader.i32()
        if not 0 < iterations <= MAX_PBKDF2_ITERATIONS or bits % 8 or not 0 < bits <= 1024:
            raise ProtocolError("PBKDF2 parameters out of bounds")
        # Java turns the key's bytes into chars one by one, then PBKDF2 takes them as UTF-8.
        password = secret.decode("latin-1").encode("utf-8")
        derived = hashlib.pbkdf2_hmac("sha1", password, salt, iterations, bits // 8)
        mac = hmac.new(derived, data, hashlib.sha1).digest()
        return string(salt) + _INT.pack(iterations) + _INT.pack(bits) + string(mac)
    raise ProtocolError(f"unknown secret key algorithm {algorithm}")


def secret_answer_matches(
    signed: bytes, nonce: bytes, digest: bytes, secret: bytes, version: tuple[int, int]
) -> bool:
    """True if ``signed`` (an opCode 200 answer) proves ``secret`` for this challenge.
    The comparison takes constant time; malformed answers are False."""
    if version < (2, 1):
        algorithm, mac = MAC_MD5_OLD, signed
    elif signed:
        algorithm, mac = signed[0], signed[1:]
    else:
        return False
    try:
        expected = _mac(algorithm, nonce + digest, secret, mac)
    except ProtocolError:
        return False
    return hmac.compare_digest(expected, mac)


def secret_answer(
    algorithm: int,
    nonce: bytes,
    digest: bytes,
    secret: bytes,
    *,
    salt: bytes = b"",
    iterations: int = 10000,
) -> bytes:
    """The client's answer with a secret key (as ``SecretKeyAuthenticationInfo`` makes it)."""
    params = string(salt) + _INT.pack(iterations) + _INT.pack(160) + string(b"")
    mac = _mac(algorithm, nonce + digest, secret, params)
    return mac if algorithm == MAC_MD5_OLD else bytes([algorithm]) + mac


def public_key_answer(hash_name: bytes, signature: bytes) -> bytes:
    """The client's answer with a private key: the hash's name and the signature."""
    return string(hash_name) + string(signature)


def decode_public_key_answer(signed: bytes) -> tuple[bytes, bytes]:
    """(hash algorithm name or code, signature) of a public-key answer."""
    reader = Reader(signed, 0, len(signed))
    return reader.blob(64), reader.blob(65536)


# --- the client's side ---------------------------------------------------------------------


def admin_request_body(
    handle: bytes,
    values: Sequence[HandleValue] = (),
    indexes: Sequence[int] | None = None,
) -> bytes:
    """The body of an administration request (values for 100/102/104, indexes for 103)."""
    if indexes is not None:
        return string(handle) + _INT.pack(len(indexes)) + b"".join(_INT.pack(i) for i in indexes)
    if values:
        return string(handle) + _INT.pack(len(values)) + b"".join(map(encode_value, values))
    return string(handle)


def challenge_answer_body(answer: ChallengeAnswer) -> bytes:
    return (
        string(answer.key_type)
        + string(answer.identity.handle.encode())
        + _INT.pack(answer.identity.index)
        + string(answer.signed)
    )
