"""Session codec and store: the reference client's setup bytes decode and re-encode byte for
byte, the session key is derived as the reference derives it, session MACs verify and catch
tampering, and the session files are bounded in time and shared by whoever reads them."""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

import pytest

from nodes.handle.sessions import Session, Sessions
from resolver.codecs import handle_session as hs
from resolver.codecs import handle_wire as wire
from resolver.errors import (
    InvalidCredential,
    InvalidSessionKey,
    ProtocolError,
    SessionMessageRejected,
    SessionTimeout,
)
from resolver.values import Ref

CAPTURE = Path("/work/shared/handle-wire/wire_captures/client_session_setup_request_tcp.bin")
for _parent in Path(__file__).resolve().parents:
    if (_parent / "shared" / "handle-wire").is_dir():
        CAPTURE = _parent / "shared/handle-wire/wire_captures/client_session_setup_request_tcp.bin"
        break


def _decoded(raw: bytes) -> wire.Request:
    return wire.decode_request(wire.decode_envelope(raw), raw[wire.ENVELOPE_SIZE :])


def _signed(raw: bytes, key: bytes, counter: int) -> wire.Request:
    credential = hs.mac_credential(_decoded(raw), key, counter)
    message = raw[wire.ENVELOPE_SIZE : -4] + struct.pack(">i", len(credential)) + credential
    return _decoded(raw[:16] + struct.pack(">i", len(message)) + message)


def test_the_reference_setup_request_round_trips() -> None:
    if not CAPTURE.is_file():
        pytest.fail(f"wire capture missing: {CAPTURE}")
    request = _decoded(CAPTURE.read_bytes())
    setup = hs.decode_session_setup(request)
    assert (setup.mode, setup.timeout, setup.identity) == (hs.KEY_EXCHANGE_DH, 86400, None)
    key = hs.decode_dh_public_key(setup.public_key)
    assert key.p.bit_length() == 1024 and key.g == 2
    assert hs.encode_dh_public_key(key) == setup.public_key
    # The 2 bytes the reference's encoder counts for the int2 mode as an int4 trail the body.
    assert request.body[-2:] == b"\x00\x00"


def test_session_key_drops_leading_zeros_then_takes_32_bytes() -> None:
    shared = bytes(3) + bytes(range(1, 126))
    assert hs.session_key(shared) == bytes(range(1, 33))
    short = bytes(2) + bytes(range(1, 31))  # 32 bytes in all: nothing to strip
    assert hs.session_key(short) == short


def test_session_mac_verifies_and_catches_tampering() -> None:
    raw = wire.encode_request(wire.OC_DELETE_HANDLE, b"88.100.1/X", request_id=9, session_id=5)
    key = bytes(range(32))
    request = _signed(raw, key, 7)
    mac = hs.decode_mac(request.signature)
    assert mac is not None and mac.counter == 7 and mac.algorithm == b"HMAC-SHA256"
    # From 2.8: versions, suggested versions, session id, request id, counter, header + body.
    data = bytes([2, 11, 2, 11]) + struct.pack(">iii", 5, 9, 7) + request.signed_part
    assert mac.digest == hmac.new(key, data, hashlib.sha256).digest()
    assert hs.mac_matches(request, mac, key)
    assert not hs.mac_matches(request, mac, bytes(32))
    other = _decoded(raw[:8] + struct.pack(">i", 10) + raw[12:])  # another request id
    assert not hs.mac_matches(other, mac, key)
    assert hs.decode_mac(b"garbage") is None and hs.decode_mac(None) is None
    old = wire.encode_request(1, b"x", request_id=1, version=(2, 6), session_id=5)
    with pytest.raises(ProtocolError):
        _signed(old, key, 1)


def test_dh_keys_out_of_bounds_are_refused() -> None:
    for y, p, g in ((5, 23, 2), (1, (1 << 1023) + 1155, 2), (3, 1 << 5000, 2)):
        with pytest.raises(ProtocolError):
            hs.decode_dh_public_key(hs.encode_dh_public_key(hs.DHPublicKey(y, p, g)))


def test_session_files_check_macs_counters_and_expiry(tmp_path: Path) -> None:
    now = [1000.0]
    store = Sessions(tmp_path, clock=lambda: now[0])
    key = bytes(range(32))
    store.save(Session(5, key, 1100.0, Ref("88.100.1/ADMIN", 300)))
    raw = wire.encode_request(wire.OC_DELETE_HANDLE, b"88.100.1/X", request_id=9, session_id=5)
    # Another store on the same directory (another worker) sees it.
    other = Sessions(tmp_path, clock=lambda: now[0])
    session = other.check(_signed(raw, key, 1))
    assert session is not None and not session.authenticated
    with pytest.raises(SessionMessageRejected):
        store.check(_signed(raw, key, 1))
    with pytest.raises(InvalidSessionKey):
        store.check(_signed(raw, bytes(32), 2))
    # Someone else's answer authenticates nothing; the session's identity's does.
    store.authenticate(session, Ref("88.100.1/OTHER", 300))
    assert not store.get(5).authenticated  # type: ignore[union-attr]
    store.authenticate(session, Ref("88.100.1/ADMIN", 300))
    assert store.get(5).authenticated  # type: ignore[union-attr]
    with pytest.raises(InvalidCredential):
        store.check(_decoded(raw))  # no MAC on an authenticated session
    now[0] = 1101.0
    with pytest.raises(SessionTimeout):
        store.check(_signed(raw, key, 3))
    assert store.check(_decoded(raw)) is None  # no MAC, no session: not a session request
