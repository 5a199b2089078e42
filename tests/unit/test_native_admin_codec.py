"""Native administration's codec and challenge bookkeeping: MACs as Handle.Net computes them,
value data from the wire, pending challenges bounded in count and age and shared by workers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from nodes.handle.admin import Challenges, NativeAdmin, _is_sm2, _signature_matches
from registry.secrets import legacy_hash, seal_secret
from resolver.codecs import handle_admin as admin
from resolver.codecs import handle_wire as wire
from resolver.codecs.handle_data import encode_data
from resolver.errors import AuthenticationFailed, InvalidValue, ServerBusy
from resolver.identifiers import Handle
from resolver.values import AdminRef, Data, HandleValue, Record, Ref

NONCE = bytes(range(16))
DIGEST = hashlib.sha256(b"the request").digest()
SECRET = "pässwörd".encode()


def _params(salt: bytes, iterations: int, bits: int = 160) -> bytes:
    return wire.string(salt) + struct.pack(">ii", iterations, bits)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (admin.MAC_MD5, hashlib.md5(SECRET + NONCE + DIGEST + SECRET).digest()),
        (admin.MAC_SHA1, hashlib.sha1(SECRET + NONCE + DIGEST + SECRET).digest()),
        (admin.MAC_SHA256, hashlib.sha256(SECRET + NONCE + DIGEST + SECRET).digest()),
        (admin.MAC_HMAC_SHA1, hmac.new(SECRET, NONCE + DIGEST, hashlib.sha1).digest()),
        (admin.MAC_HMAC_SHA256, hmac.new(SECRET, NONCE + DIGEST, hashlib.sha256).digest()),
    ],
)
def test_secret_key_macs_as_the_reference_computes_them(algorithm: int, expected: bytes) -> None:
    signed = bytes([algorithm]) + expected
    assert admin.secret_answer(algorithm, NONCE, DIGEST, SECRET) == signed
    assert admin.secret_answer_matches(signed, NONCE, DIGEST, SECRET, (2, 11))
    assert not admin.secret_answer_matches(signed, NONCE, DIGEST, b"other", (2, 11))
    assert not admin.secret_answer_matches(signed[:-1] + b"\x00", NONCE, DIGEST, SECRET, (2, 11))


def test_pbkdf2_takes_the_clients_salt_and_the_keys_bytes_as_java_chars() -> None:
    salt = b"0123456789abcdef"
    # Java widens each byte to a char, then PBKDF2WithHmacSHA1 encodes the chars as UTF-8.
    password = SECRET.decode("latin-1").encode("utf-8")
    derived = hashlib.pbkdf2_hmac("sha1", password, salt, 1000, 20)
    mac = hmac.new(derived, NONCE + DIGEST, hashlib.sha1).digest()
    signed = bytes([admin.MAC_PBKDF2_HMAC_SHA1]) + _params(salt, 1000) + wire.string(mac)
    assert (
        admin.secret_answer(
            admin.MAC_PBKDF2_HMAC_SHA1, NONCE, DIGEST, SECRET, salt=salt, iterations=1000
        )
        == signed
    )
    assert admin.secret_answer_matches(signed, NONCE, DIGEST, SECRET, (2, 11))
    assert not admin.secret_answer_matches(signed, NONCE, DIGEST, b"x", (2, 11))


def test_pbkdf2_work_is_bounded_and_malformed_answers_are_false() -> None:
    too_many = _params(b"s", admin.MAX_PBKDF2_ITERATIONS + 1) + wire.string(bytes(20))
    assert not admin.secret_answer_matches(b"\x22" + too_many, NONCE, DIGEST, SECRET, (2, 11))
    assert not admin.secret_answer_matches(b"\x22\x00", NONCE, DIGEST, SECRET, (2, 11))
    assert not admin.secret_answer_matches(b"", NONCE, DIGEST, SECRET, (2, 11))
    assert not admin.secret_answer_matches(b"\x7f" + bytes(20), NONCE, DIGEST, SECRET, (2, 11))


def test_before_2_1_the_answer_is_a_bare_md5() -> None:
    bare = hashlib.md5(SECRET + NONCE + DIGEST + SECRET).digest()
    assert admin.secret_answer(admin.MAC_MD5_OLD, NONCE, DIGEST, SECRET) == bare
    assert admin.secret_answer_matches(bare, NONCE, DIGEST, SECRET, (2, 0))


def test_value_data_from_the_wire() -> None:
    ref = AdminRef("0.NA/88.100.1", 200, 0x0FFF)
    assert admin.wire_data("HS_ADMIN", encode_data(Data("admin", ref))) == Data("admin", ref)
    refs = (Ref("88.100.1/A", 300), Ref("88.100.1/B", 301))
    assert admin.wire_data("HS_VLIST", encode_data(Data("vlist", refs))) == Data("vlist", refs)
    assert admin.wire_data("URL", b"https://x") == Data("string", "https://x")
    assert admin.wire_data("BLOB", b"\xff\x00") == Data("base64", "/wA=")
    with pytest.raises(InvalidValue):
        admin.wire_data("HS_ADMIN", b"\x00")
    # A secret must be text (it is stored sealed); keys other than RSA keep their bytes.
    assert admin.wire_data("HS_SECKEY", b"s3cret") == Data("string", "s3cret")
    with pytest.raises(InvalidValue):
        admin.wire_data("HS_SECKEY", b"\xff")
    assert admin.wire_data("HS_PUBKEY", b"DSA") == Data("base64", "RFNB")


def _request(request_id: int = 1) -> wire.Request:
    value = HandleValue(1, "URL", Data("string", "https://x"))
    body = admin.admin_request_body(b"88.100.1/X", (value,))
    raw = wire.encode_request(100, b"", body=body, request_id=request_id)
    envelope = wire.decode_envelope(raw)
    return wire.decode_request(envelope, raw[wire.ENVELOPE_SIZE :])


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_challenge_is_taken_once_by_any_worker(tmp_path: Path) -> None:
    one, other = Challenges(tmp_path), Challenges(tmp_path)
    session_id, pending = one.open(_request(7))
    taken = other.take(session_id)
    assert taken is not None and taken.nonce == pending.nonce and taken.digest == pending.digest
    assert taken.request.envelope.request_id == 7 and taken.request.body == _request().body
    assert one.take(session_id) is None and other.take(session_id) is None
    assert other.take(0) is None and other.take(123) is None


def test_challenges_expire_and_are_bounded(tmp_path: Path) -> None:
    clock = Clock()
    challenges = Challenges(tmp_path, clock=clock, ttl=60.0, limit=3)
    session_id, _ = challenges.open(_request())
    clock.now += 61
    assert challenges.take(session_id) is None
    for _ in range(2):
        challenges.open(_request())
    # The limit is checked every 64 opens (a directory scan): reach the next check full.
    with pytest.raises(ServerBusy):
        for _ in range(200):
            challenges.open(_request())
    count, size = challenges.sweep()
    assert 3 <= count <= 3 + 64 and size > count * 100


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_rsa_and_dsa_signatures_verify_against_hs_pubkey_values() -> None:
    data = NONCE + DIGEST
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = rsa_key.public_key().public_numbers()
    rsa_value = HandleValue(
        300, "HS_PUBKEY", Data("key", {"kty": "RSA", "n": _b64(n.n), "e": _b64(n.e)})
    )
    signature = rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    assert _signature_matches(rsa_value, b"SHA-256", signature, data)
    assert not _signature_matches(rsa_value, b"SHA1", signature, data)
    assert not _signature_matches(rsa_value, b"SHA-256", signature, data + b"x")
    dsa_key = dsa.generate_private_key(key_size=2048)
    numbers = dsa_key.public_key().public_numbers()
    params = numbers.parameter_numbers
    jwk = {"kty": "DSA", "y": _b64(numbers.y), "p": _b64(params.p), "q": _b64(params.q)}
    dsa_value = HandleValue(301, "HS_PUBKEY", Data("key", {**jwk, "g": _b64(params.g)}))
    # As the protocol's bytes too (what a native write stores when the JSON form is unknown).
    raw = encode_data(dsa_value.data)
    as_bytes = HandleValue(301, "HS_PUBKEY", Data("base64", base64.b64encode(raw).decode()))
    dsa_signature = dsa_key.sign(data, hashes.SHA256())
    assert _signature_matches(dsa_value, b"SHA-256", dsa_signature, data)
    assert _signature_matches(as_bytes, b"\x03", dsa_signature, data)
    assert not _signature_matches(dsa_value, b"SHA-256", signature, data)


def test_sm2_keys_are_recognised_to_be_refused_clearly() -> None:
    sm2 = HandleValue(300, "HS_PUBKEY", Data("key", {"kty": "EC", "crv": "SM2", "x": "AA"}))
    assert _is_sm2(sm2) and not _signature_matches(sm2, b"SHA-256", b"sig", b"data")
    raw = wire.string(b"SM2_PUB_KEY") + bytes(70)
    as_bytes = HandleValue(300, "HS_PUBKEY", Data("base64", base64.b64encode(raw).decode()))
    assert _is_sm2(as_bytes)
    url = HandleValue(1, "URL", Data("string", "https://example.org"))
    assert not _is_sm2(url)


class _Node:
    def __init__(self, record: Record, data_dir: Path) -> None:
        self.record = record
        self.settings = type("S", (), {"data_dir": data_dir})()

    async def fetch(self, key: str) -> Record | None:
        return self.record if key == Handle.parse(self.record.handle).key else None


async def test_a_legacy_hash_cannot_answer_and_says_what_to_do(tmp_path: Path) -> None:
    stored = legacy_hash("s3cret")
    record = Record("88.100.1/OLD", (HandleValue(300, "HS_SECKEY", Data("string", stored)),))
    native = NativeAdmin(_Node(record, tmp_path))
    _, pending = native.challenges.open(_request())
    signed = admin.secret_answer(admin.MAC_HMAC_SHA1, pending.nonce, pending.digest, b"s3cret")
    answer = admin.ChallengeAnswer(admin.SECRET_KEY_TYPE, Ref("88.100.1/OLD", 300), signed)
    with pytest.raises(AuthenticationFailed, match="one-way hash"):
        await native._verify(answer, pending, (2, 11))
    sealed = Record(
        "88.100.1/OLD", (HandleValue(300, "HS_SECKEY", Data("string", seal_secret("s3cret"))),)
    )
    native = NativeAdmin(_Node(sealed, tmp_path))
    assert await native._verify(answer, pending, (2, 11)) == Ref("88.100.1/OLD", 300)
    sm2 = {"kty": "EC", "crv": "SM2", "x": "AA", "y": "AA"}
    keyed = Record("88.100.1/OLD", (HandleValue(300, "HS_PUBKEY", Data("key", sm2)),))
    native = NativeAdmin(_Node(keyed, tmp_path))
    by_key = admin.ChallengeAnswer(
        admin.PUBLIC_KEY_TYPE, Ref("88.100.1/OLD", 300), admin.public_key_answer(b"SM3", b"sig")
    )
    with pytest.raises(AuthenticationFailed, match="SM2"):
        await native._verify(by_key, pending, (2, 11))
