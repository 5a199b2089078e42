"""The native protocol's sessions (opCodes 400 to 402): bytes in, bytes out.

A session setup request (400) carries the key exchange mode (int2), the session's timeout in
seconds, the identity it is for (handle and index; empty and -1 for an anonymous session) and,
for Diffie-Hellman (mode 4, what the stock tools send), the client's DH public key in
Handle.Net's encoding (``DH_PUB_KEY``, two reserved bytes, then y, p and g as Java big-endian
two's complement integers).  The response (signed with the site's key, so the client knows it
talks to the server its HS_SITE names) carries the mode and the server's key data: from
protocol 2.4 an int4 encryption algorithm (3: AES) then the server's DH public key.

Both sides then hold the session key: the shared DH secret with its leading zero bytes dropped
(while more than 32 bytes remain), cut to 32 bytes.  Requests in the session carry an
``HS_MAC`` credential keyed by it: the session counter (against replays) and a MAC over, from
2.7, the versions (and from 2.8 the suggested versions), session id, request id and counter,
then the header and body as sent; before 2.5 over the header and body alone.  Protocols 2.5 and
2.6 MAC'd differently (a known defect of the reference); they are refused here.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from resolver.codecs.handle_wire import MAX_HANDLE_BYTES, Reader, Request, string
from resolver.errors import ProtocolError
from resolver.values import Ref

KEY_EXCHANGE_CIPHER_CLIENT = 1
KEY_EXCHANGE_CIPHER_SERVER = 2
KEY_EXCHANGE_CIPHER_HDL = 3
KEY_EXCHANGE_DH = 4
ENCRYPT_ALG_AES = 3
SESSION_KEY_SIZE = 32
DH_PUBLIC_KEY = b"DH_PUB_KEY"
MAC_TYPE = b"HS_MAC"
MAX_DH_BITS = 4096
MIN_DH_BITS = 1024

_INT = struct.Struct(">i")
_MACS = {"HMACSHA256": hashlib.sha256, "HMACSHA1": hashlib.sha1}
_CODES = {1: b"MD5", 2: b"SHA1", 3: b"SHA256", 0x12: b"HMAC-SHA1", 0x13: b"HMAC-SHA256"}
_DIGESTS = {"SHA256": "sha256", "SHA1": "sha1", "SHA": "sha1", "MD5": "md5"}


@dataclass(frozen=True, slots=True)
class SessionSetup:
    mode: int
    timeout: int
    identity: Ref | None
    """Who the session is for; None for an anonymous session (it is never authenticated)."""
    public_key: bytes
    """The client's key data (DH or RSA public key); empty for the other modes."""


@dataclass(frozen=True, slots=True)
class DHPublicKey:
    y: int
    p: int
    g: int


def decode_session_setup(request: Request) -> SessionSetup:
    """The body of an opCode 400 request; :class:`ProtocolError` if malformed."""
    reader = Reader(request.body, 0, len(request.body))
    reader.need(2)
    (mode,) = struct.unpack_from(">H", reader.data, reader.pos)
    reader.pos += 2
    timeout = reader.i32()
    handle = reader.blob(MAX_HANDLE_BYTES)
    index = reader.i32()
    public_key = b""
    if mode in (KEY_EXCHANGE_CIPHER_CLIENT, KEY_EXCHANGE_DH):
        public_key = reader.blob(8192)
    identity = None
    if handle and index >= 0:
        try:
            identity = Ref(handle.decode("utf-8"), index)
        except UnicodeDecodeError:
            raise ProtocolError("identity handle is not UTF-8") from None
    return SessionSetup(mode, timeout, identity, public_key)


def _java_int(value: int) -> bytes:
    """``BigInteger.toByteArray`` of a non-negative integer (a sign byte when needed)."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def decode_dh_public_key(raw: bytes) -> DHPublicKey:
    """A DH public key in Handle.Net's encoding, bounded (1024 to 4096-bit modulus)."""
    reader = Reader(raw, 0, len(raw))
    if reader.blob(64) != DH_PUBLIC_KEY:
        raise ProtocolError("not a DH public key")
    reader.raw(2)
    y, p, g = (int.from_bytes(reader.blob(1024), "big", signed=True) for _ in range(3))
    if not MIN_DH_BITS <= p.bit_length() <= MAX_DH_BITS or not 1 < g < p - 1 or not 1 < y < p - 1:
        raise ProtocolError("DH parameters out of bounds")
    return DHPublicKey(y, p, g)


def encode_dh_public_key(key: DHPublicKey) -> bytes:
    return b"".join(
        (string(DH_PUBLIC_KEY), b"\x00\x00", *(string(_java_int(n)) for n in (key.y, key.p, key.g)))
    )


def session_setup_body(mode: int, data: bytes) -> bytes:
    """A session setup response's body (without a request digest)."""
    return struct.pack(">H", mode) + string(data)


def dh_response_data(server_key: DHPublicKey) -> bytes:
    """The key data a DH setup answers from protocol 2.4: the algorithm, then the server's key."""
    return _INT.pack(ENCRYPT_ALG_AES) + encode_dh_public_key(server_key)


def session_key(shared: bytes) -> bytes:
    """The AES session key from the DH shared secret, as the reference derives it."""
    start = 0
    while start + SESSION_KEY_SIZE < len(shared) and shared[start] == 0:
        start += 1
    return shared[start : start + SESSION_KEY_SIZE]


@dataclass(frozen=True, slots=True)
class Mac:
    counter: int
    algorithm: bytes
    digest: bytes


def decode_mac(credential: bytes | None) -> Mac | None:
    """The ``HS_MAC`` credential of a request, or None if it carries another or none."""
    if not credential:
        return None
    try:
        reader = Reader(credential, 0, len(credential))
        reader.raw(4)  # version, reserved, flags
        reader.blob(MAX_HANDLE_BYTES)
        counter = reader.i32()
        if reader.blob(64) != MAC_TYPE:
            return None
        reader.i32()
        algorithm = reader.blob(64)
        digest = reader.blob(1024)
    except ProtocolError:
        return None
    return Mac(counter, algorithm, digest)


def _mac_input(request: Request, counter: int) -> bytes:
    envelope = request.envelope
    version = (envelope.major, envelope.minor)
    if version < (2, 5):
        return request.signed_part
    if version < (2, 7):
        raise ProtocolError("session MACs of protocol 2.5 and 2.6 are not supported")
    prefix = bytes((envelope.major, envelope.minor))
    if version >= (2, 8):
        prefix += bytes((envelope.suggest_major, envelope.suggest_minor))
    fields = struct.pack(">iii", envelope.session_id, envelope.request_id, counter)
    return prefix + fields + request.signed_part


def compute_mac(algorithm: bytes, data: bytes, key: bytes) -> bytes:
    """``Util.doMac`` for the session MAC algorithms (names compared without punctuation)."""
    if len(algorithm) == 1:  # before 2.7: a hash code
        algorithm = _CODES.get(algorithm[0], b"")
    name = bytes(c for c in algorithm.upper() if chr(c).isalnum()).decode("ascii", "replace")
    if name in _MACS:
        return hmac.new(key, data, _MACS[name]).digest()
    if name in _DIGESTS:
        return hashlib.new(_DIGESTS[name], key + data + key).digest()
    raise ProtocolError(f"unknown MAC algorithm {algorithm[:32]!r}")


def mac_matches(request: Request, mac: Mac, key: bytes) -> bool:
    """True if ``mac`` (the request's credential) is the session MAC of ``request``."""
    data = _mac_input(request, mac.counter)
    return hmac.compare_digest(compute_mac(mac.algorithm, data, key), mac.digest)


def mac_credential(request: Request, key: bytes, counter: int) -> bytes:
    """The ``HS_MAC`` credential a client puts on ``request`` (HMAC-SHA256 from 2.7)."""
    data = _mac_input(request, counter)
    algorithm = (
        b"HMAC-SHA256" if (request.envelope.major, request.envelope.minor) >= (2, 7) else b"SHA1"
    )
    digest = compute_mac(algorithm, data, key)
    section = string(algorithm) + string(digest)
    return b"".join(
        (
            b"\x00\x00\x00\x00",
            string(b""),
            _INT.pack(counter),
            string(MAC_TYPE),
            _INT.pack(len(section)),
            section,
        )
    )
