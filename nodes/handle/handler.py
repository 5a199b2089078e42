"""Answering native Handle messages: one handler behind the TCP, UDP and HTTP doors.

A request is decoded (:mod:`resolver.codecs.handle_wire`), resolved through the node's own
chain (``node.resolve``: the same memory, Redis and store, or walk, as REST), and encoded.  An
answer that can be reused is kept as rendered bytes (body and credential) keyed by the handle
as sent and the filters; a hit is one dict lookup, a generation check and one ``struct.pack``
of the envelope and header with this request's fields (request id, session, version, flags,
expiration) patched in.  ``AUTH`` (authoritative) bypasses these bytes and every cache below.

Who may see what: resolution is anonymous here, so answers hold public values only, whether or
not ``PUBL`` is set.  Administration (opCodes 100 to 105, home and unhome 300 and 301,
answered after a challenge, 200 and 201; list homed 302) is :mod:`nodes.handle.admin`'s;
sessions (400, 401) :mod:`nodes.handle.sessions`'.

Response codes come from the core's error tree (every :class:`resolver.errors.HandleError`
carries its Handle code), sent through :func:`resolver.codecs.handle_wire.wire_code`, the one
table of what the protocol can carry; anything unexpected is logged and answered 2.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from nodes.handle.admin import ADMIN_OPS, Login, NativeAdmin, Reply
from nodes.handle.sessions import Sessions
from nodes.metrics import code_class, layer_of
from resolver import render
from resolver.answers import Answer, Outcome
from resolver.codecs import handle_wire as wire
from resolver.codecs.handle_data import encode_site, encode_value
from resolver.errors import (
    HandleError,
    InvalidHandle,
    OperationNotSupported,
    ProtocolError,
    UpstreamUnavailable,
)
from resolver.identifiers import Handle, prefix_handle

log = logging.getLogger(__name__)

EXPIRATION = 43200
"""Seconds a response stays valid for its client (the reference's default: twelve hours)."""

REPEAT_FOR = 600.0
"""Seconds a response is sent again for a repeated request: its expiration stays at least
``EXPIRATION - REPEAT_FOR`` seconds ahead."""

CacheKey = tuple[bytes, tuple[bytes, ...], tuple[int, ...], bool]
"""The handle as sent, the type and index filters, whether referrals are followed."""


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    generation: int
    key: str
    code: int
    tail: bytes
    body_length: int


def error_request(envelope: wire.Envelope) -> wire.Request:
    """A stand-in request to answer one that could not be decoded (opCode 0, as the
    reference answers then)."""
    return wire.Request(envelope, 0, 0, 0, 0, 0, b"")


class NativeHandler:
    """Answers whole native messages for one worker's ``node`` (a :class:`nodes.bootstrap.Node`).

    ``site`` is the node's site description (what get-site-info answers); with ``sign`` (the
    site's key) a request asking CERT gets a signed answer, without it an unsigned one."""

    def __init__(
        self,
        node: Any,
        site: dict[str, Any],
        clock: Callable[[], float] = time.time,
        sign: wire.Sign | None = None,
    ) -> None:
        self._node = node
        self._admin = NativeAdmin(node)
        self._sessions = Sessions(node.settings.data_dir / "sessions", throttle=node.throttle)
        self._sign = sign
        self._site_tail = wire.unsigned_tail(encode_site(site))
        self._site_length = len(self._site_tail) - 4
        self._cache: dict[CacheKey, _Entry] = {}
        self._repeats: dict[bytes, tuple[_Entry, bytes, float]] = {}
        self._max = max(1, node.settings.cache.max_entries)
        self._clock = clock
        self.hits = 0
        self.misses = 0
        self.layer = "none"
        """The layer that answered the resolution :meth:`respond` returned last (read at once
        by the caller: a coroutine's return reaches its awaiter with nothing in between)."""
        metrics = node.metrics
        self.counting = metrics.enabled
        self._requests = metrics.requests

    def count(self, door: str, response: bytes, layer: str) -> None:
        """Count ``response`` (a whole framed message) to a request on ``door``."""
        code = int.from_bytes(response[24:28], "big") if len(response) >= 28 else 2
        operation = "other" if layer == "site" else "resolve"
        self._requests[(door, operation, code_class(code), layer)] += 1

    # --- decoding ------------------------------------------------------------------------

    def decode(self, envelope: wire.Envelope, message: bytes) -> wire.Request | bytes:
        """The request in ``message``, or the error response that refuses it (code 4)."""
        try:
            if envelope.flags & (wire.ENV_COMPRESSED | wire.ENV_ENCRYPTED):
                raise ProtocolError("compressed or encrypted messages need a session")
            if envelope.major != 2 and envelope.major != 5:
                raise ProtocolError(f"protocol version {envelope.major}.{envelope.minor}")
            return wire.decode_request(envelope, message)
        except ProtocolError as error:
            return self.error(error_request(envelope), error.code, error.message)

    def decode_whole(self, data: bytes) -> wire.Request | bytes | None:
        """One whole message (envelope first, as TCP and HTTP carry it): the request, an error
        response, or None when not even an envelope is there (nothing to answer)."""
        try:
            envelope = wire.decode_envelope(data)
        except ProtocolError:
            return None
        if len(data) - wire.ENVELOPE_SIZE != envelope.message_length:
            return self.error(error_request(envelope), 4, "invalid message length")
        return self.decode(envelope, data[wire.ENVELOPE_SIZE :])

    # --- answering -----------------------------------------------------------------------

    def repeated(self, data: bytes) -> bytes | None:
        """The answer to a whole message (envelope first) whose bytes, but for the request id
        and the expiration, were answered from :meth:`cached` lately: that response with this
        request id.  No decoding at all: the hot path of clients asking the same again."""
        hit = self._repeats.get(data[:8] + data[12:36] + data[40:])
        if hit is None:
            return None
        entry, response, rendered = hit
        now = self._clock()
        if (
            entry.expires <= now
            or now - rendered > REPEAT_FOR
            or entry.generation != self._node.generations.current(entry.key)
        ):
            return None
        if not self._counted(entry.key, note=False):
            return None  # decoded, refused and noted by cached()
        self.hits += 1
        return response[:8] + data[8:12] + response[12:]

    def cached(self, request: wire.Request, data: bytes = b"") -> bytes | None:
        """The response from rendered bytes if this request may be answered so, else None.
        With ``data`` (the request's whole message) the response is also kept for
        :meth:`repeated`."""
        if request.op_code != wire.OC_RESOLUTION or request.op_flags & (
            wire.AUTH | wire.RRDG | wire.CERT
        ):
            return None
        entry = self._cache.get(
            (request.handle, request.types, request.indexes, bool(request.op_flags & wire.RECU))
        )
        if entry is None:
            return None
        now = self._clock()
        if entry.expires <= now or entry.generation != self._node.generations.current(entry.key):
            return None
        if not self._counted(entry.key):
            quota = self._node.quotas.refusal(entry.key)
            return self.error(request, quota.code, quota.message)
        self.hits += 1
        response = wire.frame_tail(
            request, entry.code, entry.tail, entry.body_length, expiration=int(now) + EXPIRATION
        )
        if data:
            repeats = self._repeats
            if len(repeats) >= self._max:
                del repeats[next(iter(repeats))]
            repeats[data[:8] + data[12:36] + data[40:]] = (entry, response, now)
        return response

    def _counted(self, key: str, *, note: bool = True) -> bool:
        """Count a resolution of ``key`` against the quotas: False if they refuse it."""
        quotas = self._node.quotas
        return quotas is None or quotas.admit(key, note=note)

    async def respond(
        self, request: wire.Request, login: Login | None = None, source: str | None = None
    ) -> bytes:
        """The response to ``request``; never raises.  ``login`` is the TCP connection's IDIS
        login state (None on UDP and HTTP, where opCode 2001 is not served), ``source`` the
        client's address (what failed authentications are counted against)."""
        self.layer = "none"
        try:
            if request.op_code == wire.OC_RESOLUTION:
                return await self._resolution(request)
            if request.op_code == wire.OC_GET_SITE_INFO:
                self.layer = "site"
                return self._frame(request, 1, self._site_tail, self._site_length)
            if request.op_code in ADMIN_OPS:
                identity = login.covers(request) if login is not None else None
                session = self._sessions.check(request) if identity is None else None
                if session is not None and session.authenticated:
                    identity = session.identity
                if identity is not None:
                    return self._reply(await self._admin.perform(request, identity))
                session_id = 0 if session is None else session.session_id
                return self._reply(self._admin.challenge(request, session_id))
            if request.op_code == wire.OC_RESPONSE_TO_CHALLENGE:
                if login is not None and login.answers(request):
                    return self._reply(await self._admin.login_answer(request, login, source))
                session = self._sessions.check(request)
                verified = (
                    None if session is None else partial(self._sessions.authenticate, session)
                )
                return self._reply(await self._admin.answer(request, source, verified))
            if request.op_code == wire.OC_LIST_HOMED_NAS:
                return self._reply((request, wire.RC_SUCCESS, await self._admin.homed()))
            if request.op_code == wire.OC_SESSION_SETUP:
                signs = self._sign is not None
                return self._reply(await self._sessions.setup(request, source, signs=signs))
            if request.op_code == wire.OC_SESSION_TERMINATE:
                return self._reply(self._sessions.terminate(request))
            if request.op_code == wire.OC_LOGIN_ID_SYSTEM and login is not None:
                return self._reply(self._admin.login_challenge(request, login))
            if request.op_code == wire.OC_VERIFY_CHALLENGE:
                return self._reply(await self._admin.verify_challenge(request, source))
            raise OperationNotSupported(f"opCode {request.op_code} is not supported here")
        except HandleError as error:
            return self.error(request, error.code, error.message)
        except Exception:
            log.exception("native request for %r failed", request.handle[:100])
            return self.error(request, wire.RC_ERROR, "internal error")

    async def answer(self, data: bytes, source: str | None = None) -> bytes | None:
        """The response to one whole message (TCP, HTTP) from ``source``, or None to drop it."""
        self.layer = "none"
        request = self.decode_whole(data)
        if not isinstance(request, wire.Request):
            return request
        hit = self.cached(request, data)
        if hit is not None:
            self.layer = "memory"
            return hit
        return await self.respond(request, source=source)

    def error(self, request: wire.Request, code: int, message: str) -> bytes:
        code = wire.wire_code(code, wire.response_version(request))
        return self._frame(request, code, wire.unsigned_tail(wire.error_body(message.encode())))

    def _reply(self, reply: Reply) -> bytes:
        request, code, body = reply
        return self._frame(request, code, wire.unsigned_tail(body))

    def _frame(
        self, request: wire.Request, code: int, tail: bytes, body_length: int | None = None
    ) -> bytes:
        expiration = int(self._clock()) + EXPIRATION
        if request.op_flags & wire.CERT and self._sign is not None:
            body = tail[: len(tail) - 4 if body_length is None else body_length]
            return wire.signed_frame(request, code, body, expiration=expiration, sign=self._sign)
        if request.op_flags & wire.RRDG:  # the digest goes first in the body
            body = tail[:-4] if body_length is None else tail[:body_length]
            return wire.frame(request, code, body, expiration=expiration)
        length = len(tail) - 4 if body_length is None else body_length
        return wire.frame_tail(request, code, tail, length, expiration=expiration)

    async def _resolution(self, request: wire.Request) -> bytes:
        try:
            text = request.handle.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidHandle("handle is not UTF-8") from None
        # The IDIS SDK asks its recursion server for a bare prefix (type HS_SITE): the prefix
        # record answers, under the name it was asked by.
        handle = Handle.parse(text if "/" in text else prefix_handle(text))
        node = self._node
        fresh = bool(request.op_flags & wire.AUTH)
        follow = bool(request.op_flags & wire.RECU)
        key = handle.key
        if node.quotas is not None:
            node.quotas.resolved(key)
        generation = node.generations.current(key)
        answer: Answer = await node.resolve(key, fresh)
        if answer.outcome.is_referral and follow and node.walker and not handle.is_prefix_record:
            # RECU (which stock clients always set) on a node allowing recursion: resolve for
            # the client.  A prefix record is the global service's own answer (clients follow
            # its referrals themselves), and a walk that finds no server leaves the referral.
            try:
                answer = await node.walker(key, fresh)
            except UpstreamUnavailable:
                follow = False  # what is cached below is the referral
        code, body = self._render(text, answer, request)
        self.layer = layer_of(answer.source)
        tail = wire.unsigned_tail(body)
        if not fresh and answer.expires > self._clock():
            self.misses += 1
            cache = self._cache
            if len(cache) >= self._max:
                del cache[next(iter(cache))]
            entry = _Entry(answer.expires, generation, key, code, tail, len(body))
            cache[(request.handle, request.types, request.indexes, follow)] = entry
        return self._frame(request, code, tail, len(body))

    def _render(self, text: str, answer: Answer, request: wire.Request) -> tuple[int, bytes]:
        """The response code and body answering ``answer`` to ``request``."""
        outcome = answer.outcome
        record = answer.record
        if outcome is Outcome.FOUND and record is not None:
            values = render.select(
                record.values,
                types=[t.decode("utf-8", "replace") for t in request.types],
                indexes=request.indexes,
            )
            if not values:
                return 200, wire.error_body(b"values not found")
            return 1, wire.values_body(text.encode(), [encode_value(v) for v in values])
        if outcome.is_referral and record is not None:
            encoded = [encode_value(v) for v in record.values]
            return int(outcome), wire.values_body(record.handle.encode(), encoded)
        if outcome is Outcome.NOT_FOUND:
            return 100, wire.error_body(b"handle not found")
        return 301, wire.error_body(b"prefix not homed here")
