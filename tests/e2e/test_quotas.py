"""Quotas (603 daily resolutions, 604 registrations, 605 prefixes) on a real node: PostgreSQL,
with Redis and without (resolutions then counted in the database), two workers, small limits
through the settings; each answered on REST, SNMS, and (for resolutions) the native protocol
over HTTP.  The tests run in file order: resolutions last, since the day's count of the prefix
only grows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from conftest import StartNode
from nodeproc import NodeProcess

from loadtests import handle_client as hc

PREFIX = "88.200"
REGISTRATIONS = 6
RESOLUTIONS = 40


@pytest.fixture(scope="module", params=["redis", "database"])
def node(
    request: pytest.FixtureRequest, node_factory: StartNode, pg_factory: Any, redis_url: str
) -> Iterator[NodeProcess]:
    """The node counting resolutions in Redis, then one counting them in PostgreSQL."""
    name = f"e2e-quota-{uuid.uuid4().hex[:8]}"
    node = node_factory(
        database_url=pg_factory(),
        redis_url=redis_url if request.param == "redis" else None,
        workers=2,
        prefix=PREFIX,
        extra_env={
            "IDIS_NAME": name,
            "IDIS_QUOTA__REGISTRATIONS_PER_PREFIX": str(REGISTRATIONS),
            "IDIS_QUOTA__PREFIXES_PER_IDENTITY": "1",
            "IDIS_QUOTA__RESOLUTIONS_PER_PREFIX": str(RESOLUTIONS),
            "IDIS_QUOTA__FLUSH_SECONDS": "0.2",
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


def test_prefixes_stop_at_the_quota(node: NodeProcess, bearer: dict[str, str]) -> None:
    first = put(node, f"0.NA/{PREFIX}.1")
    assert first.status_code == 201, first.text
    second = put(node, f"0.NA/{PREFIX}.2")
    assert second.status_code == 429 and second.json()["responseCode"] == 605
    by_snms = snms_create(node, bearer, f"0.NA/{PREFIX}.3")
    assert by_snms.status_code == 429 and by_snms.json()["code"] == 605


def test_resolutions_stop_at_the_daily_quota_on_every_door(
    node: NodeProcess, bearer: dict[str, str]
) -> None:
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
    # Never refused early: a worker's view of the day's count never exceeds the true count
    # (the first test read one identifier of the prefix).  Late by at most what the workers
    # served between two flushes (the allowance).
    assert RESOLUTIONS - 1 <= served <= 4 * RESOLUTIONS, served
    # The other worker learns the day's count at its next flush (0.2 s): then every door of
    # every worker refuses.
    time.sleep(1.5)
    detail = fresh(
        node, "GET", "/identityv2/data/detail", params={"handle": f"{PREFIX}/ADMIN"}, headers=bearer
    )
    assert detail.status_code == 429 and detail.json()["code"] == 603
    native = hc.http(node.base_url, f"{PREFIX}/ADMIN", hc.resolution(f"{PREFIX}/ADMIN"))
    assert native.code == 603, native.message()
    assert fresh(node, "GET", f"/api/handles/{PREFIX}/ADMIN").status_code == 429
    proxied = fresh(node, "GET", f"/{PREFIX}/ADMIN?noredirect")  # the web proxy
    assert proxied.status_code == 429 and proxied.json()["responseCode"] == 603
    # Every refusal is in the metrics, whichever door (the first REST one, and four more).
    time.sleep(1.5)  # both workers' snapshots written (nodes.metrics.FLUSH_INTERVAL)
    metrics = fresh(node, "GET", "/metrics").text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('idis_quota_refusals_total{code="603"}')
    ]
    assert counted and counted[0] >= 5, counted
