"""The DNS front end of a running ``idis serve`` (IDIS_DNS), queried with dnspython and kdig.

One node on PostgreSQL and Redis homes 88.100.1 and delegates 88.100.1.7 to a site at
127.0.0.7; records are written over REST and read back over DNS (UDP and TCP).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
from conftest import StartNode
from nodeproc import NodeProcess

from nodes.federation import put_values, site_values
from nodes.processes import free_ports, run_cli
from resolver.codecs.dns_names import dns_name

ZONE = "idis.example"
TIMEOUT = 5.0
DELEGATED = "88.100.1.7"


@pytest.fixture(scope="module")
def node(node_factory: StartNode, pg_factory: Callable[[], str], redis_url: str) -> NodeProcess:
    port = free_ports(1)[0]
    started = node_factory(
        database_url=pg_factory(),
        redis_url=redis_url,
        extra_env={"IDIS_DNS": f"127.0.0.1:{port}", "IDIS_DNS_ZONE": ZONE},
    )
    secret_file = started.data_dir.parent / "holder-secret"
    secret_file.write_text("delegated-holder-secret\n", encoding="utf-8")
    run_cli(started.env, "prefix", "allocate", DELEGATED, "--secret-file", str(secret_file))
    values = site_values("http://127.0.0.7:8000", "enterprise node", derived=True)
    asyncio.run(
        put_values(
            [started.base_url],
            f"0.NA/{DELEGATED}",
            values,
            f"300:0.NA/{DELEGATED}",
            "delegated-holder-secret",
        )
    )
    return started


def dns_port(node: NodeProcess) -> int:
    return int(node.env["IDIS_DNS"].rpartition(":")[2])


def put(node: NodeProcess, handle: str, values: list[dict[str, Any]]) -> None:
    with node.client(auth=node.auth) as client:
        response = client.put(f"/api/handles/{handle}", json={"values": values})
    assert response.status_code in (200, 201), response.text


def url_value(index: int, url: str, type_: str = "URL") -> dict[str, Any]:
    return {"index": index, "type": type_, "data": {"format": "string", "value": url}}


def udp(node: NodeProcess, name: str, rdtype: str, **kwargs: Any) -> dns.message.Message:
    """The answer to one query over UDP, with EDNS (payload 1232) unless ``kwargs`` say."""
    kwargs.setdefault("use_edns", 0)
    kwargs.setdefault("payload", 1232)
    query = dns.message.make_query(name, rdtype, **kwargs)
    return dns.query.udp(query, "127.0.0.1", port=dns_port(node), timeout=TIMEOUT)


def tcp(node: NodeProcess, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.tcp(query, "127.0.0.1", port=dns_port(node), timeout=TIMEOUT)


def texts(response: dns.message.Message, rdtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(
        rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset
    )


def test_every_record_type_over_udp_and_tcp(node: NodeProcess) -> None:
    handle = "88.100.1/Pump-42"
    put(
        node,
        handle,
        [
            url_value(1, "https://example.com/p/42"),
            url_value(2, "https://example.com/manual", "URL.manual"),
            url_value(3, "maker: ACME", "DESC"),
        ],
    )
    name = dns_name(handle, ZONE)
    assert name == "pump-42._.1.100.88.idis.example."
    for ask in (udp, tcp):
        naptr = ask(node, name, "NAPTR")
        assert naptr.rcode() == dns.rcode.NOERROR and naptr.flags & dns.flags.AA
        assert texts(naptr, "NAPTR") == [
            '100 10 "U" "E2U+idis:URL" "!^.*$!https://example.com/p/42!" .',
            '100 11 "U" "E2U+idis:URL-manual" "!^.*$!https://example.com/manual!" .',
        ]
        assert texts(ask(node, name, "URI"), "URI") == [
            '10 1 "https://example.com/p/42"',
            '11 1 "https://example.com/manual"',
        ]
        txt = texts(ask(node, name, "TXT"), "TXT")
        assert '"3" "DESC" "maker: ACME"' in txt
        assert '"1" "URL" "https://example.com/p/42"' in txt
        every = ask(node, name, "ANY")
        assert {rrset.rdtype for rrset in every.answer} == {
            dns.rdatatype.NAPTR,
            dns.rdatatype.URI,
            dns.rdatatype.TXT,
        }
        # A type the identifier has no data of: no data, the SOA to cache that by.
        nodata = ask(node, name, "A")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_soa_and_ns_at_the_apex(node: NodeProcess) -> None:
    soa = udp(node, ZONE, "SOA")
    assert soa.flags & dns.flags.AA
    assert texts(soa, "SOA") == ["ns.idis.example. hostmaster.idis.example. 1 3600 600 86400 5"]
    ns = udp(node, ZONE, "NS")
    assert texts(ns, "NS") == ["ns.idis.example."]
    assert [rd.to_text() for rrset in ns.additional for rd in rrset] == ["127.0.0.1"]
    assert texts(udp(node, "ns." + ZONE, "A"), "A") == ["127.0.0.1"]


def test_unknown_names_are_nxdomain_with_the_soa(node: NodeProcess) -> None:
    for name in ("never-registered._.1.100.88.idis.example.", "a.b._.1.100.88.idis.example."):
        response = udp(node, name, "NAPTR")
        assert response.rcode() == dns.rcode.NXDOMAIN, name
        assert response.authority[0].rdtype == dns.rdatatype.SOA
        assert response.authority[0].name == dns.name.from_text(ZONE)
    # Names on the way to identifiers exist (RFC 8020): no data, not NXDOMAIN.
    for name in ("_.1.100.88.idis.example.", "100.88.idis.example.", "2.gtin.1.100.88.idis."):
        response = udp(node, name + ("example." if name.endswith("idis.") else ""), "TXT")
        assert response.rcode() == dns.rcode.NOERROR and not response.answer, name
    # Outside the zone this node is no authority.
    assert udp(node, "example.com.", "A").rcode() == dns.rcode.REFUSED


def test_names_are_case_insensitive_and_the_question_keeps_its_case(node: NodeProcess) -> None:
    put(node, "88.100.1/CaseTest", [url_value(1, "https://example.com/case")])
    lower = udp(node, "casetest._.1.100.88.idis.example.", "URI")
    for _ in range(2):  # the second comes from the wire cache
        mixed = udp(node, "CaSeTeSt._.1.100.88.IdIs.ExAmPlE.", "URI")
        assert texts(mixed, "URI") == texts(lower, "URI") == ['10 1 "https://example.com/case"']
        owner = mixed.answer[0].name.to_text()
        assert owner == "CaSeTeSt._.1.100.88.IdIs.ExAmPlE."  # 0x20: the client's own case


def test_oid_and_gtin_names(node: NodeProcess) -> None:
    put(node, "88.100.1/1.2.156.86", [url_value(1, "https://example.com/oid")])
    put(node, "88.100.1/09506000134352", [url_value(1, "https://example.com/gtin")])
    out = run_cli(node.env, "dns", "name", "88.100.1/09506000134352")
    assert out.strip() == "2.5.3.4.3.1.0.0.0.6.0.5.9.0.gtin.1.100.88.idis.example."
    gtin = udp(node, out.strip(), "URI")
    assert texts(gtin, "URI") == ['10 1 "https://example.com/gtin"']
    oid = udp(node, "86.156.2.1.oid.1.100.88.idis.example.", "URI")
    assert texts(oid, "URI") == ['10 1 "https://example.com/oid"']


def big_values(count: int) -> list[dict[str, Any]]:
    return [url_value(i, f"https://example.com/{'long' * 20}/{i}") for i in range(1, count + 1)]


def test_truncation_honours_the_payload_and_tcp_completes(node: NodeProcess) -> None:
    put(node, "88.100.1/BIG", big_values(7))  # ~1 kB of NAPTR: over 600, under 1232
    put(node, "88.100.1/HUGE", big_values(40))  # ~4 kB: over any UDP answer
    name, huge = dns_name("88.100.1/BIG", ZONE), dns_name("88.100.1/HUGE", ZONE)
    plain = udp(node, name, "NAPTR", use_edns=False)
    assert plain.flags & dns.flags.TC and not plain.answer
    edns = udp(node, name, "NAPTR", use_edns=0, payload=1232)
    assert not edns.flags & dns.flags.TC and len(texts(edns, "NAPTR")) == 7
    small = udp(node, name, "NAPTR", use_edns=0, payload=600)
    assert small.flags & dns.flags.TC
    for _ in range(2):  # again from the wire cache
        truncated = udp(node, huge, "NAPTR", use_edns=0, payload=4096)
        assert truncated.flags & dns.flags.TC and not truncated.answer
    query = dns.message.make_query(huge, "NAPTR", use_edns=0, payload=4096)
    answer, used_tcp = dns.query.udp_with_fallback(
        query, "127.0.0.1", port=dns_port(node), timeout=TIMEOUT
    )
    assert used_tcp and len(texts(answer, "NAPTR")) == 40


def test_delegated_prefixes_are_zone_cuts(node: NodeProcess) -> None:
    for name in (
        "anything._.7.1.100.88.idis.example.",
        "7.1.100.88.idis.example.",
        "_.7.1.100.88.idis.example.",
    ):
        response = udp(node, name, "NAPTR")
        assert response.rcode() == dns.rcode.NOERROR, name
        assert not response.flags & dns.flags.AA and not response.answer
        (ns,) = response.authority
        assert ns.rdtype == dns.rdatatype.NS
        assert ns.name == dns.name.from_text("7.1.100.88.idis.example.")
        assert [rd.to_text() for rd in ns] == ["ns1.7.1.100.88.idis.example."]
        glue = {
            (rrset.name.to_text(), rd.to_text()) for rrset in response.additional for rd in rrset
        }
        assert glue == {("ns1.7.1.100.88.idis.example.", "127.0.0.7")}


def test_a_write_is_seen_by_the_next_query(node: NodeProcess) -> None:
    handle = "88.100.1/Moving"
    name = dns_name(handle, ZONE)
    assert udp(node, name, "URI").rcode() == dns.rcode.NXDOMAIN
    put(node, handle, [url_value(1, "https://example.com/v1")])
    for _ in range(2):
        assert texts(udp(node, name, "URI"), "URI") == ['10 1 "https://example.com/v1"']
    put(node, handle, [url_value(1, "https://example.com/v2")])
    assert texts(udp(node, name, "URI"), "URI") == ['10 1 "https://example.com/v2"']
    assert texts(tcp(node, name, "URI"), "URI") == ['10 1 "https://example.com/v2"']
    with node.client(auth=node.auth) as client:
        assert client.delete(f"/api/handles/{handle}").status_code == 200
    assert udp(node, name, "URI").rcode() == dns.rcode.NXDOMAIN


def raw_udp(node: NodeProcess, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(data, ("127.0.0.1", dns_port(node)))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def header(qd: int = 1, flags: int = 0x0100, ident: int = 0xBEEF) -> bytes:
    return ident.to_bytes(2, "big") + flags.to_bytes(2, "big") + qd.to_bytes(2, "big") + bytes(6)


def test_malformed_queries_get_formerr_or_nothing(node: NodeProcess) -> None:
    question = dns.message.make_query("abc._.1.100.88.idis.example.", "TXT").to_wire()[12:]
    loop = b"\xc0\x0c\x00\x10\x00\x01"  # a name pointing at itself
    cases = {
        "pointer loop": (header() + loop, dns.rcode.FORMERR),
        "two questions": (header(qd=2) + question + question, dns.rcode.FORMERR),
        "count past the end": (header(qd=3) + question, dns.rcode.FORMERR),
        "label past the end": (header() + b"\x3fabc", dns.rcode.FORMERR),
        "trailing junk": (header() + question + b"junk", dns.rcode.FORMERR),
        "opcode 5 (update)": (header(flags=0x2800) + question, dns.rcode.NOTIMP),
        "short header": (b"\xbe\xef\x01", None),
        "a response": (header(flags=0x8100) + question, None),
        "empty": (b"", None),
    }
    for label, (data, rcode) in cases.items():
        answer = raw_udp(node, data)
        if rcode is None:
            assert answer is None, label
            continue
        assert answer is not None, label
        message = dns.message.from_wire(answer)
        assert (message.id, message.rcode()) == (0xBEEF, rcode), label
    rng = random.Random(13)
    for _ in range(300):
        raw_udp_nowait(node, rng.randbytes(rng.randrange(80)))
    # Still answering, over both transports (over UDP as clients do: asking again when a
    # datagram is lost, as one may be in the burst just sent on a loaded machine).
    assert udp_retrying(node, ZONE, "SOA").rcode() == dns.rcode.NOERROR
    assert tcp(node, ZONE, "SOA").rcode() == dns.rcode.NOERROR
    with socket.create_connection(("127.0.0.1", dns_port(node)), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x00\x05\x01\x02\x03\x04\x05")  # a framed message too short to be one
        sock.settimeout(TIMEOUT)
        assert sock.recv(100) == b""  # closed, not answered
    assert tcp(node, ZONE, "NS").rcode() == dns.rcode.NOERROR
    assert node.alive()
    assert "Traceback" not in node.log()


def udp_retrying(node: NodeProcess, name: str, rdtype: str) -> dns.message.Message:
    """One query over UDP as a resolver asks it: a datagram that does not answer this question
    is dropped (a late answer to the junk just sent may reach a socket that reused its port),
    and the question is asked again when the answer is lost."""
    query = dns.message.make_query(name, rdtype)
    for _ in range(2):
        try:
            return dns.query.udp(
                query, "127.0.0.1", port=dns_port(node), timeout=TIMEOUT, ignore_errors=True
            )
        except dns.exception.Timeout:
            continue
    return dns.query.udp(
        query, "127.0.0.1", port=dns_port(node), timeout=TIMEOUT, ignore_errors=True
    )


def raw_udp_nowait(node: NodeProcess, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", dns_port(node)))


def test_kdig_reads_the_answers(node: NodeProcess) -> None:
    kdig = shutil.which("kdig")
    assert kdig, "kdig is installed by scripts/test-deps.sh (knot-dnsutils)"
    put(node, "88.100.1/KDIG", [url_value(1, "https://example.com/kdig")])
    name = dns_name("88.100.1/KDIG", ZONE)
    for transport in ("+notcp", "+tcp"):
        out = subprocess.run(
            [kdig, "@127.0.0.1", "-p", str(dns_port(node)), transport, "+short", name, "NAPTR"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert out.strip() == '100 10 "U" "E2U+idis:URL" "!^.*$!https://example.com/kdig!" .'


def test_rest_and_dns_answer_the_same_record(node: NodeProcess) -> None:
    put(node, "88.100.1/Same", [url_value(1, "https://example.com/same")])
    rest = httpx.get(f"{node.base_url}/api/handles/88.100.1/Same", timeout=TIMEOUT).json()
    urls = [v["data"]["value"] for v in rest["values"] if v["type"] == "URL"]
    dns_urls = [
        t.split('"')[1] for t in texts(udp(node, dns_name("88.100.1/Same", ZONE), "URI"), "URI")
    ]
    assert urls == dns_urls == ["https://example.com/same"]


def test_the_recursive_role_answers_what_its_walk_found(
    node: NodeProcess, node_factory: StartNode
) -> None:
    """A recursive node (two workers sharing the DNS port) whose walk starts at ``node``."""
    put(node, "88.100.1/Walked", [url_value(1, "https://example.com/walked")])
    recursive = node_factory(
        init=False,
        workers=2,
        extra_env={
            "IDIS_ROLE": "recursive",
            "IDIS_FEDERATION__TOP_LEVEL": json.dumps([node.base_url]),
            "IDIS_DNS": f"127.0.0.1:{free_ports(1)[0]}",
            "IDIS_DNS_ZONE": ZONE,
        },
    )
    name = dns_name("88.100.1/Walked", ZONE)
    for _ in range(4):  # the kernel spreads these over both workers
        walked = udp(recursive, name, "URI")
        assert walked.flags & dns.flags.RA and not walked.flags & dns.flags.AA
        assert texts(walked, "URI") == ['10 1 "https://example.com/walked"']
        assert texts(tcp(recursive, name, "URI"), "URI") == ['10 1 "https://example.com/walked"']
    missing = udp(recursive, dns_name("88.100.1/Not-There", ZONE), "URI")
    assert missing.rcode() == dns.rcode.NXDOMAIN
