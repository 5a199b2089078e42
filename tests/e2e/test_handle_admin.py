"""Native administration through a real ``idis serve`` (PostgreSQL, two workers): a challenge
(402) to every administration request, answered (opCode 200) with a secret key under each MAC
the reference client uses or with an RSA key, then the operation done by the Registrar, over
TCP and the HTTP door; checked against the reference's create-handle bytes
(``../shared/handle-wire/``, read at test time) and against REST.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from nodeproc import NodeProcess, start_node

from loadtests import handle_client as hc
from nodes.processes import free_ports
from resolver.codecs import handle_admin as admin
from resolver.codecs import handle_wire as wire
from resolver.values import DEFAULT_PERMISSIONS, AdminRef, Data, HandleValue, Ref

HOST = "127.0.0.1"
TIMEOUT = 10.0
PREFIX = "88.100.1"
ADMIN = Ref(f"{PREFIX}/ADMIN", 300)
RSA_ID = Ref(f"{PREFIX}/RSAKEY", 300)
VECTORS = Path("/work/shared/handle-wire")
for _parent in Path(__file__).resolve().parents:
    if (_parent / "shared" / "handle-wire").is_dir():
        VECTORS = _parent / "shared" / "handle-wire"
        break

_ids = itertools.count(1000)
Answer = Callable[[bytes, bytes], tuple[bytes, Ref, bytes]]
"""(nonce, digest) -> (key type, identity, signed response)."""


@dataclass
class Node:
    node: NodeProcess
    port: int
    secret: str
    key: rsa.RSAPrivateKey

    def tcp(self, request: bytes) -> hc.Reply:
        return hc.tcp(HOST, self.port, request, TIMEOUT)

    def http(self, request: bytes) -> hc.Reply:
        return hc.http(self.node.base_url, "", request, TIMEOUT)

    def rest(self, handle: str) -> httpx.Response:
        return httpx.get(f"{self.node.base_url}/api/handles/{handle}", timeout=TIMEOUT)


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pg_factory: Callable[[], str]) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("native-admin")
    secret = f"adm-{uuid.uuid4().hex}"
    (port,) = free_ports(1)
    process = start_node(
        workdir / "node",
        database_url=pg_factory(),
        prefix=PREFIX,
        secret=secret,
        workers=2,  # a challenge answered on a new connection may reach the other worker
        extra_env={"IDIS_HANDLE": f"{HOST}:{port}"},
        startup_timeout=60.0,
    )
    try:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = key.public_key().public_numbers()
        auth = httpx.BasicAuth("300%3A" + ADMIN.handle, secret)
        # An identity holding an RSA key, administering one handle of its own.
        values = [
            {
                "index": 300,
                "type": "HS_PUBKEY",
                "data": {
                    "format": "key",
                    "value": {"kty": "RSA", "n": _b64(numbers.n), "e": _b64(numbers.e)},
                },
            }
        ]
        for handle, body in ((RSA_ID.handle, values), (f"{PREFIX}/RSA-OWNED", _owned())):
            response = httpx.put(
                f"{process.base_url}/api/handles/{handle}", json=body, auth=auth, timeout=TIMEOUT
            )
            assert response.status_code in (200, 201), response.text
        yield Node(process, port, secret, key)
    finally:
        process.stop()


def _owned() -> list[dict[str, object]]:
    return [
        {"index": 1, "type": "URL", "data": "https://example.org/owned"},
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"handle": RSA_ID.handle, "index": 300, "permissions": "011111111111"},
            },
        },
    ]


def request(
    op: int,
    handle: str,
    values: tuple[HandleValue, ...] = (),
    indexes: list[int] | None = None,
    flags: int = wire.RECU | wire.CACR | wire.PUBL,
) -> bytes:
    body = admin.admin_request_body(handle.encode(), values, indexes)
    return wire.encode_request(
        op, b"", body=body, request_id=next(_ids), flags=flags, expiration=int(time.time()) + 600
    )


def url(index: int, target: str) -> HandleValue:
    return HandleValue(index, "URL", Data("string", target), permissions=DEFAULT_PERMISSIONS)


def secret_answer(secret: str, algorithm: int, identity: Ref = ADMIN) -> Answer:
    def answer(nonce: bytes, digest: bytes) -> tuple[bytes, Ref, bytes]:
        signed = admin.secret_answer(
            algorithm, nonce, digest, secret.encode(), salt=os.urandom(16), iterations=1000
        )
        return admin.SECRET_KEY_TYPE, identity, signed

    return answer


def rsa_answer(key: rsa.RSAPrivateKey, identity: Ref = RSA_ID) -> Answer:
    def answer(nonce: bytes, digest: bytes) -> tuple[bytes, Ref, bytes]:
        signature = key.sign(nonce + digest, padding.PKCS1v15(), hashes.SHA256())
        return admin.PUBLIC_KEY_TYPE, identity, admin.public_key_answer(b"SHA-256", signature)

    return answer


def administer(
    send: Callable[[bytes], hc.Reply], message: bytes, answer: Answer, request_id: int | None = None
) -> hc.Reply:
    """Send ``message``, check the challenge it gets, answer it: the final reply."""
    challenge = send(message)
    assert challenge.code == wire.RC_AUTHENTICATION_NEEDED, challenge.message()
    assert challenge.response.op_code == struct.unpack_from(">i", message, wire.ENVELOPE_SIZE)[0]
    # The digest is of the request's header and body as sent (SHA-256 from 2.7).
    envelope = wire.decode_envelope(message)
    signed_part = wire.decode_request(envelope, message[wire.ENVELOPE_SIZE :]).signed_part
    assert (
        challenge.response.digest
        == bytes([wire.HASH_SHA256]) + hashlib.sha256(signed_part).digest()
    )
    reader = wire.Reader(challenge.response.body, 0, len(challenge.response.body))
    nonce = reader.blob()
    assert len(nonce) == admin.NONCE_SIZE and challenge.envelope.session_id > 0
    key_type, identity, signed = answer(nonce, challenge.response.digest[1:])
    body = admin.challenge_answer_body(admin.ChallengeAnswer(key_type, identity, signed))
    reply_id = next(_ids) if request_id is None else request_id
    return send(
        wire.encode_request(
            wire.OC_RESPONSE_TO_CHALLENGE,
            b"",
            body=body,
            request_id=reply_id,
            session_id=challenge.envelope.session_id,
            flags=wire.RECU | wire.CACR | wire.PUBL,
        )
    )


def values_of(node: Node, handle: str) -> dict[int, object]:
    response = node.rest(handle)
    assert response.status_code == 200, response.text
    return {v["index"]: v["data"]["value"] for v in response.json()["values"]}


# --- tests ---------------------------------------------------------------------------------


def test_the_reference_create_request_gets_the_reference_answer(node: Node) -> None:
    message = (VECTORS / "create_handle_request.bin").read_bytes()
    expected = (VECTORS / "create_handle_response.bin").read_bytes()
    request_id = wire.decode_envelope(message).request_id
    reply = administer(
        node.tcp, message, secret_answer(node.secret, admin.MAC_PBKDF2_HMAC_SHA1), request_id
    )
    assert reply.code == 1, reply.message()
    live = bytearray(expected)
    live[36:40] = reply.raw[36:40]  # the expiration a live server sets
    assert reply.raw == bytes(live)
    assert values_of(node, f"{PREFIX}/ABC123")[1] == "https://example.org/abc123"


@pytest.mark.parametrize(
    "algorithm",
    [admin.MAC_PBKDF2_HMAC_SHA1, admin.MAC_HMAC_SHA1, admin.MAC_SHA1, admin.MAC_MD5],
    ids=["pbkdf2", "hmac-sha1", "sha1", "md5"],
)
def test_every_operation_with_a_secret_key(node: Node, algorithm: int) -> None:
    handle = f"{PREFIX}/op-{algorithm}-{uuid.uuid4().hex[:8]}"
    answer = secret_answer(node.secret, algorithm)
    for send in (node.tcp, node.http):
        name = f"{handle}-{'tcp' if send == node.tcp else 'http'}"
        created = administer(
            send, request(wire.OC_CREATE_HANDLE, name, (url(1, "https://a"),)), answer
        )
        assert created.code == 1, created.message()
        assert created.response.body == wire.string(name.encode())
        again = administer(
            send, request(wire.OC_CREATE_HANDLE, name, (url(1, "https://a"),)), answer
        )
        assert again.code == wire.RC_HANDLE_ALREADY_EXISTS
        added = administer(send, request(wire.OC_ADD_VALUE, name, (url(2, "https://b"),)), answer)
        assert added.code == 1, added.message()
        clash = administer(send, request(wire.OC_ADD_VALUE, name, (url(2, "https://c"),)), answer)
        assert clash.code == wire.RC_VALUE_ALREADY_EXISTS
        modified = administer(
            send, request(wire.OC_MODIFY_VALUE, name, (url(2, "https://m"),)), answer
        )
        assert modified.code == 1, modified.message()
        assert values_of(node, name)[2] == "https://m"
        absent = administer(
            send, request(wire.OC_MODIFY_VALUE, name, (url(7, "https://x"),)), answer
        )
        assert absent.code == wire.RC_VALUES_NOT_FOUND
        removed = administer(send, request(wire.OC_REMOVE_VALUE, name, indexes=[2]), answer)
        assert removed.code == 1, removed.message()
        assert 2 not in values_of(node, name)
        deleted = administer(send, request(wire.OC_DELETE_HANDLE, name), answer)
        assert deleted.code == 1, deleted.message()
        assert node.rest(name).status_code == 404
        gone = administer(send, request(wire.OC_DELETE_HANDLE, name), answer)
        assert gone.code == wire.RC_HANDLE_NOT_FOUND


def test_overwrite_and_mint_flags(node: Node) -> None:
    answer = secret_answer(node.secret, admin.MAC_HMAC_SHA1)
    name = f"{PREFIX}/ovrw-{uuid.uuid4().hex[:8]}"
    flags = wire.RECU | wire.CACR | wire.PUBL
    assert administer(node.tcp, request(100, name, (url(1, "https://one"),)), answer).code == 1
    replaced = administer(
        node.tcp, request(100, name, (url(3, "https://three"),), flags=flags | wire.OVRW), answer
    )
    assert replaced.code == 1, replaced.message()
    assert values_of(node, name)[3] == "https://three" and 1 not in values_of(node, name)
    minted = administer(
        node.tcp,
        request(100, f"{PREFIX}/", (url(1, "https://m"),), flags=flags | wire.MINT),
        answer,
    )
    assert minted.code == 1, minted.message()
    reader = wire.Reader(minted.response.body, 0, len(minted.response.body))
    handle = reader.blob().decode()
    assert handle.startswith(f"{PREFIX}/") and len(handle) > len(PREFIX) + 30
    assert values_of(node, handle)[1] == "https://m"


def test_list_handles(node: Node) -> None:
    answer = secret_answer(node.secret, admin.MAC_PBKDF2_HMAC_SHA1)
    name = f"{PREFIX}/listed-{uuid.uuid4().hex[:8]}"
    assert administer(node.tcp, request(100, name, (url(1, "https://l"),)), answer).code == 1
    listed = administer(node.tcp, request(wire.OC_LIST_HANDLES, f"0.NA/{PREFIX}"), answer)
    assert listed.code == 1, listed.message()
    reader = wire.Reader(listed.response.body, 0, len(listed.response.body))
    handles = {reader.blob().decode() for _ in range(reader.count(10**6))}
    assert name in handles and ADMIN.handle in handles


def test_an_rsa_key_administers_what_it_has_rights_on_and_nothing_else(node: Node) -> None:
    answer = rsa_answer(node.key)
    owned = f"{PREFIX}/RSA-OWNED"
    added = administer(
        node.tcp, request(wire.OC_ADD_VALUE, owned, (url(5, "https://rsa"),)), answer
    )
    assert added.code == 1, added.message()
    assert values_of(node, owned)[5] == "https://rsa"
    # No right to create handles under the prefix: 401, nothing created.
    name = f"{PREFIX}/rsa-{uuid.uuid4().hex[:8]}"
    refused = administer(node.tcp, request(100, name, (url(1, "https://x"),)), answer)
    assert refused.code == wire.RC_INSUFFICIENT_PERMISSIONS
    assert node.rest(name).status_code == 404
    # Another key does not verify.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = administer(
        node.tcp, request(wire.OC_ADD_VALUE, owned, (url(6, "https://f"),)), rsa_answer(other)
    )
    assert forged.code == wire.RC_AUTHENTICATION_FAILED
    assert 6 not in values_of(node, owned)


def test_refusals_in_protocol_terms(node: Node) -> None:
    name = f"{PREFIX}/refused-{uuid.uuid4().hex[:8]}"
    wrong = administer(
        node.tcp,
        request(100, name, (url(1, "https://w"),)),
        secret_answer("wrong", admin.MAC_HMAC_SHA1),
    )
    assert wrong.code == wire.RC_AUTHENTICATION_FAILED
    assert node.rest(name).status_code == 404
    # An answer to no pending challenge (or one answered already): 405.
    body = admin.challenge_answer_body(admin.ChallengeAnswer(admin.SECRET_KEY_TYPE, ADMIN, b"\x12"))
    stale = node.tcp(wire.encode_request(200, b"", body=body, request_id=7, session_id=12345))
    assert stale.code == wire.RC_AUTHEN_TIMEOUT
    # Invalid values are refused before any challenge: HS_ADMIN data that is not one.
    bad = HandleValue(100, "HS_ADMIN", Data("string", "x"))
    invalid = node.tcp(request(100, name, (bad,)))
    assert invalid.code == wire.RC_INVALID_VALUE
    duplicate = node.tcp(request(100, name, (url(1, "a"), url(1, "b"))))
    assert duplicate.code == wire.RC_INVALID_VALUE
    # A MAC algorithm the protocol does not name verifies nothing.
    unknown = administer(
        node.tcp,
        request(100, name, (url(1, "https://w"),)),
        lambda nonce, digest: (admin.SECRET_KEY_TYPE, ADMIN, b"\x7f" + bytes(20)),
    )
    assert unknown.code == wire.RC_AUTHENTICATION_FAILED
    # A body that ends inside a value is a protocol error, answered before any challenge.
    broken = bytearray(request(wire.OC_ADD_VALUE, name, (url(1, "https://w"),)))
    struct.pack_into(">i", broken, wire.ENVELOPE_SIZE + 20, 12)  # body length: 12 bytes
    assert node.tcp(bytes(broken)).code == wire.RC_PROTOCOL_ERROR


def test_verify_challenge_answers_for_identities_living_here(node: Node) -> None:
    nonce, digest = os.urandom(16), hashlib.sha256(b"request").digest()
    for secret, expected in ((node.secret, b"\x01"), ("wrong", b"\x00")):
        signed = admin.secret_answer(admin.MAC_HMAC_SHA1, nonce, digest, secret.encode())
        body = (
            wire.string(ADMIN.handle.encode())
            + struct.pack(">i", ADMIN.index)
            + wire.string(nonce)
            + wire.string(digest)
            + wire.string(signed)
        )
        reply = node.tcp(
            wire.encode_request(wire.OC_VERIFY_CHALLENGE, b"", body=body, request_id=9)
        )
        assert reply.code == 1 and reply.response.body == expected


def test_a_secret_written_natively_is_sealed_and_opens_both_doors(node: Node) -> None:
    """The identity's secret, sent in a create (100), is stored encrypted (not in the
    database's bytes), then proves the identity by challenge-response and by HTTP Basic."""
    answer = secret_answer(node.secret, admin.MAC_HMAC_SHA1)
    identity = Ref(f"{PREFIX}/ID-{uuid.uuid4().hex[:8]}", 300)
    secret = f"native-{uuid.uuid4().hex}"
    seckey = HandleValue(300, "HS_SECKEY", Data("string", secret), permissions=0b1100)
    assert administer(node.tcp, request(100, identity.handle, (seckey,)), answer).code == 1
    owned = f"{PREFIX}/by-{identity.handle.split('/')[1]}"
    rights = HandleValue(
        100, "HS_ADMIN", Data("admin", AdminRef(identity.handle, identity.index, 0x0FFF))
    )
    assert (
        administer(node.tcp, request(100, owned, (url(1, "https://o"), rights)), answer).code == 1
    )
    stored = asyncio.run(_stored(node.node.env["IDIS_DATABASE_URL"], identity.handle))
    assert stored and secret.encode() not in stored and b"aesgcm$" in stored
    # The new identity, by challenge-response (PBKDF2), then by Basic on REST.
    mine = secret_answer(secret, admin.MAC_PBKDF2_HMAC_SHA1, identity)
    added = administer(node.http, request(wire.OC_ADD_VALUE, owned, (url(2, "https://n"),)), mine)
    assert added.code == 1, added.message()
    auth = httpx.BasicAuth(f"300%3A{identity.handle}", secret)
    response = httpx.put(
        f"{node.node.base_url}/api/handles/{owned}?index=3",
        json=[{"index": 3, "type": "URL", "data": "https://rest"}],
        auth=auth,
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert values_of(node, owned)[2] == "https://n" and values_of(node, owned)[3] == "https://rest"


async def _stored(url: str, handle: str) -> bytes:
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow("SELECT data FROM handles WHERE key = $1", handle.upper())
    finally:
        await connection.close()
    return bytes(row["data"]) if row else b""


def _sdk_dump(title: str) -> bytes:
    """The bytes of one request in the IDIS SDK's wire dump (``idis-sdk/wire-dump.txt``)."""
    path = VECTORS / "idis-sdk" / "wire-dump.txt"
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {title}"))
    parts = []
    for line in lines[start + 1 :]:
        if line.startswith("##") or not line.strip():
            break
        parts.append(bytes.fromhex(line.split()[1]))
    return b"".join(parts)


def test_the_idis_sdk_logs_in_once_per_connection(node: Node) -> None:
    """The SDK's login (site info, 2001, 200 on its own session id) as its bytes are, then a
    create carrying only the session id; the login binds that connection only."""
    suffix = f"S{uuid.uuid4().hex[:5].upper()}"
    create = _sdk_dump("create handle after login").replace(b"ABC123", suffix.encode())
    login = _sdk_dump("login step 2")
    assert login[-4:] == b"\x00\x00\x01\x2c"  # no credential field after the index
    with socket.create_connection((HOST, node.port), timeout=TIMEOUT) as sock:
        sock.sendall(_sdk_dump("login step 1"))
        assert hc.read_tcp(sock).code == 1
        sock.sendall(login)
        challenge = hc.read_tcp(sock)
        assert challenge.code == wire.RC_AUTHENTICATION_NEEDED
        assert challenge.response.op_code == wire.OC_LOGIN_ID_SYSTEM
        signed_part = login[wire.ENVELOPE_SIZE :]
        assert challenge.response.digest == b"\x03" + hashlib.sha256(signed_part).digest()
        nonce = wire.Reader(challenge.response.body, 0, len(challenge.response.body)).blob()
        session_id = wire.decode_envelope(login).session_id
        assert session_id == 10001

        def answer(secret: str) -> bytes:
            signed = admin.secret_answer(
                admin.MAC_HMAC_SHA1, nonce, challenge.response.digest[1:], secret.encode()
            )
            body = admin.challenge_answer_body(
                admin.ChallengeAnswer(admin.SECRET_KEY_TYPE, ADMIN, signed)
            )
            return wire.encode_request(
                200,
                b"",
                body=body,
                request_id=5,
                session_id=session_id,
                flags=0x10800000,
                version=(2, 10),
            )

        sock.sendall(answer(node.secret))
        logged_in = hc.read_tcp(sock)
        assert (logged_in.code, logged_in.response.op_code) == (1, wire.OC_LOGIN_ID_SYSTEM)
        sock.sendall(create)
        created = hc.read_tcp(sock)
        assert created.code == 1, created.message()
        assert values_of(node, f"{PREFIX}/{suffix}")[1] == f"https://example.org/{suffix}"
        # Another session id on the same connection is not logged in.
        other = bytearray(create)
        struct.pack_into(">i", other, 4, session_id + 1)
        sock.sendall(bytes(other))
        assert hc.read_tcp(sock).code == wire.RC_AUTHENTICATION_NEEDED
    # Nor is the same session id on another connection; a wrong secret logs nobody in.
    with socket.create_connection((HOST, node.port), timeout=TIMEOUT) as sock:
        sock.sendall(create)
        assert hc.read_tcp(sock).code == wire.RC_AUTHENTICATION_NEEDED
        sock.sendall(login)
        challenge = hc.read_tcp(sock)
        nonce = wire.Reader(challenge.response.body, 0, len(challenge.response.body)).blob()
        sock.sendall(answer("wrong"))
        refused = hc.read_tcp(sock)
        assert (refused.code, refused.response.op_code) == (403, wire.OC_LOGIN_ID_SYSTEM)
        sock.sendall(create)
        assert hc.read_tcp(sock).code == wire.RC_AUTHENTICATION_NEEDED


def _homed(node: Node) -> list[str]:
    reply = node.tcp(wire.encode_request(wire.OC_LIST_HOMED_NAS, b"/", request_id=next(_ids)))
    assert reply.code == wire.RC_SUCCESS, reply.message()
    reader = wire.Reader(reply.response.body, 0, len(reply.response.body))
    return [reader.blob().decode() for _ in range(reader.count())]


def test_home_unhome_and_list_homed_prefixes(node: Node) -> None:
    na = f"0.NA/{PREFIX}"
    assert _homed(node) == [na]  # 302, anonymous as REST's /api/prefixes
    # Only the prefix's own administrator may unhome it (an identity without rights: 401).
    refused = administer(node.tcp, request(wire.OC_UNHOME_NA, na), rsa_answer(node.key))
    assert refused.code == wire.RC_INSUFFICIENT_PERMISSIONS, refused.message()
    missing = administer(
        node.tcp,
        request(wire.OC_HOME_NA, "0.NA/99.NOT.HERE"),
        secret_answer(node.secret, admin.MAC_HMAC_SHA256),
    )
    assert missing.code == wire.RC_HANDLE_NOT_FOUND, missing.message()
    answer = secret_answer(node.secret, admin.MAC_HMAC_SHA256)
    try:
        reply = administer(node.http, request(wire.OC_UNHOME_NA, na), answer)
        assert reply.code == wire.RC_SUCCESS, reply.message()
        assert _homed(node) == []
        prefixes = httpx.get(f"{node.node.base_url}/api/prefixes", timeout=TIMEOUT).json()
        assert prefixes["prefixes"] == []
        # Unhoming again changes nothing and is no error (idempotent, as REST writes are).
        assert administer(node.tcp, request(wire.OC_UNHOME_NA, na), answer).code == 1
    finally:
        for _ in range(2):  # home it back, twice: the second is a no-op
            reply = administer(node.tcp, request(wire.OC_HOME_NA, PREFIX), answer)
            assert reply.code == wire.RC_SUCCESS, reply.message()
    assert _homed(node) == [na]
    assert httpx.get(f"{node.node.base_url}/api/prefixes", timeout=TIMEOUT).json()["prefixes"] == [
        PREFIX
    ]
