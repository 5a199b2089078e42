"""The native Handle protocol through real ``idis serve`` processes, over UDP, TCP and HTTP,
with the client of :mod:`loadtests.handle_client` and the reference client's own bytes
(``../shared/handle-wire/``, read at test time).

One small federation for the module, each node on a PostgreSQL database of its own: a top-level
node (homes 88, allocated 88.100, allows recursion), the secondary node 88.100 (two workers,
a site key, joined at the top level with its native interfaces; also homes 88.100.1) and a
recursive node whose root is the top level.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodeproc import NodeProcess, start_node

from loadtests import handle_client as hc
from nodes.processes import free_ports, node_env, run_cli
from resolver.codecs import handle_wire as wire
from resolver.codecs.handle_data import decode_site, public_key_json

VECTORS = Path("/work/shared/handle-wire")
for _parent in Path(__file__).resolve().parents:
    if (_parent / "shared" / "handle-wire").is_dir():
        VECTORS = _parent / "shared" / "handle-wire"
        break
HOST = "127.0.0.1"
TIMEOUT = 10.0
STARTUP_TIMEOUT = 60.0


@dataclass
class Native:
    node: NodeProcess
    port: int

    def udp(self, request: bytes) -> hc.Reply:
        return hc.udp(HOST, self.port, request, TIMEOUT)

    def tcp(self, request: bytes) -> hc.Reply:
        return hc.tcp(HOST, self.port, request, TIMEOUT)

    def http(self, handle: str, request: bytes) -> hc.Reply:
        return hc.http(self.node.base_url, handle, request, TIMEOUT)

    def all(self, handle: str, request: bytes) -> list[hc.Reply]:
        return [self.udp(request), self.tcp(request), self.http(handle, request)]


@dataclass
class Federation:
    top: Native
    secondary: Native
    recursive: Native
    secret: str
    workdir: Path


def _vector(name: str) -> bytes:
    path = VECTORS / name
    if not path.is_file():
        pytest.fail(f"byte vector {path} is missing")
    return path.read_bytes()


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory, pg_factory: Callable[[], str]
) -> Iterator[Federation]:
    workdir = tmp_path_factory.mktemp("native")
    secret = f"e2e-{uuid.uuid4().hex}"
    secret_file = workdir / "secret"
    secret_file.write_text(secret + "\n", encoding="utf-8")
    top_port, secondary_port, recursive_port, top_http = free_ports(4)
    started: list[NodeProcess] = []
    try:
        top = start_node(
            workdir / "top",
            database_url=pg_factory(),
            prefix="88",
            secret=secret,
            extra_env={
                "IDIS_ROLE": "top-level",
                "IDIS_HTTP": f"{HOST}:{top_http}",
                "IDIS_HANDLE": f"{HOST}:{top_port}",
                # Its walks (for clients asking recursion) start at itself.
                "IDIS_FEDERATION__TOP_LEVEL": json.dumps([f"http://{HOST}:{top_http}"]),
                "IDIS_FEDERATION__ALLOW_RECURSION": "true",
            },
        )
        started.append(top)
        run_cli(top.env, "prefix", "allocate", "88.100", "--secret-file", str(secret_file))
        # The site's key, made by the command, outside the database (read at start).
        key_file = workdir / "keys" / "site-key.pem"
        keygen_env = node_env(workdir / "keygen", 1, name="keygen")
        out = run_cli({**keygen_env, "IDIS_HANDLE_KEY_FILE": str(key_file)}, "site", "keygen")
        assert '"kty": "RSA"' in out
        secondary_env = {
            "IDIS_ROLE": "secondary",
            "IDIS_HANDLE": f"{HOST}:{secondary_port}",
            "IDIS_HANDLE_KEY_FILE": str(key_file),
            "IDIS_FEDERATION__TOP_LEVEL": json.dumps([top.base_url]),
        }
        secondary = start_node(
            workdir / "secondary",
            database_url=pg_factory(),
            prefix="88.100",
            secret=secret,
            init=False,
            workers=2,
            extra_env=secondary_env,
            # Two workers on a loaded 2-core machine: uvicorn may restart a slow one at boot.
            startup_timeout=STARTUP_TIMEOUT,
        )
        started.append(secondary)
        run_cli(secondary.env, "federation", "join", "88.100", "--secret-file", str(secret_file))
        run_cli(secondary.env, "prefix", "init", "88.100.1", "--secret-file", str(secret_file))
        recursive = start_node(
            workdir / "recursive",
            init=False,
            extra_env={
                "IDIS_ROLE": "recursive",
                "IDIS_HANDLE": f"{HOST}:{recursive_port}",
                "IDIS_FEDERATION__TOP_LEVEL": json.dumps([top.base_url]),
            },
        )
        started.append(recursive)
        yield Federation(
            Native(top, top_port),
            Native(secondary, secondary_port),
            Native(recursive, recursive_port),
            secret,
            workdir,
        )
    finally:
        for node in reversed(started):
            node.stop()


def _put(
    node: NodeProcess, handle: str, values: list[dict[str, Any]], identity: str, secret: str
) -> None:
    auth = httpx.BasicAuth(identity.replace(":", "%3A", 1), secret)
    response = httpx.put(
        f"{node.base_url}/api/handles/{handle}", json={"values": values}, auth=auth, timeout=TIMEOUT
    )
    assert response.status_code in (200, 201), response.text


def _put_example(fed: Federation, suffix: str) -> str:
    """88.100.1/SUFFIX with the values of the reference vectors (URL at 1, HS_ADMIN at 100)."""
    handle = f"88.100.1/{suffix}"
    values = [
        {"index": 1, "type": "URL", "data": "https://example.org/abc123"},
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"handle": "0.NA/88.100.1", "index": 200, "permissions": "111111111111"},
            },
        },
    ]
    _put(fed.secondary.node, handle, values, "300:88.100.1/ADMIN", fed.secret)
    return handle


def _with_live_fields(expected: bytes, live: bytes) -> bytes:
    """The reference response with the fields a live server sets itself (the expiration and
    each value's timestamp) taken from ``live``; everything else stays the reference's."""
    out = bytearray(expected)
    out[36:40] = live[36:40]  # expiration (envelope 20 + header offset 16)
    position = 20 + 24 + 4 + int.from_bytes(expected[44:48], "big") + 4
    while position < len(expected) - 4:
        out[position + 4 : position + 8] = live[position + 4 : position + 8]
        type_length = int.from_bytes(expected[position + 14 : position + 18], "big")
        data_at = position + 18 + type_length
        data_length = int.from_bytes(expected[data_at : data_at + 4], "big")
        refs_at = data_at + 4 + data_length
        assert expected[refs_at : refs_at + 4] == bytes(4)
        position = refs_at + 4
    return bytes(out)


# --- resolution ----------------------------------------------------------------------------


def test_the_reference_clients_request_gets_the_reference_answer(fed: Federation) -> None:
    _put_example(fed, "ABC123")
    expected = _vector("resolution_response.bin")
    for name in ("resolution_request.bin", "resolution_request_v2.3.bin"):
        request = _vector(name)
        for reply in fed.secondary.all("88.100.1/ABC123", request):
            assert reply.raw == _with_live_fields(expected, reply.raw), name
            assert reply.response.expiration > time.time() + 3600
    # The handle the client asked for, not found: code 100 in the reference's header.
    request = bytearray(_vector("resolution_request.bin"))
    missing = hc.resolution("88.100.1/NOPE-" + uuid.uuid4().hex, request_id=0x01020304)
    reference = _vector("error_handle_not_found.bin")
    for reply in fed.secondary.all("88.100.1/NOPE", missing):
        assert reply.raw[:16] == reference[:16]  # versions and request id
        assert reply.raw[20:32] == reference[20:32]  # opCode, code 100, flags
        assert reply.message() == "handle not found"
    assert request  # the reference request itself is untouched


def test_captured_requests_of_the_real_client_are_answered(fed: Federation) -> None:
    _put_example(fed, "ABC123")
    for path in sorted((VECTORS / "wire_captures").glob("client_resolution_request_*.bin")):
        raw = path.read_bytes()
        sent = wire.decode_envelope(raw)
        reply = fed.secondary.udp(raw) if "udp" in path.name else fed.secondary.tcp(raw)
        assert reply.envelope.request_id == sent.request_id, path.name
        assert reply.code == (100 if "notfound" in path.name else 1), path.name


def test_filters_and_sub_types_select_as_rest_does(fed: Federation) -> None:
    handle = f"88.100.1/F-{uuid.uuid4().hex[:8]}"
    values = [
        {"index": 1, "type": "URL", "data": "https://example.org/f"},
        {"index": 2, "type": "DESC.en", "data": "english"},
        {"index": 3, "type": "DESC.zh", "data": "chinese"},
        {"index": 4, "type": "EMAIL", "data": "a@example.org"},
        {"index": 5, "type": "NOTE", "data": "private", "permissions": "1100"},
    ]
    _put(fed.secondary.node, handle, values, "300:88.100.1/ADMIN", fed.secret)
    cases = [
        ({}, [1, 2, 3, 4, 100]),  # the server adds HS_ADMIN at 100
        ({"types": ("DESC.",)}, [2, 3]),
        ({"types": ("DESC",)}, []),
        ({"types": ("EMAIL",), "indexes": (1,)}, [1, 4]),
        ({"indexes": (5,)}, []),
    ]
    for query, indexes in cases:
        request = hc.resolution(handle, **query)  # type: ignore[arg-type]
        params: dict[str, Any] = {
            "type": list(query.get("types", ())),
            "index": list(query.get("indexes", ())),
        }
        rest = httpx.get(
            f"{fed.secondary.node.base_url}/api/handles/{handle}", params=params
        ).json()
        assert [v["index"] for v in rest["values"]] == indexes
        for reply in fed.secondary.all(handle, request):
            if not indexes:
                assert reply.code == 200, query
                continue
            assert reply.code == 1, query
            name, got = reply.values()
            assert name == handle
            assert [v.index for v, _ in got] == indexes, query
            by_index = {v["index"]: v for v in rest["values"]}
            for value, data in got:
                assert value.type == by_index[value.index]["type"]
                if by_index[value.index]["data"]["format"] == "string":
                    assert data.decode() == by_index[value.index]["data"]["value"]


def test_a_long_answer_comes_in_several_udp_packets(fed: Federation) -> None:
    handle = f"88.100.1/BIG-{uuid.uuid4().hex[:8]}"
    values = [{"index": i, "type": "DESC", "data": f"{i:04d}" * 50} for i in range(1, 13)]
    _put(fed.secondary.node, handle, values, "300:88.100.1/ADMIN", fed.secret)
    request = hc.resolution(handle, request_id=77)
    over_udp = fed.secondary.udp(request)
    over_tcp = fed.secondary.tcp(request)
    assert over_udp.envelope.message_length > 2 * wire.UDP_DATA
    assert over_udp.packets == -(-over_udp.envelope.message_length // wire.UDP_DATA)
    assert over_udp.code == 1 and len(over_udp.values()[1]) == 13  # with HS_ADMIN
    assert over_udp.values() == over_tcp.values()


def test_a_tcp_connection_serves_many_requests(fed: Federation) -> None:
    """As the IDIS SDK does: get site info for "/", then resolutions, on one connection."""
    handle = _put_example(fed, "ABC123")
    with socket.create_connection((HOST, fed.secondary.port), timeout=TIMEOUT) as sock:
        site = wire.encode_request(
            wire.OC_GET_SITE_INFO, b"/", request_id=1, session_id=10001, version=(2, 10)
        )
        sock.sendall(site)
        assert hc.read_tcp(sock).code == 1
        # Pipelined: three requests in one write, three answers in order.
        batch = b"".join(hc.resolution(handle, request_id=n, auth_bytes=b"") for n in (2, 3, 4))
        sock.sendall(batch)
        replies = [hc.read_tcp(sock) for _ in range(3)]
        assert [r.envelope.request_id for r in replies] == [2, 3, 4]
        assert all(r.code == 1 for r in replies)
        # A client sending far more than it reads: the node stops reading while its answers
        # wait, and every answer still comes, in order.
        many = b"".join(hc.resolution(handle, request_id=n) for n in range(10, 4010))
        sender = threading.Thread(target=sock.sendall, args=(many,))
        sender.start()
        time.sleep(1.0)  # let the node's write buffer fill before reading
        ids = [hc.read_tcp(sock).envelope.request_id for _ in range(4000)]
        sender.join(TIMEOUT)
        assert ids == list(range(10, 4010))


def test_site_info_names_the_native_interfaces_and_the_site_key(fed: Federation) -> None:
    secondary = fed.secondary
    reply = secondary.tcp(wire.encode_request(wire.OC_GET_SITE_INFO, b"/", request_id=3))
    assert reply.code == 1 and reply.response.op_code == wire.OC_GET_SITE_INFO
    site = decode_site(reply.response.body)
    [server] = site["servers"]
    assert server["address"] == HOST
    ports = {i["protocol"]: i["port"] for i in server["interfaces"]}
    assert ports == {"TCP": secondary.port, "UDP": secondary.port, "HTTP": secondary.node.port}
    import base64

    key = public_key_json(base64.b64decode(server["publicKey"]["value"]))
    assert key is not None and key["kty"] == "RSA"
    # The same key as the key file holds (outside the database, mode 0600).
    key_file = Path(secondary.node.env["IDIS_HANDLE_KEY_FILE"])
    assert key_file.stat().st_mode & 0o077 == 0
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    numbers = private.public_key().public_numbers()  # type: ignore[union-attr]
    n = int.from_bytes(base64.urlsafe_b64decode(key["n"] + "=" * (-len(key["n"]) % 4)), "big")
    assert n == numbers.n
    # CERT: the answer is signed with that key (over every door).
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    _put_example(fed, "ABC123")
    request = hc.resolution("88.100.1/ABC123", request_id=31, flags=wire.CERT | wire.RECU)
    for reply in secondary.all("88.100.1/ABC123", request):
        assert reply.code == 1
        hash_name, signature, data = wire.signature_parts(reply.response)
        assert hash_name == "SHA-256"
        private.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]


# --- finding the site ----------------------------------------------------------------------


def _sites(reply: hc.Reply) -> list[dict[str, Any]]:
    return [
        decode_site(data) for value, data in reply.values()[1] if value.type.startswith("HS_SITE")
    ]


def test_the_top_level_refers_to_the_secondary_with_its_native_interfaces(fed: Federation) -> None:
    _put_example(fed, "ABC123")
    top = fed.top
    # Without RECU: a prefix referral (303) carrying 88.100's HS_SITE.PREFIX.
    request = hc.resolution("88.100.1/ABC123", flags=wire.CACR | wire.PUBL)
    for reply in top.all("88.100.1/ABC123", request):
        assert reply.code == wire.RC_PREFIX_REFERRAL
        assert reply.values()[0] == "0.NA/88.100"
        [site] = _sites(reply)
        tcp = [i for i in site["servers"][0]["interfaces"] if i["protocol"] == "TCP"]
        assert tcp and tcp[0]["port"] == fed.secondary.port
    # A handle under 88.100 itself: a service referral (302).
    reply = top.udp(hc.resolution("88.100/X", flags=wire.PUBL))
    assert reply.code == wire.RC_SERVICE_REFERRAL and _sites(reply)
    # The reference client's first question (0.NA/88.100.1 at the global service).
    reply = top.tcp(_vector("prefix_lookup_request.bin"))
    assert reply.envelope.request_id == 0x01020304
    assert reply.code == wire.RC_PREFIX_REFERRAL and _sites(reply)
    # With RECU, and recursion allowed here, the top level resolves for the client.
    reply = top.tcp(hc.resolution("88.100.1/ABC123"))
    assert reply.code == 1
    assert [v.index for v, _ in reply.values()[1]] == [1, 100]


def test_the_idis_sdk_finds_a_prefix_site_at_a_recursive_node(fed: Federation) -> None:
    """The bare prefix, type HS_SITE, authBytes, flag 0x00000004: the first TCP interface of
    the first HS_SITE leads to the secondary, which answers the handle."""
    _put_example(fed, "ABC123")
    request = hc.resolution(
        "88.100", types=("HS_SITE",), auth_bytes=b"", flags=0x19000004, version=(2, 10)
    )
    reply = fed.recursive.tcp(request)
    assert reply.code == 1 and reply.values()[0] == "88.100"
    [site] = _sites(reply)
    tcp = next(i for s in site["servers"] for i in s["interfaces"] if i["protocol"] == "TCP")
    address = site["servers"][0]["address"]
    answer = hc.tcp(address, tcp["port"], hc.resolution("88.100.1/ABC123", auth_bytes=b""))
    assert answer.code == 1 and answer.values()[0] == "88.100.1/ABC123"
    # And the recursive node resolves the handle itself, over every door.
    for reply in fed.recursive.all("88.100.1/ABC123", hc.resolution("88.100.1/ABC123")):
        assert reply.code == 1 and [v.index for v, _ in reply.values()[1]] == [1, 100]


def test_auth_bypasses_the_caches_of_a_recursive_node(fed: Federation) -> None:
    handle = f"88.100.1/AUTH-{uuid.uuid4().hex[:8]}"
    first = [{"index": 1, "type": "URL", "data": "https://example.org/one"}]
    _put(fed.secondary.node, handle, first, "300:88.100.1/ADMIN", fed.secret)
    recursive = fed.recursive
    assert recursive.udp(hc.resolution(handle)).values()[1][0][1] == b"https://example.org/one"
    second = [{"index": 1, "type": "URL", "data": "https://example.org/two"}]
    _put(fed.secondary.node, handle, second, "300:88.100.1/ADMIN", fed.secret)
    cached = recursive.udp(hc.resolution(handle, request_id=2))
    assert cached.values()[1][0][1] == b"https://example.org/one"
    fresh = recursive.udp(hc.resolution(handle, request_id=3, flags=wire.AUTH | wire.RECU))
    assert fresh.values()[1][0][1] == b"https://example.org/two"


# --- refusals ------------------------------------------------------------------------------


def test_bad_messages_are_refused_in_protocol_terms(fed: Federation) -> None:
    native = fed.secondary
    good = hc.resolution("88.100.1/ABC123", request_id=41)
    # A length that does not match the datagram: code 4.
    wrong = good[:16] + (len(good)).to_bytes(4, "big") + good[20:]
    assert native.udp(wrong).code == wire.RC_PROTOCOL_ERROR
    # A body cut short: code 4.
    short = bytearray(good[:-8])
    short[16:20] = (len(short) - 20).to_bytes(4, "big")
    assert native.tcp(bytes(short)).code == wire.RC_PROTOCOL_ERROR
    # Administration without a session is challenged (402; tests/e2e/test_handle_admin.py);
    # an opCode this server does not serve gets operation not supported (5).
    create = _vector("create_handle_request.bin")
    assert native.tcp(create).code == wire.RC_AUTHENTICATION_NEEDED
    home = wire.encode_request(wire.OC_HOME_NA, b"0.NA/88.100.9", request_id=43)
    assert native.tcp(home).code == wire.RC_AUTHENTICATION_NEEDED
    # Server-cipher key exchange (402) is not served (sessions are Diffie-Hellman).
    exchange = wire.encode_request(wire.OC_SESSION_EXCHANGEKEY, b"", body=b"", request_id=44)
    assert native.tcp(exchange).code == wire.RC_OPERATION_NOT_SUPPORTED
    # Not a handle: 102; a prefix homed nowhere: 301.
    assert native.udp(hc.resolution("88.100.1/\x01")).code == wire.RC_INVALID_HANDLE
    assert native.udp(hc.resolution("99.1/X")).code == wire.RC_SERVER_NOT_RESP
    # An oversized TCP message is answered 4 and the connection closed.
    with socket.create_connection((HOST, native.port), timeout=TIMEOUT) as sock:
        sock.sendall(good[:16] + (10**7).to_bytes(4, "big"))
        assert hc.read_tcp(sock).code == wire.RC_PROTOCOL_ERROR
        assert sock.recv(10) == b""
    # HTTP: not a message at all is a 400, never a 500.
    response = httpx.post(
        f"{native.node.base_url}/x",
        content=b"junk",
        headers={"content-type": "application/x-hdl-message"},
    )
    assert response.status_code == 400


def test_a_storm_of_mutated_packets_leaves_the_node_answering(fed: Federation) -> None:
    _put_example(fed, "ABC123")
    native = fed.secondary
    rng = random.Random(11)
    seeds = [hc.resolution("88.100.1/ABC123", request_id=i) for i in range(4)] + [
        _vector("prefix_lookup_request.bin"),
        _vector("create_handle_request.bin"),
    ]
    sent = 0
    deadline = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while sent < 3000 and time.monotonic() < deadline:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = data[: rng.randint(0, len(data))] + rng.randbytes(rng.randint(0, 8))
            try:
                sock.sendto(bytes(data), (HOST, native.port))
            except BlockingIOError:
                time.sleep(0.001)
            sent += 1
            if sent % 200 == 0:
                while True:  # drain answers so the socket buffer never fills
                    try:
                        sock.recv(65535)
                    except BlockingIOError:
                        break
    for _ in range(50):  # and over TCP, one connection each
        data = bytearray(rng.choice(seeds))
        data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:  # a length out of bounds, negative or huge
            data[16:20] = rng.choice(
                [b"\xff\xff\xff\xfe", b"\x7f\x00\x00\x00", b"\x00\x10\x00\x00"]
            )
        try:
            with socket.create_connection((HOST, native.port), timeout=TIMEOUT) as conn:
                conn.sendall(bytes(data))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(65535)
        except OSError:
            pass
    assert sent >= 1000
    assert native.udp(hc.resolution("88.100.1/ABC123", request_id=999)).code == 1
    assert native.tcp(hc.resolution("88.100.1/ABC123", request_id=998)).code == 1
    assert httpx.get(f"{native.node.base_url}/healthz", timeout=TIMEOUT).status_code == 200
    assert native.node.alive()
    assert "Traceback" not in native.node.log()


def test_a_write_reaches_native_answers_served_from_rendered_bytes(fed: Federation) -> None:
    """Asked again and again (the decode-free path of repeated requests), then written: the
    next answer, on either worker and door, has the new value."""
    handle = f"88.100.1/W-{uuid.uuid4().hex[:8]}"
    for url in ("https://example.org/before", "https://example.org/after"):
        values = [{"index": 1, "type": "URL", "data": url}]
        _put(fed.secondary.node, handle, values, "300:88.100.1/ADMIN", fed.secret)
        for n in range(6):
            for reply in (
                fed.secondary.udp(hc.resolution(handle, request_id=n + 1)),
                fed.secondary.tcp(hc.resolution(handle, request_id=n + 100)),
            ):
                assert reply.values()[1][0][1] == url.encode()
                assert reply.envelope.request_id in (n + 1, n + 100)


def test_a_request_in_several_udp_packets_is_reassembled(fed: Federation) -> None:
    handle = _put_example(fed, "ABC123")
    types = (*(f"NO_SUCH_TYPE_{n:03d}" for n in range(40)), "URL")
    request = hc.resolution(handle, request_id=515, types=types)
    packets = wire.udp_packets(request)
    assert len(packets) > 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        for packet in reversed(packets):  # any order
            sock.sendto(packet, (HOST, fed.secondary.port))
        reply = hc.parse(sock.recv(65535))
    assert reply.envelope.request_id == 515 and reply.code == 1
    assert [v.type for v, _ in reply.values()[1]] == ["URL"]
