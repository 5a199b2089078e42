"""Native sessions (opCodes 400 and 401) as the stock Handle.Net admin tools use them.

A client sets up a session by Diffie-Hellman (mode 4, the only exchange served here; the
others answer 501), the response signed with the site's key by the handler (CERT), and sends
its later requests under the session id with an ``HS_MAC`` credential keyed by the session key
(:mod:`resolver.codecs.handle_session`).  An administration request in a session whose
identity has not proved itself yet is challenged under the session's own id; a successful
answer by the identity the session was set up for authenticates the session, and its later
requests are done as that identity without further challenges (the reference's rule: an
anonymous session, or an answer by another identity, authenticates nothing).

Sessions are files in the data directory, as pending challenges are (``SO_REUSEPORT`` may hand
a client's next connection to another worker), each with its expiry as its mtime; they are
bounded in count (:data:`MAX_SESSIONS`, else code 3) and in time (the client's timeout, at most
:data:`MAX_SESSION_SECONDS`).  Each holds the session key (the data directory is the node's
private state, mode 0700 here) and the last :data:`COUNTERS_KEPT` message counters, so that a
replayed message is refused (505).  Encrypted session messages (``ENCR``, envelope flag 0x40)
stay refused (code 4): the stock tools do not ask for them unless told to.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import dh

from nodes.throttle import Throttle
from resolver.codecs import handle_session as hs
from resolver.codecs import handle_wire as wire
from resolver.errors import (
    InvalidCredential,
    InvalidSessionKey,
    ProtocolError,
    ServerBusy,
    SessionFailed,
    SessionMessageRejected,
    SessionTimeout,
)
from resolver.values import Ref

MAX_SESSIONS = 10_000
MAX_SESSION_SECONDS = 86_400
"""The longest a session lives (the reference's default and cap)."""
COUNTERS_KEPT = 512
CHECK_EVERY = 64

Reply = tuple[wire.Request, int, bytes]


def sweep_files(directory: Path, cutoff: float) -> tuple[int, int]:
    """Remove the files of ``directory`` whose mtime is before ``cutoff``; how many are left
    and their bytes."""
    left = size = 0
    for path in directory.iterdir():
        try:
            stat = path.stat()
            if stat.st_mtime < cutoff:
                path.unlink()
            else:
                left += 1
                size += stat.st_size
        except OSError:
            continue
    return left, size


@dataclass(slots=True)
class Session:
    session_id: int
    key: bytes
    expires: float
    identity: Ref | None
    authenticated: bool = False
    counters: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        identity = None if self.identity is None else [self.identity.handle, self.identity.index]
        return json.dumps(
            {
                "key": self.key.hex(),
                "expires": self.expires,
                "identity": identity,
                "authenticated": self.authenticated,
                "counters": self.counters[-COUNTERS_KEPT:],
            }
        ).encode()

    @classmethod
    def decode(cls, session_id: int, raw: bytes) -> Session:
        data = json.loads(raw)
        who = data["identity"]
        identity = None if who is None else Ref(str(who[0]), int(who[1]))
        return cls(
            session_id,
            bytes.fromhex(data["key"]),
            float(data["expires"]),
            identity,
            bool(data["authenticated"]),
            [int(c) for c in data["counters"]],
        )


def _dh_exchange(client: hs.DHPublicKey) -> tuple[hs.DHPublicKey, bytes]:
    """The server's half of a DH exchange on the client's group: its public key and the
    shared secret.  :class:`ValueError` if the client's key is unusable."""
    parameters = dh.DHParameterNumbers(client.p, client.g).parameters()
    private = parameters.generate_private_key()
    peer = dh.DHPublicNumbers(client.y, dh.DHParameterNumbers(client.p, client.g)).public_key()
    shared = private.exchange(peer)
    y = private.public_key().public_numbers().y
    return hs.DHPublicKey(y, client.p, client.g), shared


class Sessions:
    """The node's sessions, one file each in ``directory`` (shared by its workers)."""

    def __init__(
        self,
        directory: Path,
        clock: Callable[[], float] = time.time,
        limit: int = MAX_SESSIONS,
        throttle: Throttle | None = None,
    ) -> None:
        self._dir, self._clock, self._limit, self._throttle = directory, clock, limit, throttle
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._opened = 0

    # --- the store -----------------------------------------------------------------------

    def get(self, session_id: int) -> Session | None:
        if session_id <= 0:
            return None
        try:
            raw = (self._dir / str(session_id)).read_bytes()
            session = Session.decode(session_id, raw)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        return session if session.expires > self._clock() else None

    def save(self, session: Session) -> None:
        path = self._dir / str(session.session_id)
        temporary = path.with_suffix(f".{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(session.encode())
        os.utime(temporary, (session.expires, session.expires))
        temporary.replace(path)

    def end(self, session_id: int) -> None:
        (self._dir / str(session_id)).unlink(missing_ok=True)

    # --- the protocol --------------------------------------------------------------------

    async def setup(
        self, request: wire.Request, source: str | None = None, *, signs: bool = True
    ) -> Reply:
        """opCode 400 from ``source``: a new session; the reply carries its id in the
        envelope.  Setups are counted per source (``session-source`` limits), before any work.
        ``signs`` False (the site has no key to sign the answer with) refuses them (501)."""
        if self._throttle is not None and source:
            await self._throttle.acquire([("session-source", source)], "session setups")
        if not signs:
            raise SessionFailed("this site has no key to sign a session setup with")
        self._opened += 1
        if self._opened % CHECK_EVERY == 1:
            left, _ = sweep_files(self._dir, self._clock())
            if left >= self._limit:
                raise ServerBusy("too many open sessions; retry later")
        setup = hs.decode_session_setup(request)
        if setup.mode != hs.KEY_EXCHANGE_DH:
            raise SessionFailed(f"key exchange mode {setup.mode} is not supported: use DH (4)")
        if (request.envelope.major, request.envelope.minor) < (2, 4):
            raise SessionFailed("DH sessions need protocol 2.4 or later")
        try:
            client = hs.decode_dh_public_key(setup.public_key)
            server, shared = await asyncio.to_thread(_dh_exchange, client)
        except (ProtocolError, ValueError):
            raise SessionFailed("unusable Diffie-Hellman public key") from None
        seconds = setup.timeout if 0 < setup.timeout < MAX_SESSION_SECONDS else MAX_SESSION_SECONDS
        session_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF or 1
        session = Session(
            session_id, hs.session_key(shared), self._clock() + seconds, setup.identity
        )
        self.save(session)
        envelope = replace(request.envelope, session_id=session_id)
        body = hs.session_setup_body(hs.KEY_EXCHANGE_DH, hs.dh_response_data(server))
        return replace(request, envelope=envelope), wire.RC_SUCCESS, body

    def terminate(self, request: wire.Request) -> Reply:
        """opCode 401: ends the request's session (its MAC checked first)."""
        session = self.check(request)
        if session is None:
            raise SessionTimeout("no such session (expired or ended)")
        if hs.decode_mac(request.signature) is None:
            raise InvalidSessionKey("ending a session needs its MAC")
        self.end(session.session_id)
        return request, wire.RC_SUCCESS, b""

    def check(self, request: wire.Request) -> Session | None:
        """The session ``request`` is sent in, its MAC and counter checked; None if it is in
        none (no session id, or one that names no session and no MAC: the IDIS SDK's own
        session ids, a challenge's).  Refusals: 500 for a MAC'd request naming no session,
        502 for a wrong MAC, 404 for a missing one on an authenticated session, 505 for a
        replayed counter."""
        session_id = request.envelope.session_id
        if session_id <= 0:
            return None
        mac = hs.decode_mac(request.signature)
        session = self.get(session_id)
        if session is None:
            if mac is not None:
                raise SessionTimeout("invalid session id or session timed out; set up another")
            return None
        if mac is None:
            if session.authenticated and request.op_code != wire.OC_RESPONSE_TO_CHALLENGE:
                raise InvalidCredential("session request missing its MAC")
            return session
        if not hs.mac_matches(request, mac, session.key):
            raise InvalidSessionKey("session authentication failed")
        if mac.counter in session.counters:
            raise SessionMessageRejected(f"session counter {mac.counter} seen before")
        session.counters.append(mac.counter)
        self.save(session)
        return session

    def authenticate(self, session: Session, who: Ref) -> None:
        """``who`` answered a challenge in ``session``: the session is authenticated if it was
        set up for that identity."""
        identity = session.identity
        if (
            identity is not None
            and identity.handle == who.handle
            and identity.index in (0, who.index)
        ):
            session.identity, session.authenticated = who, True
            self.save(session)
