"""Native administration: challenge-response authentication, then the Registrar.

An administration request (opCodes 100 to 105) without a session gets a challenge (code 402):
a digest of the request and a random nonce, under a new session id that names the pending
challenge.  The client answers with opCode 200 on that session id: a MAC keyed by an HS_SECKEY
secret, or a signature by the private half of an HS_PUBKEY (RSA or DSA).  Once it verifies,
the original request is performed through the same :class:`registry.service.Registrar` as
REST (rights, validation, idempotence) and answered with the answer's request id, as the
reference server does.  Pending challenges are bounded in count and age, and shared by the
node's workers through files in the data directory (Handle.Net clients answer on a new
connection); nodes behind one address on several hosts need sticky routing per client.

Secrets are read through :func:`registry.secrets.open_secret` (sealed at rest); a secret still
stored as a legacy scrypt hash cannot answer a challenge (403, saying why).  SM2 keys (which
IDIS clients may hold as HS_PUBKEY) are refused with 403 "unsupported key": neither the
reference protocol nor this server defines their signature encoding.

The IDIS SDK logs in once per TCP connection (opCode 2001 with its own session id, challenged
and answered as above, the reply carrying opCode 2001); its later administration requests on
that connection carry only the session id and are done as the logged-in identity
(:class:`Login`).  2001 on UDP or HTTP answers 5.

Home and unhome (300, 301: the handle ``0.NA/<prefix>``) are administration like the others:
challenged, then :meth:`registry.service.Registrar.set_homed` (its rule: the prefix's own
administrator, MODIFY_ADMIN on ``0.NA/<prefix>`` stored here).  List homed prefixes (302) is
answered without authentication, as REST's ``/api/prefixes``.

opCode 201 (verify challenge) answers another server asking whether a secret-key answer
matches an identity whose handle lives here (one byte: 1 valid, 0 not).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from nodes.handle.sessions import sweep_files
from registry.authentication import failure_subjects
from registry.secrets import needs_resealing, open_secret
from resolver.codecs import handle_admin as admin
from resolver.codecs import handle_wire as wire
from resolver.codecs.handle_data import encode_public_key
from resolver.errors import (
    AuthenticationFailed,
    HandleError,
    HandleNotFound,
    InvalidHandle,
    OperationNotSupported,
    ProtocolError,
    ServerBusy,
    ValuesNotFound,
)
from resolver.identifiers import Handle, fold, prefix_handle
from resolver.values import HS_PUBKEY, HS_SECKEY, HandleValue, Record, Ref

log = logging.getLogger(__name__)

CHALLENGE_SECONDS = 60.0
"""How long a challenge may be answered (the reference's default)."""
MAX_PENDING = 10_000
"""Pending challenges a node keeps, about (checked every :data:`CHECK_EVERY` per worker)."""
MAX_PENDING_BYTES = 64 * 1024 * 1024
"""Bytes of pending requests a node keeps, about (a request may be 256 KiB)."""
CHECK_EVERY = 64
LIST_PAGE = 10_000
MAX_LISTED = 1_000_000
ADMIN_OPS = frozenset(range(wire.OC_CREATE_HANDLE, wire.OC_LIST_HANDLES + 1)) | {
    wire.OC_HOME_NA,
    wire.OC_UNHOME_NA,
}

Reply = tuple[wire.Request, int, bytes]
"""The request a response answers (its fields go into the header), the code and the body."""

_HASHES: dict[bytes, Callable[[], hashes.HashAlgorithm]] = {
    b"SHA1": hashes.SHA1,
    b"SHA-1": hashes.SHA1,
    b"\x02": hashes.SHA1,
    b"SHA-256": hashes.SHA256,
    b"SHA256": hashes.SHA256,
    b"\x03": hashes.SHA256,
    b"MD5": hashes.MD5,
    b"\x01": hashes.MD5,
}


@dataclass(frozen=True, slots=True)
class Pending:
    request: wire.Request
    nonce: bytes
    digest: bytes
    """The request digest without its hash code (what the answer signs after the nonce)."""


_PENDING_HEAD = struct.Struct(">d16s")


class Challenges:
    """Pending challenges by session id, one file each in ``directory``, bounded in count and
    age.  Files, because a client answers on a new connection that any worker of the node may
    accept (``SO_REUSEPORT``); taking one is a rename, so only one worker performs it."""

    def __init__(
        self,
        directory: Path,
        clock: Callable[[], float] = time.time,
        ttl: float = CHALLENGE_SECONDS,
        limit: int = MAX_PENDING,
    ) -> None:
        self._dir, self._clock, self._ttl, self._limit = directory, clock, ttl, limit
        directory.mkdir(parents=True, exist_ok=True)
        self._opened = 0

    def open(self, request: wire.Request, session_id: int = 0) -> tuple[int, Pending]:
        """A new challenge to ``request``, under ``session_id`` (a native session's) or a new
        id; :class:`ServerBusy` if too many are pending."""
        self._opened += 1
        if self._opened % CHECK_EVERY == 1:
            count, size = self.sweep()
            if count >= self._limit or size >= MAX_PENDING_BYTES:
                raise ServerBusy("too many pending challenges; retry later")
        session_id = session_id or int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF or 1
        digest = wire.request_digest(request)[1:]
        entry = Pending(request, os.urandom(admin.NONCE_SIZE), digest)
        message = request.signed_part + b"\x00\x00\x00\x00"
        raw = (
            _PENDING_HEAD.pack(self._clock() + self._ttl, entry.nonce)
            + replace(request.envelope, message_length=len(message)).encode()
            + message
        )
        path = self._dir / str(session_id)
        temporary = path.with_suffix(".new")
        temporary.write_bytes(raw)
        temporary.replace(path)
        return session_id, entry

    def take(self, session_id: int) -> Pending | None:
        """The challenge of ``session_id`` if it is still open; it can be answered once."""
        if session_id <= 0:
            return None
        path = self._dir / str(session_id)
        taken = path.with_suffix(f".{os.getpid()}")
        try:
            path.rename(taken)
            raw = taken.read_bytes()
            taken.unlink()
        except OSError:
            return None
        expires, nonce = _PENDING_HEAD.unpack_from(raw)
        if expires <= self._clock():
            return None
        data = raw[_PENDING_HEAD.size :]
        envelope = wire.decode_envelope(data)
        request = wire.decode_request(envelope, data[wire.ENVELOPE_SIZE :])
        return Pending(request, nonce, wire.request_digest(request)[1:])

    def sweep(self) -> tuple[int, int]:
        """Remove expired challenges; how many are left and their bytes."""
        return sweep_files(self._dir, self._clock() - self._ttl - 5)


@dataclass(slots=True)
class Login:
    """One TCP connection's IDIS login (opCode 2001): the pending challenge, then who logged in
    under which session id (the SDK's later requests carry only that session id)."""

    pending: Pending | None = None
    session_id: int = 0
    identity: Ref | None = None

    def covers(self, request: wire.Request) -> Ref | None:
        """The identity a request of this connection acts as, if it is in the login session."""
        session_id = request.envelope.session_id
        return self.identity if session_id and session_id == self.session_id else None

    def answers(self, request: wire.Request) -> bool:
        """True if ``request`` (an opCode 200) answers this connection's login challenge."""
        pending = self.pending
        return pending is not None and (
            pending.request.envelope.session_id == request.envelope.session_id
        )


def _answering(original: wire.Request, answer: wire.Request) -> wire.Request:
    """``original`` as its response must name it: with the answer's request id."""
    envelope = replace(original.envelope, request_id=answer.envelope.request_id)
    return replace(original, envelope=envelope)


def _refusal(request: wire.Request, error: HandleError) -> Reply:
    code = wire.wire_code(error.code, wire.response_version(request))
    return request, code, wire.error_body(error.message.encode())


class NativeAdmin:
    """Administration and authentication for one worker's ``node``."""

    def __init__(self, node: Any, challenges: Challenges | None = None) -> None:
        self._node = node
        self.challenges = challenges or Challenges(node.settings.data_dir / "challenges")

    def challenge(self, request: wire.Request, session_id: int = 0) -> Reply:
        """A challenge to ``request`` (checked first: a malformed one is refused, not kept),
        under ``session_id`` when the request is in a native session."""
        admin.decode_admin(request, 0)
        session_id, entry = self.challenges.open(request, session_id)
        envelope = replace(request.envelope, session_id=session_id)
        asked = replace(request, envelope=envelope, op_flags=request.op_flags | wire.RRDG)
        return asked, wire.RC_AUTHENTICATION_NEEDED, wire.string(entry.nonce)

    async def answer(
        self,
        request: wire.Request,
        source: str | None = None,
        verified: Callable[[Ref], None] | None = None,
    ) -> Reply:
        """The response to an opCode 200 from ``source``: the original request's, performed if
        verified (``verified`` is told who proved themselves, first)."""
        entry = self.challenges.take(request.envelope.session_id)
        if entry is None:
            message = b"no pending challenge for this session (expired or answered)"
            return request, wire.RC_AUTHEN_TIMEOUT, wire.error_body(message)
        original, who = await self._answered(entry, request, source)
        if isinstance(who, HandleError):
            return _refusal(original, who)
        if verified is not None:
            verified(who)
        return await self.perform(original, who)

    async def _answered(
        self, entry: Pending, request: wire.Request, source: str | None
    ) -> tuple[wire.Request, Ref | HandleError]:
        """The challenged request as its response names it (with the answer's request id),
        and who ``request`` (an opCode 200) proved to be, or why it proved nothing.  Failures
        are throttled as REST's are: per identity and per source, refused (code 3) before any
        key is checked."""
        original = _answering(entry.request, request)
        try:
            answer = admin.decode_challenge_answer(request)
            version = wire.response_version(request)
            async with self._failures(answer.identity.handle, source):
                return original, await self._verify(answer, entry, version)
        except HandleError as error:
            return original, error

    @asynccontextmanager
    async def _failures(self, handle: str, source: str | None) -> AsyncIterator[None]:
        """Refuses (:class:`resolver.errors.Throttled`) while ``handle`` or ``source`` has
        failed too often; counts an :class:`AuthenticationFailed` raised inside."""
        throttle = self._node.throttle
        subjects = failure_subjects(fold(handle), source)
        await throttle.check(subjects, "failed authentications")
        try:
            yield
        except AuthenticationFailed:
            await throttle.hit(subjects)
            raise

    async def perform(self, request: wire.Request, identity: Ref) -> Reply:
        """``request`` done by ``identity`` (authenticated already)."""
        try:
            return request, *(await self._perform(request, identity))
        except HandleError as error:
            return _refusal(request, error)

    # --- the IDIS SDK's login (one TCP connection) ---------------------------------------

    def login_challenge(self, request: wire.Request, login: Login) -> Reply:
        """opCode 2001: a challenge kept by this connection (the SDK answers on it, under the
        session id it chose itself)."""
        nonce = os.urandom(admin.NONCE_SIZE)
        login.pending = Pending(request, nonce, wire.request_digest(request)[1:])
        login.identity = None
        asked = replace(request, op_flags=request.op_flags | wire.RRDG)
        return asked, wire.RC_AUTHENTICATION_NEEDED, wire.string(nonce)

    async def login_answer(
        self, request: wire.Request, login: Login, source: str | None = None
    ) -> Reply:
        """The opCode 200 answering a login: on success the connection's session id stands for
        the identity; the reply carries opCode 2001 (the SDK decodes no other)."""
        entry, login.pending = login.pending, None
        assert entry is not None
        original, who = await self._answered(entry, request, source)
        if isinstance(who, HandleError):
            return _refusal(original, who)
        login.session_id, login.identity = request.envelope.session_id, who
        return original, wire.RC_SUCCESS, b""

    async def verify_challenge(self, request: wire.Request, source: str | None = None) -> Reply:
        """opCode 201: is this secret-key answer valid for an identity that lives here?  (An
        oracle for guessing: throttled as answers are.)"""
        reader = wire.Reader(request.body, 0, len(request.body))
        handle = reader.blob(wire.MAX_HANDLE_BYTES).decode("utf-8", "replace")
        index = reader.i32()
        nonce = reader.blob(1024)
        code = reader.data[reader.pos] if reader.left else -1
        if code == 0:
            digest = reader.blob(1024)
        else:
            size = {1: 16, 2: 20, 3: 32}.get(code)
            if size is None:
                raise ProtocolError("invalid request digest in verify challenge")
            reader.byte()
            digest = reader.raw(size)
        signed = reader.blob(65536)
        record = await self._record(handle)
        version = wire.response_version(request)
        try:
            async with self._failures(handle, source):
                for value in _keys(record, index, HS_SECKEY):
                    if await self._secret_matches(value, signed, nonce, digest, version):
                        return request, wire.RC_SUCCESS, b"\x01"
                raise AuthenticationFailed("no match")
        except AuthenticationFailed:
            return request, wire.RC_SUCCESS, b"\x00"

    # --- authentication ------------------------------------------------------------------

    async def _verify(
        self, answer: admin.ChallengeAnswer, entry: Pending, version: tuple[int, int]
    ) -> Ref:
        identity = answer.identity
        record = await self._record(identity.handle)
        if answer.key_type == admin.SECRET_KEY_TYPE:
            for value in _keys(record, identity.index, HS_SECKEY):
                if await self._secret_matches(
                    value, answer.signed, entry.nonce, entry.digest, version
                ):
                    return Ref(identity.handle, value.index)
            stored = [str(v.data.value) for v in _keys(record, identity.index, HS_SECKEY)]
            if stored and all(needs_resealing(s) for s in stored):
                raise AuthenticationFailed(
                    "this secret is stored as a one-way hash: log in once over REST (HTTP "
                    "Basic) so that it is stored encrypted, then retry"
                )
        elif answer.key_type == admin.PUBLIC_KEY_TYPE:
            try:
                hash_name, signature = admin.decode_public_key_answer(answer.signed)
            except ProtocolError:
                raise AuthenticationFailed("malformed public key answer") from None
            keys = _keys(record, identity.index, HS_PUBKEY)
            for value in keys:
                if _signature_matches(value, hash_name, signature, entry.nonce + entry.digest):
                    return Ref(identity.handle, value.index)
            if keys and all(_is_sm2(value) for value in keys):
                raise AuthenticationFailed("SM2 keys are not supported for native authentication")
        else:
            raise AuthenticationFailed(f"unknown key type {answer.key_type[:32]!r}")
        log.info("native authentication failed for %d:%s", identity.index, identity.handle[:200])
        raise AuthenticationFailed(f"identity {identity.index}:{identity.handle} not verified")

    async def _record(self, handle: str) -> Record | None:
        try:
            record: Record | None = await self._node.fetch(Handle.parse(handle).key)
        except InvalidHandle:
            return None
        return record

    @staticmethod
    async def _secret_matches(
        value: HandleValue, signed: bytes, nonce: bytes, digest: bytes, version: tuple[int, int]
    ) -> bool:
        secret = open_secret(str(value.data.value))
        if secret is None:
            return False
        # PBKDF2 answers cost up to MAX_PBKDF2_ITERATIONS rounds: keep them off the loop.
        return await asyncio.to_thread(
            admin.secret_answer_matches, signed, nonce, digest, secret, version
        )

    # --- administration ------------------------------------------------------------------

    async def _perform(self, request: wire.Request, identity: Ref) -> tuple[int, bytes]:
        """Code and body of the administration ``request`` done by ``identity``."""
        registrar = self._node.registrar
        body = admin.decode_admin(request, int(time.time()))
        try:
            text = body.handle.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidHandle("handle is not UTF-8") from None
        op = request.op_code
        overwrite = request.has(wire.OVRW)
        if op == wire.OC_CREATE_HANDLE:
            if request.has(wire.MINT):
                if not text.endswith("/"):
                    text += "/"
                prefix = Handle.parse(text, allow_empty_suffix=True)
                result = await registrar.mint(prefix, body.values, identity)
            else:
                result = await registrar.put(
                    Handle.parse(text), body.values, identity, overwrite=overwrite
                )
            return wire.RC_SUCCESS, wire.string(result.handle.encode())
        if op == wire.OC_DELETE_HANDLE:
            await registrar.delete(Handle.parse(text), identity)
        elif op in (wire.OC_ADD_VALUE, wire.OC_MODIFY_VALUE):
            handle = Handle.parse(text)
            indexes = [v.index for v in body.values]
            # Adding to or modifying a handle that is not there does not create it.
            record = await self._node.store.get(handle.key)
            if record is None:
                raise HandleNotFound("handle not found", handle=text)
            if op == wire.OC_MODIFY_VALUE:
                missing = [i for i in indexes if i not in record.by_index()]
                if missing:
                    raise ValuesNotFound(f"no value at index {missing[0]}", handle=text)
                overwrite = True
            await registrar.put(handle, body.values, identity, overwrite=overwrite, indexes=indexes)
        elif op == wire.OC_REMOVE_VALUE:
            await registrar.delete(Handle.parse(text), identity, list(body.indexes))
        elif op == wire.OC_LIST_HANDLES:
            return wire.RC_SUCCESS, await self._list(text, identity)
        elif op in (wire.OC_HOME_NA, wire.OC_UNHOME_NA):
            homed = op == wire.OC_HOME_NA
            await registrar.set_homed(_named_prefix(text), identity, homed=homed)
        else:
            raise OperationNotSupported(f"opCode {op} is not supported here")
        return wire.RC_SUCCESS, b""

    async def _list(self, text: str, identity: Ref) -> bytes:
        """Every handle under the prefix named by ``0.NA/<prefix>`` (or the bare prefix)."""
        prefix = _named_prefix(text)
        handles: list[str] = []
        page = 0
        while len(handles) < MAX_LISTED:
            _, found = await self._node.registrar.list_handles(prefix, identity, page, LIST_PAGE)
            handles += found
            if len(found) < LIST_PAGE:
                break
            page += 1
        return handle_list(handles)

    async def homed(self) -> bytes:
        """opCode 302's body: the prefixes homed here, as ``0.NA/<prefix>`` (public, as on
        REST's ``/api/prefixes``: no authentication asked)."""
        return handle_list([prefix_handle(p) for p in await self._node.registrar.homed_prefixes()])


def _named_prefix(text: str) -> str:
    """The prefix a request names by ``0.NA/<prefix>`` (or bare, as Handle.Net accepts)."""
    return text[5:] if text.upper().startswith("0.NA/") else text


def handle_list(handles: list[str]) -> bytes:
    return struct.pack(">i", len(handles)) + b"".join(wire.string(h.encode()) for h in handles)


def _keys(record: Record | None, index: int, type_: str) -> list[HandleValue]:
    if record is None:
        return []
    return [v for v in record.values if v.type == type_ and index in (0, v.index)]


def _is_sm2(value: HandleValue) -> bool:
    """An SM2 key, in the JSON form (``crv`` SM2) or as bytes naming SM2."""
    data = value.data
    if data.format == "key" and isinstance(data.value, dict):
        return str(data.value.get("crv", "")).upper() in ("SM2", "SM2P256V1")
    return "SM2" in str(data.value)[:64].upper() or b"SM2" in _raw(value)[:32]


def _raw(value: HandleValue) -> bytes:
    try:
        return base64.b64decode(str(value.data.value)) if value.data.format == "base64" else b""
    except ValueError:
        return b""


def _public_key(value: HandleValue) -> rsa.RSAPublicKey | dsa.DSAPublicKey | None:
    """The key in an HS_PUBKEY value (JSON form or the protocol's bytes); None if it holds
    none this server can use (SM2, unknown or malformed)."""
    data = value.data
    if data.format == "key" and isinstance(data.value, dict):
        raw = encode_public_key(data.value)
    elif data.format == "base64":
        raw = _raw(value)
    else:
        return None
    try:
        reader = wire.Reader(raw, 0, len(raw))
        kind = reader.blob(64)
        reader.raw(2)
        if kind == b"RSA_PUB_KEY":
            e = int.from_bytes(reader.blob(), "big")
            n = int.from_bytes(reader.blob(), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kind == b"DSA_PUB_KEY":
            q, p, g, y = (int.from_bytes(reader.blob(), "big") for _ in range(4))
            return dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
    except (ProtocolError, ValueError):
        return None
    return None


def _signature_matches(value: HandleValue, hash_name: bytes, signature: bytes, data: bytes) -> bool:
    key = _public_key(value)
    algorithm = _HASHES.get(hash_name)
    if key is None or algorithm is None:
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm())
        else:
            key.verify(signature, data, algorithm())
    except (InvalidSignature, ValueError):
        return False
    return True
