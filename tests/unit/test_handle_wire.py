"""The native Handle codec against the reference encoder's bytes (``../shared/handle-wire/``,
read at test time), the IDIS SDK's dump, and malformed input (a bounded fuzz run)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.codecs import handle_wire as wire
from resolver.codecs.handle_data import (
    decode_site,
    decode_values,
    encode_public_key,
    encode_site,
    encode_value,
    public_key_json,
)
from resolver.errors import ProtocolError
from resolver.sites import site_data
from resolver.values import AdminRef, Data, HandleValue, Ref

VECTORS = Path(__file__).resolve().parents[2].parent.parent / "shared" / "handle-wire"
if not VECTORS.is_dir():  # run from /work/main or a worktree: ../shared relative to the repo
    VECTORS = Path("/work/shared/handle-wire")
EXPIRATION = 1600000000


def vector(name: str) -> bytes:
    path = VECTORS / name
    if not path.is_file():
        pytest.fail(f"byte vector {path} is missing")
    return path.read_bytes()


def request_of(raw: bytes) -> wire.Request:
    envelope = wire.decode_envelope(raw)
    assert len(raw) == wire.ENVELOPE_SIZE + envelope.message_length
    return wire.decode_request(envelope, raw[wire.ENVELOPE_SIZE :])


def idis_dump() -> dict[str, bytes]:
    """The IDIS SDK's requests from ``idis-sdk/wire-dump.txt``, by their title."""
    text = (VECTORS / "idis-sdk" / "wire-dump.txt").read_text(encoding="utf-8")
    out = {}
    for block in text.split("## ")[1:]:
        title = block.splitlines()[0]
        hexes = re.findall(r"^\s+(?:envelope|header|rest)\s+([0-9a-f]+)$", block, re.M)
        out[title] = bytes.fromhex("".join(hexes))
    return out


EXAMPLE_VALUES = (
    HandleValue(1, "URL", Data("string", "https://example.org/abc123"), timestamp=EXPIRATION),
    HandleValue(
        100, "HS_ADMIN", Data("admin", AdminRef("0.NA/88.100.1", 200, 0xFFF)), timestamp=EXPIRATION
    ),
)


# --- requests ------------------------------------------------------------------------------


def test_resolution_requests_decode_as_the_reference_encoded_them() -> None:
    plain = request_of(vector("resolution_request.bin"))
    assert plain.op_code == wire.OC_RESOLUTION
    assert plain.handle == b"88.100.1/ABC123"
    assert (plain.types, plain.indexes, plain.auth_bytes) == ((), (), None)
    assert plain.op_flags == wire.RECU | wire.CACR | wire.PUBL
    assert plain.envelope.request_id == 0x01020304 and plain.site_info_serial == 1
    assert plain.signature == b""

    typed = request_of(vector("resolution_request_typed.bin"))
    assert (typed.types, typed.indexes) == ((b"URL",), (1,))

    old = request_of(vector("resolution_request_v2.3.bin"))
    assert (old.envelope.major, old.envelope.minor) == (2, 3)
    assert (old.envelope.suggest_major, old.envelope.suggest_minor) == (2, 11)
    assert old.site_info_serial == -1

    lookup = request_of(vector("prefix_lookup_request.bin"))
    assert lookup.handle == b"0.NA/88.100.1" and lookup.recursion_count == 1
    assert lookup.types == (b"HS_SITE", b"HS_SITE.6", b"HS_SERV", b"HS_NAMESPACE")

    created = request_of(vector("create_handle_request.bin"))
    assert created.op_code == wire.OC_CREATE_HANDLE and created.handle == b"88.100.1/ABC123"


def test_the_encoder_writes_the_reference_requests() -> None:
    for name, kwargs in [
        ("resolution_request", {}),
        ("resolution_request_typed", {"types": [b"URL"], "indexes": [1]}),
        ("resolution_request_v2.3", {"version": (2, 3), "site_info_serial": -1}),
    ]:
        raw = wire.encode_request(
            wire.OC_RESOLUTION,
            b"88.100.1/ABC123",
            request_id=0x01020304,
            expiration=EXPIRATION,
            **kwargs,  # type: ignore[arg-type]
        )
        assert raw == vector(f"{name}.bin"), name
        assert raw[wire.ENVELOPE_SIZE :] == vector(f"{name}.msg.bin"), name


def test_captured_client_requests_decode() -> None:
    for path in sorted((VECTORS / "wire_captures").glob("*.bin")):
        request = request_of(path.read_bytes())
        assert request.op_code in (wire.OC_RESOLUTION, wire.OC_CREATE_HANDLE, 400), path.name
        if request.op_code == wire.OC_RESOLUTION:
            assert request.handle.startswith((b"88.100.1/", b"0.NA/88.100.1")), path.name


def test_the_idis_sdk_requests_decode() -> None:
    dump = idis_dump()
    plain = request_of(next(raw for title, raw in dump.items() if "client default" in title))
    assert (plain.envelope.major, plain.envelope.minor) == (2, 10)
    assert plain.auth_bytes == b"" and plain.site_info_serial == -1
    token = next(raw for title, raw in dump.items() if "TOKEN" in title)
    with_token = request_of(token)
    assert with_token.auth_bytes == b"TOKEN"
    assert with_token.op_flags == 0x19000004
    site = request_of(next(raw for title, raw in dump.items() if "GET_SITE_INFO" in title))
    assert (site.op_code, site.handle, site.envelope.session_id) == (2, b"/", 10001)
    login = request_of(next(raw for title, raw in dump.items() if "2001" in title))
    assert login.op_code == wire.OC_LOGIN_ID_SYSTEM and login.handle == b"88.100.1/ADMIN"
    assert login.signature is None  # the SDK's login has no credential field


# --- responses -----------------------------------------------------------------------------


def test_responses_are_the_reference_bytes() -> None:
    request = request_of(vector("resolution_request.bin"))
    body = wire.values_body(b"88.100.1/ABC123", [encode_value(v) for v in EXAMPLE_VALUES])
    assert wire.frame(request, 1, body, expiration=EXPIRATION) == vector("resolution_response.bin")
    error = wire.frame(request, 100, wire.error_body(b""), expiration=EXPIRATION)
    assert error == vector("error_handle_not_found.bin")
    created = request_of(vector("create_handle_request.bin"))
    answer = wire.frame(created, 1, wire.string(b"88.100.1/ABC123"), expiration=EXPIRATION)
    assert answer == vector("create_handle_response.bin")
    # The cached path (envelope and header patched before rendered bytes) is the same bytes.
    patched = wire.frame_tail(
        request, 1, wire.unsigned_tail(body), len(body), expiration=EXPIRATION
    )
    assert patched == vector("resolution_response.bin")


def test_a_response_answers_in_the_suggested_version_and_decodes() -> None:
    request = request_of(vector("resolution_request_v2.3.bin"))
    body = wire.values_body(b"88.100.1/ABC123", [encode_value(v) for v in EXAMPLE_VALUES])
    raw = wire.frame(request, 1, body, expiration=EXPIRATION)
    envelope = wire.decode_envelope(raw)
    assert (envelope.major, envelope.minor) == (2, 11)
    response = wire.decode_response(envelope, raw[wire.ENVELOPE_SIZE :])
    handle, values = decode_values(response.body)
    assert handle == "88.100.1/ABC123"
    assert [v.index for v, _ in values] == [1, 100]
    assert values[0][1] == b"https://example.org/abc123"
    # A 2.5 suggestion is answered in 2.5; invalid value is "value exists" before 2.5.
    raw_25 = wire.encode_request(1, b"a/b", request_id=7, suggest=(2, 5))
    request_25 = request_of(raw_25)
    answered = wire.decode_envelope(wire.frame(request_25, 1, b"", expiration=1))
    assert (answered.major, answered.minor, answered.suggest_minor) == (2, 5, 11)
    old = request_of(wire.encode_request(1, b"a/b", request_id=7, version=(2, 3), suggest=(2, 3)))
    assert wire.wire_code(202, wire.response_version(old)) == 201
    assert wire.wire_code(202, (2, 11)) == 202
    assert wire.wire_code(999, (2, 11)) == 2


def test_a_request_digest_is_sent_when_asked() -> None:
    raw = wire.encode_request(1, b"88.100.1/X", request_id=9, flags=wire.RRDG)
    request = request_of(raw)
    answer = wire.frame(request, 100, wire.error_body(b"no"), expiration=EXPIRATION)
    envelope = wire.decode_envelope(answer)
    response = wire.decode_response(envelope, answer[wire.ENVELOPE_SIZE :])
    import hashlib

    assert response.digest == bytes([3]) + hashlib.sha256(request.signed_part).digest()
    assert response.body == wire.error_body(b"no")


def test_long_messages_split_into_udp_packets_and_reassemble() -> None:
    message = wire.Envelope(2, 11, 0, 2, 11, 0, 5, 0, 1200).encode() + bytes(range(256)) * 4
    message = message[:20] + (message[20:] + bytes(1200))[:1200]
    packets = wire.udp_packets(message)
    assert [len(p) for p in packets] == [512, 512, 20 + 1200 - 2 * 492]
    envelopes = [wire.decode_envelope(p) for p in packets]
    assert [e.message_id for e in envelopes] == [0, 1, 2]
    assert all(e.truncated and e.message_length == 1200 for e in envelopes)
    whole = wire.Reassembly(envelopes[0])
    assert whole.add(envelopes[2], packets[2][20:]) is None
    assert whole.add(envelopes[0], packets[0][20:]) is None
    assert whole.add(envelopes[1], packets[1][20:]) == message[20:]
    assert wire.udp_packets(message[:300]) == [message[:300]]


# --- values and sites ----------------------------------------------------------------------


def test_values_of_every_format_encode_and_decode() -> None:
    values = [
        HandleValue(2, "BIN", Data("base64", base64.b64encode(b"\x00\xff").decode())),
        HandleValue(3, "HS_VLIST", Data("vlist", (Ref("88.100.1/ADMIN", 300),))),
        HandleValue(4, "URL", Data("string", "x"), 99, True, 5, 0x0A, (Ref("a/b", 1),)),
    ]
    body = wire.values_body(b"h/1", [encode_value(v) for v in values])
    handle, decoded = decode_values(body)
    assert handle == "h/1"
    assert decoded[0][1] == b"\x00\xff"
    assert (
        decoded[1][1] == b"\x00\x00\x00\x01" + wire.string(b"88.100.1/ADMIN") + b"\x00\x00\x01\x2c"
    )
    value, data = decoded[2]
    assert (value.ttl, value.ttl_absolute, value.timestamp, value.permissions) == (99, True, 5, 10)
    assert value.references == (Ref("a/b", 1),) and data == b"x"


def test_site_info_round_trips_with_native_interfaces_and_a_key() -> None:
    key = {
        "kty": "RSA",
        "n": base64.urlsafe_b64encode(b"\xc1" * 256).rstrip(b"=").decode(),
        "e": "AQAB",
    }
    site = site_data(["http://10.1.2.3:8000"], "node", native_port=2641, public_key=key)
    raw = encode_site(site)
    # Format 1, protocol 2.11, serial 1, primary, hash by all, no filter.
    assert raw[:8] == bytes([0, 1, 2, 11, 0, 1, 0x80, 2])
    back = decode_site(raw)
    server = back["servers"][0]
    assert server["address"] == "10.1.2.3"
    assert [(i["protocol"], i["port"], i["query"], i["admin"]) for i in server["interfaces"]] == [
        ("TCP", 2641, True, False),
        ("UDP", 2641, True, False),
        ("HTTP", 8000, True, True),
    ]
    key_bytes = base64.b64decode(server["publicKey"]["value"])
    assert key_bytes == encode_public_key(key)
    assert key_bytes.startswith(wire.string(b"RSA_PUB_KEY") + b"\x00\x00")
    assert public_key_json(key_bytes) == key
    assert back["attributes"] == [{"name": "desc", "value": "node"}]
    with pytest.raises(ProtocolError):
        decode_site(raw + b"\x00")
    with pytest.raises(ProtocolError):
        decode_site(raw[:-3])


# --- malformed input -----------------------------------------------------------------------


def test_malformed_messages_raise_protocol_errors() -> None:
    good = vector("resolution_request.msg.bin")
    envelope = wire.decode_envelope(vector("resolution_request.bin"))
    for bad in (good[:10], good[:30], good[:-9], b"\x00" * 24):
        with pytest.raises(ProtocolError):
            wire.decode_request(envelope, bad)
    with pytest.raises(ProtocolError):
        wire.decode_envelope(b"\x02\x0b" + bytes(14) + b"\x7f\xff\xff\xff")
    # A huge count in a short body is refused without allocating it.
    huge = good[: 24 + 19] + b"\x7f\xff\xff\xff" + good[24 + 23 :]
    with pytest.raises(ProtocolError):
        wire.decode_request(envelope, huge)


def _decode_anything(data: bytes) -> None:
    """What the front end does with a datagram: every failure must be a ProtocolError."""
    try:
        envelope = wire.decode_envelope(data)
        request = wire.decode_request(envelope, data[wire.ENVELOPE_SIZE :])
    except ProtocolError:
        if len(data) >= wire.ENVELOPE_SIZE:  # answered over TCP with code 4
            refused = wire.undecodable(data)
            wire.frame(refused, 4, wire.error_body(b"bad"), expiration=EXPIRATION)
        return
    assert request.op_code > 0


SEEDS = [
    "resolution_request.bin",
    "resolution_request_typed.bin",
    "prefix_lookup_request.bin",
    "create_handle_request.bin",
]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 200),
    extra=st.binary(max_size=40),
)
def test_mutated_messages_never_crash_the_decoder(
    seed: str, edits: list[tuple[int, int]], cut: int, extra: bytes
) -> None:
    data = bytearray(vector(seed))
    for position, byte in edits:
        if position < len(data):
            data[position] = byte
    _decode_anything(bytes(data[: max(cut, 20)]) + extra)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    _decode_anything(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
SITE_KEYS = st.sampled_from(
    [
        "version",
        "protocolVersion",
        "serialNumber",
        "primarySite",
        "hashOption",
        "hashFilter",
        "attributes",
        "servers",
        "serverId",
        "address",
        "publicKey",
        "interfaces",
        "port",
        "protocol",
        "query",
        "admin",
        "format",
        "value",
        "kty",
        "n",
        "e",
        "name",
    ]
)
SITE_LIKE = st.recursive(
    JSON,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SITE_KEYS, inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SITE_LIKE)
def test_any_stored_site_encodes_and_its_bytes_decode(site: object) -> None:
    """An HS_SITE is whatever a client wrote through REST: it must encode, and what it encodes
    to must be a site record."""
    if not isinstance(site, dict):
        site = {"servers": [site]}
    decode_site(encode_site(site))


def test_a_certified_answer_is_signed_over_the_envelope_fields_header_and_body() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    def sign(data: bytes, hash_name: str) -> bytes:
        assert hash_name == "SHA-256"
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    raw = wire.encode_request(1, b"88.100.1/ABC123", request_id=77, flags=wire.CERT | wire.RRDG)
    request = request_of(raw)
    body = wire.values_body(b"88.100.1/ABC123", [encode_value(v) for v in EXAMPLE_VALUES])
    signed = wire.signed_frame(request, 1, body, expiration=EXPIRATION, sign=sign)
    envelope = wire.decode_envelope(signed)
    response = wire.decode_response(envelope, signed[wire.ENVELOPE_SIZE :])
    assert response.body == body and response.digest  # the digest stays before the body
    hash_name, signature, data = wire.signature_parts(response)
    assert hash_name == "SHA-256"
    key.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    # The same message but for its credential as the unsigned rendering.
    unsigned = wire.frame(request, 1, body, expiration=EXPIRATION)
    assert signed[wire.ENVELOPE_SIZE : len(unsigned) - 4] == unsigned[wire.ENVELOPE_SIZE : -4]
