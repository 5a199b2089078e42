"""Throttled authentication and rationed anonymous work on a real node: PostgreSQL, Redis,
two worker processes (the counts are shared through Redis, so the limits hold whichever
worker answers), small limits set through the settings."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from conftest import StartNode
from nodeproc import NodeProcess, basic_auth

FEDERATION_SECRET = "throttle-federation-secret"
VICTIM = "88/VICTIM"
VICTIM_SECRET = "victim-pass-phrase"
STRANGER = "88/STRANGER"
STRANGER_SECRET = "stranger-pass-phrase"


@pytest.fixture(scope="module")
def node(node_factory: StartNode, pg_factory: Any, redis_url: str) -> Iterator[NodeProcess]:
    name = f"e2e-throttle-{uuid.uuid4().hex[:8]}"
    node = node_factory(
        database_url=pg_factory(),
        redis_url=redis_url,
        workers=2,
        prefix="88",
        extra_env={
            "IDIS_NAME": name,
            "IDIS_ROLE": "top-level",
            "IDIS_FEDERATION__SECRET": FEDERATION_SECRET,
            "IDIS_THROTTLE__IDENTITY": "3/minute",
            "IDIS_THROTTLE__SOURCE": "40/minute",
            "IDIS_THROTTLE__APPLY_SOURCE": "7/minute",
            "IDIS_THROTTLE__APPLY_PREFIX": "4/minute",
            "IDIS_THROTTLE__PENDING_APPLICATIONS": "3",
        },
    )
    with node.client(auth=node.auth) as client:
        for handle, secret in ((VICTIM, VICTIM_SECRET), (STRANGER, STRANGER_SECRET)):
            values = [{"index": 300, "type": "HS_SECKEY", "data": secret}]
            assert client.put(f"/api/handles/{handle}", json=values).status_code == 201
    yield node
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"idis:{node.env['IDIS_NAME']}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def fresh(node: NodeProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own, so the two workers share the traffic."""
    with node.client(headers={"connection": "close"}) as client:
        return client.request(method, path, **kwargs)


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["responseCode"] == 3 and "retry after" in body["message"]


def test_failed_logins_are_throttled_per_identity(node: NodeProcess) -> None:
    wrong = basic_auth(f"300:{VICTIM}", "not-the-pass-phrase")
    for _ in range(3):
        assert fresh(node, "DELETE", f"/api/handles/{VICTIM}", auth=wrong).status_code == 403
    # The fourth attempt is refused whichever worker gets it, the right secret included, and on
    # the resolution path too.
    right = basic_auth(f"300:{VICTIM}", VICTIM_SECRET)
    for _ in range(4):
        assert_throttled(fresh(node, "PUT", f"/api/handles/{VICTIM}", json=[], auth=right))
        assert_throttled(fresh(node, "GET", f"/api/handles/{VICTIM}", auth=wrong))
    # The administrator, another identity, is not affected.
    assert fresh(node, "GET", f"/api/handles/{VICTIM}", auth=node.auth).status_code == 200
    lines = re.findall(r"throttled identity 88/VICTIM", node.log())
    assert 1 <= len(lines) <= 2, node.log()  # once per episode (per worker at most)


def test_operational_routes_need_an_operator(node: NodeProcess) -> None:
    for path in ("/api/stats", "/api/replication/status"):
        anonymous = fresh(node, "GET", path)
        assert anonymous.status_code == 401 and anonymous.json()["responseCode"] == 402
        stranger = basic_auth(f"300:{STRANGER}", STRANGER_SECRET)
        assert fresh(node, "GET", path, auth=stranger).status_code == 403
        assert fresh(node, "GET", path, auth=node.auth).status_code == 200
        federation = ("federation", FEDERATION_SECRET)
        assert fresh(node, "GET", path, auth=federation).status_code == 200
    stats = fresh(node, "GET", "/api/stats", auth=node.auth).json()
    assert set(stats["throttle"]["identity"]) == {"counted", "refused"}


def test_a_weak_secret_is_refused(node: NodeProcess) -> None:
    values = [{"index": 300, "type": "HS_SECKEY", "data": "secret"}]
    response = fresh(node, "PUT", "/api/handles/88/WEAK", json=values, auth=node.auth)
    assert response.status_code == 400, response.text
    assert response.json()["responseCode"] == 202
    assert "at least 12 characters" in response.json()["message"]
    assert fresh(node, "GET", "/api/handles/88/WEAK").status_code == 404


def apply(node: NodeProcess, prefix: str, **extra: str) -> httpx.Response:
    body = {"prefix": prefix, "name": f"Enterprise {prefix}", **extra}
    return fresh(node, "POST", "/api/prefix-applications", json=body)


def test_anonymous_applications_are_rationed(node: NodeProcess) -> None:
    ids = []
    for prefix in ("88.1", "88.2", "88.3"):
        response = apply(node, prefix)
        assert response.status_code == 201, response.text
        ids.append(response.json()["application"]["id"])
    assert_throttled(apply(node, "88.4"))  # three pending under 88: the queue is full
    decided = fresh(node, "POST", f"/api/prefix-applications/{ids[0]}/reject", auth=node.auth)
    assert decided.status_code == 200, decided.text
    assert apply(node, "88.4").status_code == 201  # room again: the fourth under 88
    assert_throttled(apply(node, "88.5"))  # four under 88 in a minute
    # The seventh attempt from this address in a minute (88.6 is not homed here); the eighth
    # is refused before its secret would be hashed.
    assert apply(node, "88.6.1", secret="enterprise-pass-phrase").status_code == 400
    assert_throttled(apply(node, "77.1", secret="enterprise-pass-phrase"))
