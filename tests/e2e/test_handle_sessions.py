"""Native sessions through a real ``idis serve`` (PostgreSQL, two workers, a site key): the
reference client's own session setup bytes (``../shared/handle-wire/wire_captures``, read at
test time) get a setup response signed with the site's key; a Diffie-Hellman session of our
own client is authenticated once by a challenge and then carries administration by its MAC
alone, on new connections (either worker); replays, wrong MACs and ended sessions are refused
with the protocol's session codes.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh, padding, rsa
from nodeproc import start_node
from test_handle_admin import (
    ADMIN,
    PREFIX,
    VECTORS,
    Node,
    administer,
    request,
    secret_answer,
    url,
)

from loadtests import handle_client as hc
from nodes.processes import free_ports, node_env, run_cli
from resolver.codecs import handle_admin as admin
from resolver.codecs import handle_session as hs
from resolver.codecs import handle_wire as wire

HOST = "127.0.0.1"
TIMEOUT = 10.0
CAPTURE = VECTORS / "wire_captures" / "client_session_setup_request_tcp.bin"
SETUP_FLAGS = wire.CERT | wire.RECU | wire.CACR | wire.PUBL | wire.RRDG  # as the capture


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pg_factory: Callable[[], str]) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("native-sessions")
    key_file = workdir / "keys" / "site-key.pem"
    run_cli(
        {**node_env(workdir / "keygen", 1, name="keygen"), "IDIS_HANDLE_KEY_FILE": str(key_file)},
        "site",
        "keygen",
    )
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    # Two workers: the session's next connection may reach the other one.
    env = {"IDIS_HANDLE_KEY_FILE": str(key_file)}
    yield from _serve(workdir, pg_factory(), 2, env, private)


def _serve(
    workdir: Path, database_url: str, workers: int, env: dict[str, str], key: rsa.RSAPrivateKey
) -> Iterator[Node]:
    """A node homing :data:`PREFIX` with its native door on a free port, until closed;
    ``key`` is its site's key (the Node's ``key``)."""
    secret = f"adm-{uuid.uuid4().hex}"
    (port,) = free_ports(1)
    process = start_node(
        workdir / "node",
        database_url=database_url,
        prefix=PREFIX,
        secret=secret,
        workers=workers,
        extra_env={"IDIS_HANDLE": f"{HOST}:{port}", **env},
        startup_timeout=60.0,
    )
    try:
        yield Node(process, port, secret, key)
    finally:
        process.stop()


def _capture() -> bytes:
    if not CAPTURE.is_file():
        pytest.fail(f"wire capture missing: {CAPTURE}")
    return CAPTURE.read_bytes()


def _decoded(raw: bytes) -> wire.Request:
    envelope = wire.decode_envelope(raw)
    return wire.decode_request(envelope, raw[wire.ENVELOPE_SIZE :])


def _check_signed(node: Node, reply: hc.Reply, sent: bytes) -> hs.DHPublicKey:
    """The setup reply is signed by the site's key, digests what was sent, and carries the
    server's DH key: returned."""
    assert reply.code == wire.RC_SUCCESS, reply.message()
    assert reply.response.op_code == wire.OC_SESSION_SETUP
    assert reply.envelope.session_id > 0
    assert reply.response.digest == bytes([3]) + hashlib.sha256(sent[20:-4]).digest()
    hash_name, signature, data = wire.signature_parts(reply.response)
    assert hash_name == "SHA-256"
    node.key.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    reader = wire.Reader(reply.response.body, 0, len(reply.response.body))
    mode = struct.unpack(">H", reader.raw(2))[0]
    assert mode == hs.KEY_EXCHANGE_DH
    key_data = reader.blob()
    assert struct.unpack_from(">i", key_data)[0] == hs.ENCRYPT_ALG_AES
    return hs.decode_dh_public_key(key_data[4:])


@dataclass
class Session:
    session_id: int
    key: bytes
    counter: int = 0

    def sign(self, message: bytes) -> bytes:
        """``message`` (a request with an empty credential) in this session, MAC'd."""
        self.counter += 1
        unsigned = _with_session(message, self.session_id)
        credential = hs.mac_credential(_decoded(unsigned), self.key, self.counter)
        body = unsigned[wire.ENVELOPE_SIZE : -4] + struct.pack(">i", len(credential)) + credential
        return unsigned[:16] + struct.pack(">i", len(body)) + body


def _with_session(message: bytes, session_id: int) -> bytes:
    return message[:4] + struct.pack(">i", session_id) + message[8:]


def setup_session(node: Node, identity: str, index: int) -> Session:
    """A DH session (on the reference client's group, read from its capture) for ``identity``."""
    client_key = hs.decode_dh_public_key(hs.decode_session_setup(_decoded(_capture())).public_key)
    parameters = dh.DHParameterNumbers(client_key.p, client_key.g).parameters()
    private = parameters.generate_private_key()
    mine = hs.DHPublicKey(private.public_key().public_numbers().y, client_key.p, client_key.g)
    body = (
        struct.pack(">Hi", hs.KEY_EXCHANGE_DH, 600)
        + wire.string(identity.encode())
        + struct.pack(">i", index)
        + wire.string(hs.encode_dh_public_key(mine))
    )
    message = wire.encode_request(
        wire.OC_SESSION_SETUP, b"", body=body, request_id=77, flags=SETUP_FLAGS
    )
    reply = node.tcp(message)
    server = _check_signed(node, reply, message)
    peer = dh.DHPublicNumbers(server.y, dh.DHParameterNumbers(server.p, server.g)).public_key()
    return Session(reply.envelope.session_id, hs.session_key(private.exchange(peer)))


def _rest(node: Node, handle: str) -> int:
    url_ = f"{node.node.base_url}/api/handles/{handle}"
    return httpx.get(url_, timeout=TIMEOUT).status_code


# --- tests ---------------------------------------------------------------------------------


def test_the_reference_clients_setup_bytes_get_a_signed_dh_answer(node: Node) -> None:
    sent = _capture()
    setup = hs.decode_session_setup(_decoded(sent))
    # What the stock client sends by default: DH, 24 hours, anonymous, Oakley group 2.
    assert (setup.mode, setup.timeout, setup.identity) == (hs.KEY_EXCHANGE_DH, 86400, None)
    client = hs.decode_dh_public_key(setup.public_key)
    assert hs.encode_dh_public_key(client) == setup.public_key  # byte for byte
    server = _check_signed(node, node.tcp(sent), sent)
    assert (server.p, server.g) == (client.p, client.g) and server.y != client.y


def test_a_session_is_authenticated_once_then_its_mac_suffices(node: Node) -> None:
    session = setup_session(node, ADMIN.handle, ADMIN.index)
    send: Callable[[bytes], hc.Reply] = node.tcp
    first = f"{PREFIX}/SESS-{uuid.uuid4().hex[:8]}"
    # The first administration in the session is challenged under the session's own id.
    message = session.sign(request(wire.OC_CREATE_HANDLE, first, (url(1, "https://a.example"),)))
    reply = administer(send, message, secret_answer(node.secret, admin.MAC_HMAC_SHA256))
    assert reply.code == wire.RC_SUCCESS, reply.message()
    assert _rest(node, first) == 200
    # Later ones, on new connections, are done on the MAC alone: no challenge.
    handles = [f"{PREFIX}/SESS-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for handle in handles:
        signed = session.sign(
            request(wire.OC_CREATE_HANDLE, handle, (url(1, "https://b.example"),))
        )
        reply = node.tcp(signed)
        assert reply.code == wire.RC_SUCCESS, reply.message()
        assert reply.envelope.session_id == session.session_id
        assert _rest(node, handle) == 200
    # A replayed message is refused, not done twice.
    assert node.tcp(signed).code == wire.RC_SESSION_MESSAGE_REJECTED
    # A MAC by another key is refused.
    forged = Session(session.session_id, bytes(32), session.counter + 100)
    deleting = request(wire.OC_DELETE_HANDLE, first)
    assert node.tcp(forged.sign(deleting)).code == wire.RC_INVALID_SESSION_KEY
    assert _rest(node, first) == 200
    # The same request without any MAC: refused on an authenticated session.
    assert node.tcp(_with_session(deleting, session.session_id)).code == wire.RC_INVALID_CREDENTIAL
    # Ending the session (401, MAC'd); its id is then unknown (500: set up another).
    ending = wire.encode_request(wire.OC_SESSION_TERMINATE, b"", body=b"", request_id=91)
    assert node.tcp(session.sign(ending)).code == wire.RC_SUCCESS
    assert node.tcp(session.sign(deleting)).code == wire.RC_SESSION_TIMEOUT
    assert _rest(node, first) == 200


def test_an_anonymous_session_or_another_identity_authenticates_nothing(node: Node) -> None:
    for identity, index in (("", -1), (f"{PREFIX}/SOMEONE-ELSE", 300)):
        session = setup_session(node, identity, index)
        for _ in range(2):  # challenged every time
            handle = f"{PREFIX}/ANON-{uuid.uuid4().hex[:8]}"
            message = session.sign(request(wire.OC_CREATE_HANDLE, handle, (url(1, "https://c"),)))
            reply = administer(node.tcp, message, secret_answer(node.secret, admin.MAC_HMAC_SHA1))
            assert reply.code == wire.RC_SUCCESS, reply.message()


def test_unusable_setups_are_refused_in_protocol_terms(node: Node) -> None:
    def setup(body: bytes) -> hc.Reply:
        return node.tcp(
            wire.encode_request(
                wire.OC_SESSION_SETUP, b"", body=body, request_id=5, flags=SETUP_FLAGS
            )
        )

    # Server-cipher exchange (mode 2) is not served; a truncated body is a protocol error;
    # a DH key on a tiny group is refused.
    assert setup(struct.pack(">Hi", 2, 60) + wire.string(b"") + struct.pack(">i", -1)).code == 501
    assert setup(b"\x00\x04\x00").code == wire.RC_PROTOCOL_ERROR
    tiny = hs.encode_dh_public_key(hs.DHPublicKey(5, 23, 2))
    body = struct.pack(">Hi", 4, 60) + wire.string(b"") + struct.pack(">i", -1) + wire.string(tiny)
    assert setup(body).code == wire.RC_SESSION_FAILED
    # An MAC'd request naming a session that never was: 500, so the client sets one up.
    ghost = Session(12345, bytes(32))
    message = ghost.sign(request(wire.OC_DELETE_HANDLE, f"{PREFIX}/NOPE"))
    assert node.tcp(message).code == wire.RC_SESSION_TIMEOUT


# --- throttled failures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(
    tmp_path_factory: pytest.TempPathFactory, pg_factory: Callable[[], str]
) -> Iterator[Node]:
    """A node with small failure limits and one worker (without Redis each worker counts on
    its own: one worker makes the counts exact)."""
    workdir = tmp_path_factory.mktemp("native-throttle")
    limits = {
        "IDIS_THROTTLE__IDENTITY": "3/minute",
        "IDIS_THROTTLE__SOURCE": "6/minute",
        "IDIS_THROTTLE__SESSION_SOURCE": "2/minute",
    }
    unused = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    yield from _serve(workdir, pg_factory(), 1, limits, unused)


def test_failed_native_authentications_are_throttled_like_rest(tight: Node) -> None:
    def attempt(secret: str, who: str = ADMIN.handle) -> hc.Reply:
        handle = f"{PREFIX}/T-{uuid.uuid4().hex[:8]}"
        message = request(wire.OC_CREATE_HANDLE, handle, (url(1, "https://t.example"),))
        identity = type(ADMIN)(who, ADMIN.index)
        return administer(
            tight.tcp, message, secret_answer(secret, admin.MAC_HMAC_SHA256, identity)
        )

    # Per identity: three failures, then refused with code 3 (server too busy), even with the
    # right secret, before any key is checked.
    for _ in range(3):
        assert attempt("wrong").code == wire.RC_AUTHENTICATION_FAILED
    refused = attempt("wrong")
    assert refused.code == wire.RC_SERVER_TOO_BUSY and "too many" in refused.message()
    assert attempt(tight.secret).code == wire.RC_SERVER_TOO_BUSY
    # REST counts against the same identity: refused there too (429).
    auth = httpx.BasicAuth("300%3A" + ADMIN.handle, tight.secret)
    put = httpx.put(
        f"{tight.node.base_url}/api/handles/{PREFIX}/T-REST",
        json=[{"index": 1, "type": "URL", "data": "https://x.example"}],
        auth=auth,
        timeout=TIMEOUT,
    )
    assert put.status_code == 429
    # Per source: three more failures under other identities spend this address's six.
    for i in range(3):
        assert attempt("wrong", f"{PREFIX}/GUESS-{i}").code == wire.RC_AUTHENTICATION_FAILED
    assert attempt("wrong", f"{PREFIX}/GUESS-NEW").code == wire.RC_SERVER_TOO_BUSY


def test_session_setups_are_limited_per_source(tight: Node) -> None:
    # This node has no site key: setups are refused (501), but counted first.
    codes = [tight.tcp(_capture()).code for _ in range(3)]
    assert codes == [wire.RC_SESSION_FAILED, wire.RC_SESSION_FAILED, wire.RC_SERVER_TOO_BUSY]
