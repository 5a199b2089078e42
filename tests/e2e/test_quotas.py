"""Quotas (603 daily resolutions, 604 registrations, 605 prefixes) on a real node: PostgreSQL,
with Redis and without (resolutions then counted in the database), two workers, small limits
through the settings; each answered on every door that can meet it: REST, batch, SNMS (one
and batch), the native protocol (UDP, TCP and over HTTP; creation too), GS1 (HTTP 429, the
code in the body) and DNS (REFUSED: DNS has no code for a quota).  A second ``idis serve``
process on the same database (and Redis) shows the day's count shared across hosts.  The
tests run in file order: resolutions last, since the day's count of the prefix only grows.

(605 through enterprise approvals: tests/test_enterprise.py, which has the top level it
needs.)"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest
import redis
from conftest import StartNode
from nodeproc import NodeProcess
from test_handle_admin import administer, secret_answer, url
from test_handle_admin import request as native_request
from test_templates import import_file

from loadtests import handle_client as hc
from nodes.processes import free_ports
from resolver.codecs import handle_admin as admin
from resolver.codecs import handle_wire as wire
from resolver.codecs.dns_names import dns_name
from resolver.values import Ref

PREFIX = "88.200"
REGISTRATIONS = 6
RESOLUTIONS = 40
ZONE = "idis.example"
GTIN = "09506000134352"
DEADLINE = 15.0
"""Seconds a refusal may take to reach every worker and host (flushes every 0.2 s)."""


def quota_env(name: str) -> dict[str, str]:
    """The settings of every process of one node: its name (which keys its Redis counters)
    and small limits."""
    return {
        "IDIS_NAME": name,
        "IDIS_QUOTA__REGISTRATIONS_PER_PREFIX": str(REGISTRATIONS),
        "IDIS_QUOTA__PREFIXES_PER_IDENTITY": "1",
        "IDIS_QUOTA__RESOLUTIONS_PER_PREFIX": str(RESOLUTIONS),
        "IDIS_QUOTA__FLUSH_SECONDS": "0.2",
    }


@pytest.fixture(scope="module", params=["redis", "database"])
def node(
    request: pytest.FixtureRequest, node_factory: StartNode, pg_factory: Any, redis_url: str
) -> Iterator[NodeProcess]:
    """The node counting resolutions in Redis, then one counting them in PostgreSQL; it serves
    the native protocol, DNS and GS1 too."""
    name = f"e2e-quota-{uuid.uuid4().hex[:8]}"
    native, dns_port = free_ports(2)
    node = node_factory(
        database_url=pg_factory(),
        redis_url=redis_url if request.param == "redis" else None,
        workers=2,
        prefix=PREFIX,
        extra_env={
            **quota_env(name),
            "IDIS_HANDLE": f"127.0.0.1:{native}",
            "IDIS_DNS": f"127.0.0.1:{dns_port}",
            "IDIS_DNS_ZONE": ZONE,
            "IDIS_GS1__PREFIX": PREFIX,
        },
    )
    yield node
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"idis:{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def bearer(node: NodeProcess) -> dict[str, str]:
    body = {"username": node.identity, "password": node.secret}
    answer = httpx.post(f"{node.base_url}/identity/token", json=body, timeout=30).json()
    assert answer["status"] == 1, answer
    return {"Authorization": f"Bearer {answer['data']['token']}"}


def fresh(node: NodeProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with node.client(headers={"connection": "close"}) as client:
        return client.request(method, path, **kwargs)


def put(node: NodeProcess, handle: str) -> httpx.Response:
    values = [{"index": 1, "type": "URL", "data": f"https://q/{handle}"}]
    return fresh(node, "PUT", f"/api/handles/{handle}", json=values, auth=node.auth)


def snms_create(node: NodeProcess, bearer: dict[str, str], handle: str) -> httpx.Response:
    value = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://s"}}
    item = {"handle": handle, "value": [value]}
    return fresh(node, "POST", "/identityv2/data", json=item, headers=bearer)


def test_registrations_stop_at_the_quota_on_every_door(
    node: NodeProcess, bearer: dict[str, str]
) -> None:
    for n in range(REGISTRATIONS - 2):
        assert put(node, f"{PREFIX}/r{n}").status_code == 201
    for n in range(REGISTRATIONS - 2, REGISTRATIONS):
        assert snms_create(node, bearer, f"{PREFIX}/r{n}").json()["status"] == 1
    refused = put(node, f"{PREFIX}/over")
    assert refused.status_code == 429 and refused.json()["responseCode"] == 604
    by_snms = snms_create(node, bearer, f"{PREFIX}/over")
    assert by_snms.status_code == 429
    assert by_snms.json()["status"] == -2 and by_snms.json()["code"] == 604
    batch = {"handles": [{"handle": f"{PREFIX}/b{n}", "values": []} for n in range(2)]}
    for item in batch["handles"]:
        item["values"] = [{"index": 1, "type": "URL", "data": "https://b"}]
    results = fresh(node, "POST", "/api/batch", json=batch, auth=node.auth).json()["results"]
    assert [r["responseCode"] for r in results] == [604, 604]
    # Changing what exists is no registration; deleting frees one.
    assert put(node, f"{PREFIX}/r0").status_code == 200
    assert fresh(node, "DELETE", f"/api/handles/{PREFIX}/r1", auth=node.auth).status_code == 200
    assert put(node, f"{PREFIX}/over").status_code == 201
    assert put(node, f"{PREFIX}/over-2").status_code == 429
    assert fresh(node, "GET", f"/api/handles/{PREFIX}/over-2").status_code == 404
    # The quota is full again: an SNMS batch and a native creation are refused too.
    value = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://s"}}
    batch = [{"handle": f"{PREFIX}/sb{n}", "value": [value]} for n in range(2)]
    answer = fresh(node, "POST", "/identityv2/data/batchCreate", json=batch, headers=bearer)
    results = answer.json()["data"]["results"]
    assert [(r["status"], r["code"]) for r in results] == [(-2, 604), (-2, 604)], results
    create = native_request(wire.OC_CREATE_HANDLE, f"{PREFIX}/native", (url(1, "https://n"),))
    identity = Ref(f"{PREFIX}/ADMIN", 300)
    answer_with = secret_answer(node.secret, admin.MAC_HMAC_SHA1, identity)
    created = administer(lambda m: hc.http(node.base_url, "", m), create, answer_with)
    assert created.code == 604, created.message()
    for handle in (f"{PREFIX}/sb0", f"{PREFIX}/native"):
        assert fresh(node, "GET", f"/api/handles/{handle}").status_code == 404


def test_prefixes_stop_at_the_quota(node: NodeProcess, bearer: dict[str, str]) -> None:
    first = put(node, f"0.NA/{PREFIX}.1")
    assert first.status_code == 201, first.text
    second = put(node, f"0.NA/{PREFIX}.2")
    assert second.status_code == 429 and second.json()["responseCode"] == 605
    by_snms = snms_create(node, bearer, f"0.NA/{PREFIX}.3")
    assert by_snms.status_code == 429 and by_snms.json()["code"] == 605


def test_an_import_counts_what_it_loads(node: NodeProcess, tmp_path: Any) -> None:
    """``idis import`` is not refused (the operator's bulk load), but its handles count: the
    prefix holds more than its quota now, and deleting one of them gives back nothing that
    makes room."""
    source = tmp_path / "over.jsonl"
    lines = [
        json.dumps(
            {
                "handle": f"{PREFIX}/imp{n}",
                "values": [{"index": 1, "type": "URL", "data": "https://i"}],
            }
        )
        for n in range(2)
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = import_file(node, source)
    assert "loaded 2" in done.stdout, (done.stdout, done.stderr)
    assert f"prefix {PREFIX} now holds" in done.stderr and "(604)" in done.stderr, done.stderr
    assert fresh(node, "DELETE", f"/api/handles/{PREFIX}/imp0", auth=node.auth).status_code == 200
    refused = put(node, f"{PREFIX}/after-import")
    assert refused.status_code == 429 and refused.json()["responseCode"] == 604


def dns_query(node: NodeProcess, handle: str, *, tcp: bool = False) -> dns.message.Message:
    port = int(node.env["IDIS_DNS"].rpartition(":")[2])
    query = dns.message.make_query(dns_name(handle, ZONE), "URI", use_edns=0, payload=1232)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=5.0)


def native(node: NodeProcess, handle: str, *, tcp: bool = False) -> hc.Reply:
    port = int(node.env["IDIS_HANDLE"].rpartition(":")[2])
    send = hc.tcp if tcp else hc.udp
    return send("127.0.0.1", port, hc.resolution(handle), 5.0)


def gs1(node: NodeProcess, gtin: str) -> httpx.Response:
    return fresh(node, "GET", f"/01/{gtin}", follow_redirects=False)


def until(refused: Callable[[], bool], what: str) -> None:
    """Poll ``refused`` until it holds, for at most :data:`DEADLINE` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not refused():
        assert time.monotonic() < deadline, f"{what}: still served after {DEADLINE} s"
        time.sleep(0.05)


def test_resolutions_stop_at_the_daily_quota_on_every_door(
    node: NodeProcess, bearer: dict[str, str]
) -> None:
    handle = f"{PREFIX}/r0"
    # Each door answers (and caches) before the day is spent; each read counts.
    warm = [
        dns_query(node, handle).rcode() == dns.rcode.NOERROR,
        dns_query(node, handle).rcode() == dns.rcode.NOERROR,  # the UDP hot path
        dns_query(node, handle, tcp=True).rcode() == dns.rcode.NOERROR,
        native(node, handle).code == 1,
        native(node, handle, tcp=True).code == 1,
        gs1(node, GTIN).status_code == 404,
        gs1(node, GTIN).status_code == 404,  # the GS1 front's kept answer
    ]
    assert all(warm), warm
    read_before = len(warm) + 3  # and the three GETs of the registrations test
    served = 0
    refused: httpx.Response | None = None
    for _ in range(10 * RESOLUTIONS):  # bounded: the allowance is a fraction of this
        response = fresh(node, "GET", f"/api/handles/{PREFIX}/ADMIN")
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 200
        served += 1
    assert refused is not None, f"{served} resolutions and no refusal"
    assert refused.json()["responseCode"] == 603
    # Never refused early: a worker's view of the day's count never exceeds the true count.
    # Late by at most what the workers served between two flushes (the allowance).
    assert RESOLUTIONS <= read_before + served <= 4 * RESOLUTIONS, served
    # The other worker learns the day's count at its next flush: then every door of every
    # worker refuses, cached answers included.
    detail = {"handle": f"{PREFIX}/ADMIN"}

    def snms_refuses() -> bool:
        answer = fresh(node, "GET", "/identityv2/data/detail", params=detail, headers=bearer)
        return answer.status_code == 429 and answer.json()["code"] == 603

    def native_http_refuses() -> bool:
        return hc.http(node.base_url, handle, hc.resolution(handle)).code == 603

    until(snms_refuses, "SNMS detail")
    until(native_http_refuses, "native over HTTP")
    until(lambda: native(node, handle).code == 603, "native over UDP")
    until(lambda: native(node, handle, tcp=True).code == 603, "native over TCP")
    until(lambda: fresh(node, "GET", f"/api/handles/{handle}").status_code == 429, "REST")
    for gtin in (GTIN, "09506000134369"):  # a kept answer, and one never read
        until(lambda gtin=gtin: gs1(node, gtin).status_code == 429, f"GS1 {gtin}")
        body = gs1(node, gtin).json()
        assert body["code"] == 603 and "quota" in body["message"], body
    other = f"{PREFIX}/r2"  # a name DNS never answered
    for name, tcp in ((handle, False), (handle, True), (other, False)):
        until(
            lambda name=name, tcp=tcp: dns_query(node, name, tcp=tcp).rcode() == dns.rcode.REFUSED,
            f"DNS {name} ({'TCP' if tcp else 'UDP'})",
        )
    stats = fresh(node, "GET", "/api/stats", auth=node.auth).json()
    assert stats["quota_refused"].get("603", 0) > 0, stats
    proxied = fresh(node, "GET", f"/{PREFIX}/ADMIN?noredirect")  # the web proxy
    assert proxied.status_code == 429 and proxied.json()["responseCode"] == 603

    def refusals_in_metrics() -> float:
        """``idis_quota_refusals_total{code="603"}``, summed over both workers' snapshots."""
        metrics = fresh(node, "GET", "/metrics").text
        prefix = 'idis_quota_refusals_total{code="603"}'
        return sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines() if x.startswith(prefix))

    # Every refusal is in the metrics, whichever door refused it.
    until(lambda: refusals_in_metrics() >= 5, "refusals in /metrics")


def test_the_day_is_counted_across_hosts(
    node: NodeProcess, node_factory: StartNode, redis_url: str
) -> None:
    """A second ``idis serve`` (another host of the same node: its name, database and Redis):
    resolutions on both count against one day, in Redis or, without it, the database."""
    other = node_factory(
        database_url=node.env["IDIS_DATABASE_URL"],
        redis_url=node.env.get("IDIS_REDIS_URL"),
        prefix=PREFIX,
        secret=node.secret,
        init=False,
        extra_env=quota_env(node.env["IDIS_NAME"]),
    )
    # Identifiers of a prefix no one read today (not homed here: 400, code 301, counted all
    # the same).
    handle = f"/api/handles/88.201.{uuid.uuid4().int % 10**6}/x"
    served = 0
    for _ in range(10 * RESOLUTIONS):  # bounded
        status = fresh(node, "GET", handle).status_code
        if status == 429:
            break
        assert status == 400
        served += 1
    assert RESOLUTIONS <= served <= 4 * RESOLUTIONS, served
    # The other host read nothing of that prefix: counting alone, it would serve a whole
    # day's quota.  It serves what it reads before its first flush learns the day's total.
    on_other = 0
    deadline = time.monotonic() + DEADLINE
    while fresh(other, "GET", handle).status_code != 429:
        assert time.monotonic() < deadline, f"{on_other} served and no refusal"
        on_other += 1
        time.sleep(0.05)
    assert on_other < RESOLUTIONS // 2, on_other


# --- per identity ---------------------------------------------------------------------------

PER_IDENTITY = 5


@pytest.fixture(scope="module")
def counted_node(node_factory: StartNode, pg_factory: Any) -> NodeProcess:
    """One worker counting per identity only, in the database (no Redis)."""
    return node_factory(
        database_url=pg_factory(),
        prefix="88.202",
        extra_env={
            "IDIS_QUOTA__RESOLUTIONS_PER_IDENTITY": str(PER_IDENTITY),
            "IDIS_QUOTA__REGISTRATIONS_PER_IDENTITY": str(PER_IDENTITY),
            "IDIS_QUOTA__FLUSH_SECONDS": "0.2",
        },
    )


def test_an_identity_spends_its_own_quotas(counted_node: NodeProcess) -> None:
    node = counted_node
    answer = fresh(
        node, "POST", "/identity/token", json={"username": node.identity, "password": node.secret}
    ).json()
    bearer = {"Authorization": f"Bearer {answer['data']['token']}"}
    # Registrations: what the identity created, on any door; deleting gives nothing back.
    for n in range(PER_IDENTITY - 1):
        assert put(node, f"88.202/i{n}").status_code == 201
    assert snms_create(node, bearer, "88.202/i-snms").json()["status"] == 1
    assert fresh(node, "DELETE", "/api/handles/88.202/i0", auth=node.auth).status_code == 200
    refused = put(node, "88.202/i-over")
    assert refused.status_code == 429 and refused.json()["responseCode"] == 604
    assert node.identity in refused.json()["message"]
    by_snms = snms_create(node, bearer, "88.202/i-over").json()
    assert (by_snms["status"], by_snms["code"]) == (-2, 604)
    # Resolutions: the identity's authenticated reads (one worker: exactly its quota);
    # anonymous reads are no one's and go on.
    served = 0
    for _ in range(4 * PER_IDENTITY):  # bounded
        response = fresh(node, "GET", "/api/handles/88.202/i1", auth=node.auth)
        if response.status_code == 429:
            assert response.json()["responseCode"] == 603
            assert node.identity in response.json()["message"]
            break
        assert response.status_code == 200
        served += 1
    assert served == PER_IDENTITY
    detail = fresh(
        node, "GET", "/identityv2/data/detail", params={"handle": "88.202/i1"}, headers=bearer
    )
    assert detail.status_code == 429 and detail.json()["code"] == 603
    assert fresh(node, "GET", "/api/handles/88.202/i1").status_code == 200
