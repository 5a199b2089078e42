"""One registry, every door (issue 13 item 3): a record written once through REST reads the same
through REST, the web proxy, the native Handle protocol (TCP, UDP and HTTP), DNS and GS1
Digital Link, and every door sees each update right after the write.

The node runs two workers, each with caches of its own, on PostgreSQL with Redis, so a door
that kept a stale answer anywhere would show it within the reads after a write.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
from nodeproc import NodeProcess

from loadtests import handle_client as hc
from nodes.processes import free_ports
from resolver.codecs.dns_names import dns_name

PREFIX = "88.100.1"
ZONE = "doors.idis.test"
HOST = "127.0.0.1"
TIMEOUT = 10.0
READS_AFTER_WRITE = 6
"""Reads of each door after a write: with two workers, enough to reach both."""


def gtin() -> str:
    """A fresh GTIN-14 (indicator 0, random digits, its mod-10 check digit written out here)."""
    body = "0952" + "".join(random.choices("0123456789", k=9))
    odd = sum(int(d) for d in body[::-1][0::2])
    even = sum(int(d) for d in body[::-1][1::2])
    return body + str((10 - (3 * odd + even) % 10) % 10)


@pytest.fixture(scope="module")
def node(node_factory: Any, pg_factory: Any, redis_url: str) -> NodeProcess:
    dns_port, handle_port = free_ports(2)
    started: NodeProcess = node_factory(
        database_url=pg_factory(),
        redis_url=redis_url,
        workers=2,
        prefix=PREFIX,
        extra_env={
            "IDIS_GS1__PREFIX": PREFIX,
            "IDIS_DNS": f"{HOST}:{dns_port}",
            "IDIS_DNS_ZONE": ZONE,
            "IDIS_HANDLE": f"{HOST}:{handle_port}",
        },
    )
    return started


@pytest.fixture
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with node.client() as client:
        yield client


def _port(node: NodeProcess, setting: str) -> int:
    return int(node.env[setting].rpartition(":")[2])


def _native_url(reply: hc.Reply) -> str:
    assert reply.code == 1, reply.message()
    _, values = reply.values()
    data = next(v.data for v, _ in values if v.type == "URL")
    # The wire carries bytes: the decoder gives them as base64 unless they are a known format.
    return base64.b64decode(data.value).decode() if data.format == "base64" else str(data.value)


def _dns_uri(node: NodeProcess, handle: str) -> str:
    query = dns.message.make_query(dns_name(handle, ZONE), dns.rdatatype.URI)
    answer = dns.query.udp(query, HOST, port=_port(node, "IDIS_DNS"), timeout=TIMEOUT)
    targets = [rdata.target.decode() for rrset in answer.answer for rdata in rrset]
    assert len(targets) == 1, answer
    return targets[0]


def _location(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.headers["location"]


def doors(node: NodeProcess, http: httpx.Client, handle: str, gs1_path: str) -> dict[str, str]:
    """The URL each door says ``handle`` points at."""
    values = http.get(f"/api/handles/{handle}").json()["values"]
    native_port = _port(node, "IDIS_HANDLE")
    request = hc.resolution(handle, request_id=random.randrange(1, 2**31))
    return {
        "rest": next(v["data"]["value"] for v in values if v["type"] == "URL"),
        "proxy": _location(http.get(f"/{quote(handle)}"), 302),
        "gs1": _location(http.get(gs1_path), 307),
        "native_tcp": _native_url(hc.tcp(HOST, native_port, request, TIMEOUT)),
        "native_udp": _native_url(hc.udp(HOST, native_port, request, TIMEOUT)),
        "native_http": _native_url(hc.http(node.base_url, handle, request, TIMEOUT)),
        "dns": _dns_uri(node, handle),
    }


def test_one_record_reads_the_same_through_every_door_after_each_write(
    node: NodeProcess, http: httpx.Client
) -> None:
    gs1_path = f"/01/{gtin()}"
    handle = PREFIX + gs1_path
    for version in ("v1", "v2", "v3"):
        target = f"https://brand.example/product/{version}"
        values = [
            {"index": 1, "type": "URL", "data": target},
            {"index": 2, "type": "GS1.defaultLink", "data": target},
        ]
        written = http.put(f"/api/handles/{handle}", json={"values": values}, auth=node.auth)
        assert written.status_code in (200, 201), written.text
        for _ in range(READS_AFTER_WRITE):
            seen = doors(node, http, handle, gs1_path)
            assert seen == dict.fromkeys(seen, target), seen


def test_a_deleted_record_is_gone_at_every_door(node: NodeProcess, http: httpx.Client) -> None:
    gs1_path = f"/01/{gtin()}"
    handle = PREFIX + gs1_path
    target = "https://brand.example/product/gone"
    values = [
        {"index": 1, "type": "URL", "data": target},
        {"index": 2, "type": "GS1.defaultLink", "data": target},
    ]
    assert http.put(f"/api/handles/{handle}", json={"values": values}, auth=node.auth).is_success
    assert doors(node, http, handle, gs1_path)["dns"] == target  # cached at some doors now
    assert http.delete(f"/api/handles/{handle}", auth=node.auth).status_code == 200

    native_port = _port(node, "IDIS_HANDLE")
    for _ in range(READS_AFTER_WRITE):
        assert http.get(f"/api/handles/{handle}").status_code == 404
        assert http.get(f"/{quote(handle)}").status_code == 404
        assert http.get(gs1_path).status_code == 404
        request = hc.resolution(handle, request_id=random.randrange(1, 2**31))
        assert hc.tcp(HOST, native_port, request, TIMEOUT).code == 100
        assert hc.udp(HOST, native_port, request, TIMEOUT).code == 100
        query = dns.message.make_query(dns_name(handle, ZONE), dns.rdatatype.URI)
        answer = dns.query.udp(query, HOST, port=_port(node, "IDIS_DNS"), timeout=TIMEOUT)
        assert answer.rcode() == dns.rcode.NXDOMAIN
