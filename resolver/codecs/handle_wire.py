"""The native Handle protocol's messages (RFC 3652, Handle.Net protocol 2.3 to 2.11): bytes in,
bytes out, no sockets.

A message on the wire is a 20-byte envelope (version, flags and suggested version, session id,
request id, message id, message length), then the message: a 24-byte header (opCode, response
code, opFlags, site info serial, recursion count, expiration, body length), the body, and a
credential (a 4-byte length and a signature; 0 when unsigned).  Values and HS_SITE data are
encoded as :mod:`resolver.codecs.handle_data` does.

Facts checked against the reference encoder's output (``../shared/handle-wire/``): a response
answers in the version the request suggested (capped at ours, 2.11) and suggests 2.11; it
carries the request's flags with AUTH set; a request with RRDG gets a digest of its header and
body first in the response body (SHA-256 from 2.7, SHA-1 before).  The IDIS SDK adds a
length-prefixed ``authBytes`` inside every resolution body, and sends its login request (2001)
without the credential field: both decode.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from resolver.errors import ProtocolError

MAJOR, MINOR = 2, 11
"""The protocol version this codec speaks and suggests."""
OLDEST = (2, 0)

ENVELOPE_SIZE = 20
HEADER_SIZE = 24
MAX_MESSAGE_LENGTH = 262144
"""The reference implementation's limit on one message, envelope excluded."""
UDP_PACKET = 512
UDP_DATA = UDP_PACKET - ENVELOPE_SIZE
MAX_ARRAY = 2048
"""Most entries in a type or index list (the reference allows a million; no query needs it)."""
MAX_HANDLE_BYTES = 2048

# Envelope flags (byte 2, high bits; the low two bits are the suggested major version).
ENV_COMPRESSED = 0x80
ENV_ENCRYPTED = 0x40
ENV_TRUNCATED = 0x20

# opFlags.
AUTH = 0x80000000
CERT = 0x40000000
ENCR = 0x20000000
RECU = 0x10000000
CACR = 0x08000000
CONT = 0x04000000
KPAL = 0x02000000
PUBL = 0x01000000
RRDG = 0x00800000
OVRW = 0x00400000
MINT = 0x00200000
DNRF = 0x00100000
IDIS_AUTH_THROUGH = 0x00000004
"""The IDIS SDK's "pass identity through recursion" (its resolution carries authBytes)."""
ECHOED_FLAGS = CERT | RECU | CACR | PUBL | DNRF
"""What a response carries over from its request (as the reference server's takeValuesFrom)."""

# opCodes.
OC_RESOLUTION = 1
OC_GET_SITE_INFO = 2
OC_CREATE_HANDLE = 100
OC_DELETE_HANDLE = 101
OC_ADD_VALUE = 102
OC_REMOVE_VALUE = 103
OC_MODIFY_VALUE = 104
OC_LIST_HANDLES = 105
OC_RESPONSE_TO_CHALLENGE = 200
OC_VERIFY_CHALLENGE = 201
OC_HOME_NA = 300
OC_UNHOME_NA = 301
OC_LIST_HOMED_NAS = 302
OC_SESSION_SETUP = 400
OC_SESSION_TERMINATE = 401
OC_SESSION_EXCHANGEKEY = 402
OC_LOGIN_ID_SYSTEM = 2001
"""The IDIS SDK's login."""

# Response codes (RFC 3652 section 2.2.2.3, Handle.Net's additions, the IDIS SDK's 60x).
RC_SUCCESS = 1
RC_ERROR = 2
RC_SERVER_TOO_BUSY = 3
RC_PROTOCOL_ERROR = 4
RC_OPERATION_NOT_SUPPORTED = 5
RC_RECURSION_COUNT_TOO_HIGH = 6
RC_SERVER_BACKUP = 7
RC_HANDLE_NOT_FOUND = 100
RC_HANDLE_ALREADY_EXISTS = 101
RC_INVALID_HANDLE = 102
RC_VALUES_NOT_FOUND = 200
RC_VALUE_ALREADY_EXISTS = 201
RC_INVALID_VALUE = 202
RC_OUT_OF_DATE_SITE_INFO = 300
RC_SERVER_NOT_RESP = 301
RC_SERVICE_REFERRAL = 302
RC_PREFIX_REFERRAL = 303
RC_INVALID_ADMIN = 400
RC_INSUFFICIENT_PERMISSIONS = 401
RC_AUTHENTICATION_NEEDED = 402
RC_AUTHENTICATION_FAILED = 403
RC_INVALID_CREDENTIAL = 404
RC_AUTHEN_TIMEOUT = 405
RC_AUTHEN_ERROR = 406
RC_SESSION_TIMEOUT = 500
RC_SESSION_FAILED = 501
RC_INVALID_SESSION_KEY = 502
RC_NEED_RSAKEY_FOR_SESSIONEXCHANGE = 503
RC_INVALID_SESSIONSETUP_REQUEST = 504
RC_SESSION_MESSAGE_REJECTED = 505

HANDLE_FIRST = frozenset(
    {OC_GET_SITE_INFO, *range(OC_CREATE_HANDLE, OC_LIST_HANDLES + 1), OC_HOME_NA, OC_UNHOME_NA}
    | {OC_LOGIN_ID_SYSTEM}
)
"""opCodes whose body starts with the handle the request is about (get site info's is "/")."""

ERROR_CODES = frozenset(
    {2, 3, 4, 5, 6, 7, 100, 101, 102, 200, 201, 202, 300, 301}
    | set(range(400, 407))
    | set(range(500, 506))
    | set(range(601, 606))
)
"""Codes a response may carry as an error message (length-prefixed text); any other code an
error names is sent as 2 (error), since a client could not decode it."""

# Request digest hash codes.
HASH_SHA1 = 2
HASH_SHA256 = 3

_ENVELOPE = struct.Struct(">BBBBiiii")
_HEADER = struct.Struct(">iiIhBBii")
_FRAME = struct.Struct(">BBBBiiiiiiIhBBii")
"""Envelope and header in one: what a response puts before its body."""
_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Envelope:
    major: int
    minor: int
    flags: int
    """Compressed, encrypted, truncated (``ENV_*``)."""
    suggest_major: int
    suggest_minor: int
    session_id: int
    request_id: int
    message_id: int
    message_length: int

    @property
    def truncated(self) -> bool:
        return bool(self.flags & ENV_TRUNCATED)

    def encode(self) -> bytes:
        return _ENVELOPE.pack(
            self.major,
            self.minor,
            self.flags | (self.suggest_major & 0x03),
            self.suggest_minor,
            self.session_id,
            self.request_id,
            self.message_id,
            self.message_length,
        )


def decode_envelope(data: bytes) -> Envelope:
    """The envelope at the start of ``data``; :class:`ProtocolError` if it cannot be one.

    As the reference does, a suggested major version of 0 means "the version sent"."""
    if len(data) < ENVELOPE_SIZE:
        raise ProtocolError("message envelope shorter than 20 bytes")
    major, minor, byte2, s_minor, session, request, message_id, length = _ENVELOPE.unpack_from(data)
    s_major = byte2 & 0x03
    if s_major == 0:
        s_major, s_minor = major, minor
    if not 0 <= length <= MAX_MESSAGE_LENGTH:
        raise ProtocolError(f"invalid message length {length}")
    if message_id < 0:
        raise ProtocolError(f"invalid message id {message_id}")
    return Envelope(
        major, minor, byte2 & 0xE0, s_major, s_minor, session, request, message_id, length
    )


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request message.

    ``handle`` is the raw bytes the client sent (UTF-8 by the protocol; the front end decodes
    them).  ``types``/``indexes`` are the resolution filters, ``auth_bytes`` the IDIS SDK's
    extra field (None when absent), ``body`` the body as sent (for opCodes decoded no further),
    ``signed_part`` the header and body as sent (what a request digest covers).
    """

    envelope: Envelope
    op_code: int
    op_flags: int
    site_info_serial: int
    recursion_count: int
    expiration: int
    handle: bytes
    types: tuple[bytes, ...] = ()
    indexes: tuple[int, ...] = ()
    auth_bytes: bytes | None = None
    body: bytes = b""
    signature: bytes | None = None
    signed_part: bytes = b""

    def has(self, flag: int) -> bool:
        return bool(self.op_flags & flag)


class Reader:
    """Bounds-checked reads of the protocol's fields; every overrun is a :class:`ProtocolError`."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def need(self, size: int) -> None:
        if size < 0 or self.pos + size > self.end:
            raise ProtocolError("message body ends early")

    def i32(self) -> int:
        self.need(4)
        (value,) = _INT.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def u32(self) -> int:
        self.need(4)
        (value,) = _UINT.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def byte(self) -> int:
        self.need(1)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def raw(self, size: int) -> bytes:
        self.need(size)
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return bytes(value)

    def blob(self, limit: int = MAX_MESSAGE_LENGTH) -> bytes:
        size = self.i32()
        if size > limit:
            raise ProtocolError(f"field of {size} bytes exceeds {limit}")
        return self.raw(size)

    def count(self, limit: int = MAX_ARRAY) -> int:
        size = self.i32()
        if not 0 <= size <= limit:
            raise ProtocolError(f"invalid array size {size}")
        return size

    @property
    def left(self) -> int:
        return self.end - self.pos


def decode_request(envelope: Envelope, message: bytes) -> Request:
    """The request in ``message`` (header, body, credential: the envelope's length of bytes).

    Raises :class:`ProtocolError` for anything malformed: short or overlong fields, a response
    code other than 0, unknown structure.  Unknown opCodes decode (body kept raw) so that the
    front end can answer them "operation not supported"."""
    if len(message) < HEADER_SIZE:
        raise ProtocolError("message shorter than its 24-byte header")
    op_code, response_code, flags, serial, recursion, _, expiration, body_length = (
        _HEADER.unpack_from(message)
    )
    if response_code != 0:
        raise ProtocolError("a request must carry response code 0")
    if op_code <= 0:
        raise ProtocolError(f"invalid opCode {op_code}")
    end = HEADER_SIZE + body_length
    if body_length < 0 or end > len(message):
        raise ProtocolError(f"body length {body_length} exceeds the message")
    signature = None
    if len(message) >= end + 4:
        tail = Reader(message, end, len(message))
        signature = tail.blob()
    body = Reader(message, HEADER_SIZE, end)
    handle = b""
    types: tuple[bytes, ...] = ()
    indexes: tuple[int, ...] = ()
    auth_bytes = None
    if op_code == OC_RESOLUTION:
        handle = body.blob(MAX_HANDLE_BYTES)
        indexes = tuple(body.u32() for _ in range(body.count()))
        types = tuple(body.blob(1024) for _ in range(body.count()))
        if body.left >= 4:  # the IDIS SDK's authBytes
            auth_bytes = body.blob()
        if body.left:
            raise ProtocolError("unexpected bytes after the resolution request")
    elif op_code in HANDLE_FIRST and body.left >= 4:
        handle = body.blob(MAX_HANDLE_BYTES)
    return Request(
        envelope,
        op_code,
        flags,
        serial,
        recursion,
        expiration,
        handle,
        types,
        indexes,
        auth_bytes,
        bytes(message[HEADER_SIZE:end]),
        signature,
        bytes(message[:end]),
    )


def undecodable(data: bytes) -> Request:
    """A stand-in request for answering a message whose envelope cannot be decoded (a length
    out of bounds, say): its request id and session as sent, opCode 0, version 2.11.
    ``data`` must hold the 20 envelope bytes."""
    session, request_id = struct.unpack_from(">ii", data, 4)
    envelope = Envelope(MAJOR, MINOR, 0, MAJOR, MINOR, session, request_id, 0, 0)
    return Request(envelope, 0, 0, 0, 0, 0, b"")


# --- responses -----------------------------------------------------------------------------


def response_version(request: Request) -> tuple[int, int]:
    """The version a response is sent in: the one the request suggested, at most ours."""
    suggested = (request.envelope.suggest_major, request.envelope.suggest_minor)
    return min(suggested, (MAJOR, MINOR))


def response_flags(request: Request) -> int:
    """The response's opFlags: the request's echoed ones, authoritative set."""
    return AUTH | (request.op_flags & ECHOED_FLAGS) | (request.op_flags & RRDG)


def request_digest(request: Request) -> bytes:
    """What a response to an RRDG request puts first in its body: the hash code and the digest
    of the request's header and body as sent (SHA-256 from protocol 2.7, SHA-1 before)."""
    if response_version(request) >= (2, 7):
        return bytes([HASH_SHA256]) + hashlib.sha256(request.signed_part).digest()
    return bytes([HASH_SHA1]) + hashlib.sha1(request.signed_part).digest()


def frame(
    request: Request,
    response_code: int,
    body: bytes,
    *,
    expiration: int,
    site_info_serial: int = 1,
    op_code: int | None = None,
    signature: bytes = b"",
) -> bytes:
    """The whole response to ``request`` as sent on TCP (envelope included): ``body`` is the
    response body without a request digest; one is prepended when the request asked (RRDG)."""
    if request.op_flags & RRDG:
        body = request_digest(request) + body
    tail = body + _INT.pack(len(signature)) + signature
    return frame_tail(
        request,
        response_code,
        tail,
        len(body),
        expiration=expiration,
        site_info_serial=site_info_serial,
        op_code=op_code,
    )


def frame_tail(
    request: Request,
    response_code: int,
    tail: bytes,
    body_length: int,
    *,
    expiration: int,
    site_info_serial: int = 1,
    op_code: int | None = None,
) -> bytes:
    """Envelope and header before ``tail`` (a body of ``body_length`` bytes and its credential,
    rendered once and reused): the fields of this request patched in.  The hot path of cached
    answers: no digest here (a request asking for one is answered by :func:`frame`)."""
    major, minor = response_version(request)
    envelope = request.envelope
    return (
        _FRAME.pack(
            major,
            minor,
            MAJOR,
            MINOR,
            envelope.session_id,
            envelope.request_id,
            0,
            HEADER_SIZE + len(tail),
            request.op_code if op_code is None else op_code,
            response_code,
            response_flags(request),
            site_info_serial,
            request.recursion_count & 0xFF,
            0,
            expiration,
            body_length,
        )
        + tail
    )


Sign = Callable[[bytes, str], bytes]
"""Signs bytes with the site's key using the named hash (``SHA-256`` or ``SHA1``)."""


def signed_frame(
    request: Request, response_code: int, body: bytes, *, expiration: int, sign: Sign
) -> bytes:
    """The response as :func:`frame` renders it, signed (CERT): an ``HS_SIGNED`` credential
    over the envelope fields and the header and body, as the reference signs from 2.6 on (the
    versions, from 2.8 the suggested ones, session id, request id and a session counter of 0;
    SHA-256 from 2.7, SHA-1 before; 2.6 keeps the reference's overlapping writes)."""
    unsigned = frame(request, response_code, body, expiration=expiration)
    header_and_body = unsigned[ENVELOPE_SIZE:-4]
    major, minor = response_version(request)
    version = (major, minor)
    envelope = request.envelope
    prefix = b""
    if version >= (2, 7):
        prefix = bytes([major, minor])
        if version >= (2, 8):
            prefix += bytes([MAJOR, MINOR])
        prefix += struct.pack(">iii", envelope.session_id, envelope.request_id, 0)
    elif version >= (2, 6):
        # Each write there lands at offset 4: the session id's first two bytes survive.
        prefix = bytes([major, minor]) + struct.pack(">i", envelope.session_id)[:2] + bytes(10)
    hash_name = "SHA-256" if version >= (2, 7) else "SHA1"
    signature = sign(prefix + header_and_body, hash_name)
    section = string(hash_name.encode()) + string(signature)
    credential = b"".join(
        (
            b"\x00\x00\x00\x00",
            string(b""),
            _INT.pack(0),
            string(b"HS_SIGNED"),
            _INT.pack(len(section)),
            section,
        )
    )
    return frame(request, response_code, body, expiration=expiration, signature=credential)


def signature_parts(response: Response) -> tuple[str, bytes, bytes]:
    """For checking a signed response: the hash name, the signature, and the bytes signed
    (as :func:`signed_frame` composes them, for versions from 2.7)."""
    reader = Reader(response.signature, 0, len(response.signature))
    reader.raw(4)
    reader.blob()
    reader.i32()
    if reader.blob() != b"HS_SIGNED":
        raise ProtocolError("not an HS_SIGNED credential")
    reader.i32()
    hash_name = reader.blob().decode()
    signature = reader.blob()
    envelope = response.envelope
    prefix = bytes([envelope.major, envelope.minor])
    if (envelope.major, envelope.minor) >= (2, 8):
        prefix += bytes([envelope.suggest_major, envelope.suggest_minor])
    prefix += struct.pack(">iii", envelope.session_id, envelope.request_id, 0)
    return hash_name, signature, prefix + response.signed_part


def unsigned_tail(body: bytes) -> bytes:
    """A body followed by an empty credential: what :func:`frame_tail` takes."""
    return body + b"\x00\x00\x00\x00"


def string(value: bytes) -> bytes:
    """A length-prefixed byte string."""
    return _INT.pack(len(value)) + value


def values_body(handle: bytes, values: Sequence[bytes]) -> bytes:
    """A resolution response's (or referral's) body: the handle, then the encoded values."""
    return b"".join((string(handle), _INT.pack(len(values)), *values))


def error_body(message: bytes) -> bytes:
    return string(message)


def wire_code(code: int, version: tuple[int, int]) -> int:
    """The response code an error of code ``code`` is sent as: itself when the protocol names
    it, else 2; ``invalid value`` (202) was ``value already exists`` (201) before 2.5."""
    if code == RC_INVALID_VALUE and version < (2, 5):
        return RC_VALUE_ALREADY_EXISTS
    return code if code in ERROR_CODES else RC_ERROR


# --- UDP -----------------------------------------------------------------------------------


def udp_packets(message: bytes) -> list[bytes]:
    """A whole message (envelope first, as :func:`frame` renders it) as UDP packets of at most
    512 bytes: one if it fits, else 492-byte pieces of the message numbered by message id, each
    with the envelope's truncated flag (the reference client reassembles them by message id and
    the total length; it checks neither flag nor order)."""
    if len(message) <= UDP_PACKET:
        return [message]
    head = bytearray(message[:ENVELOPE_SIZE])
    head[2] |= ENV_TRUNCATED
    packets = []
    for number, start in enumerate(range(ENVELOPE_SIZE, len(message), UDP_DATA)):
        struct.pack_into(">i", head, 12, number)
        packets.append(bytes(head) + message[start : start + UDP_DATA])
    return packets


class Reassembly:
    """Collects the packets of one multi-packet message (as a client or a server receives
    them).  ``add`` returns the whole message (without envelope) once every piece is in."""

    def __init__(self, envelope: Envelope) -> None:
        self.length = envelope.message_length
        self.pieces: dict[int, bytes] = {}
        self.count = max(1, -(-self.length // UDP_DATA))

    def add(self, envelope: Envelope, payload: bytes) -> bytes | None:
        if envelope.message_length != self.length or envelope.message_id >= self.count:
            raise ProtocolError("packet does not belong to this message")
        expected = min(UDP_DATA, self.length - envelope.message_id * UDP_DATA)
        if len(payload) != expected:
            raise ProtocolError("packet of the wrong size")
        self.pieces[envelope.message_id] = payload
        if len(self.pieces) < self.count:
            return None
        return b"".join(self.pieces[i] for i in range(self.count))


# --- the client's side ---------------------------------------------------------------------


def encode_request(
    op_code: int,
    handle: bytes,
    *,
    request_id: int,
    flags: int = RECU | CACR | PUBL,
    types: Sequence[bytes] = (),
    indexes: Sequence[int] = (),
    auth_bytes: bytes | None = None,
    version: tuple[int, int] = (MAJOR, MINOR),
    suggest: tuple[int, int] = (MAJOR, MINOR),
    site_info_serial: int = 1,
    session_id: int = 0,
    recursion_count: int = 0,
    expiration: int = 0,
    body: bytes | None = None,
) -> bytes:
    """A request as a client sends it on TCP (envelope first): resolution (with filters, and
    the IDIS SDK's ``auth_bytes``), any request whose body is just its handle, or ``body``."""
    if body is not None:
        pass
    elif op_code == OC_RESOLUTION:
        body = b"".join(
            (
                string(handle),
                _INT.pack(len(indexes)),
                *(_UINT.pack(i) for i in indexes),
                _INT.pack(len(types)),
                *(string(t) for t in types),
                b"" if auth_bytes is None else string(auth_bytes),
            )
        )
    else:
        body = string(handle)
    message = (
        _HEADER.pack(op_code, 0, flags, site_info_serial, recursion_count, 0, expiration, len(body))
        + body
        + bytes(4)
    )
    envelope = Envelope(
        version[0], version[1], 0, suggest[0], suggest[1], session_id, request_id, 0, len(message)
    )
    return envelope.encode() + message


@dataclass(frozen=True, slots=True)
class Response:
    """A decoded response: header fields and the body after any request digest."""

    envelope: Envelope
    op_code: int
    response_code: int
    op_flags: int
    site_info_serial: int
    expiration: int
    digest: bytes
    body: bytes
    signature: bytes
    signed_part: bytes = b""
    """The header and body as received (what a signature covers)."""


def decode_response(envelope: Envelope, message: bytes) -> Response:
    """The header of a response and its body (a digest, when RRDG is set, split off)."""
    if len(message) < HEADER_SIZE:
        raise ProtocolError("message shorter than its 24-byte header")
    op_code, code, flags, serial, _, _, expiration, body_length = _HEADER.unpack_from(message)
    end = HEADER_SIZE + body_length
    if body_length < 0 or end > len(message):
        raise ProtocolError(f"body length {body_length} exceeds the message")
    reader = Reader(message, end, len(message))
    signature = reader.blob() if reader.left >= 4 else b""
    start = HEADER_SIZE
    digest = b""
    if flags & RRDG and code != 0:
        size = {HASH_SHA1: 20, HASH_SHA256: 32}.get(message[start] if end > start else -1)
        if size is None:
            raise ProtocolError("unknown request digest")
        digest = bytes(message[start : start + 1 + size])
        start += 1 + size
    return Response(
        envelope,
        op_code,
        code,
        flags,
        serial,
        expiration,
        digest,
        bytes(message[start:end]),
        signature,
        bytes(message[:end]),
    )
