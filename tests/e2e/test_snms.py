"""The SNMS API and scoped API tokens through a real ``idis serve`` on PostgreSQL, two workers
(so a token issued by one worker is honoured, and revoked, on the other).

The same records are read back through the REST API: SNMS is one more door to one registry.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import StartNode
from nodeproc import NodeProcess, basic_auth

from nodes.processes import CliFailed, run_cli

PREFIX = "88.100"
OTHER = f"{PREFIX}/OTHER"
OTHER_SECRET = "other-pass-phrase-long"


@pytest.fixture(scope="module")
def node(node_factory: StartNode, pg_factory: Any) -> NodeProcess:
    node = node_factory(database_url=pg_factory(), workers=2, prefix=PREFIX)
    with node.client(auth=node.auth) as client:
        values = [{"index": 300, "type": "HS_SECKEY", "data": OTHER_SECRET}]
        assert client.put(f"/api/handles/{OTHER}", json=values).status_code == 201
    return node


def fresh(node: NodeProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own, so that both workers take traffic."""
    with node.client(headers={"connection": "close"}) as client:
        return client.request(method, path, **kwargs)


def login(node: NodeProcess, username: str, password: str) -> dict[str, Any]:
    body = {"username": username, "password": password}
    response = fresh(node, "POST", "/identity/token", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def bearer(node: NodeProcess) -> Iterator[dict[str, str]]:
    answer = login(node, node.identity, node.secret)
    assert answer["status"] == 1, answer
    yield {"Authorization": f"Bearer {answer['data']['token']}"}


def url_value(index: int, url: str) -> dict[str, Any]:
    return {
        "index": index,
        "type": "URL",
        "auth": "1110",
        "data": {"format": "string", "value": url},
    }


def test_login_answers_a_token_for_a_day_and_refuses_a_wrong_secret(node: NodeProcess) -> None:
    answer = login(node, node.identity, node.secret)
    assert answer["status"] == 1 and answer["message"]
    assert len(answer["data"]["token"]) >= 40 and answer["data"]["expire"] == 86400
    wrong = login(node, node.identity, "not-the-secret")
    assert wrong["status"] == -1 and wrong["data"] is None
    malformed = fresh(node, "POST", "/identity/token", json={"user": "x"})
    assert malformed.status_code == 200 and malformed.json()["status"] == -2


def test_the_dated_login_proves_the_sealed_secret(node: NodeProcess) -> None:
    today = datetime.now(UTC).date().isoformat()
    inner = hashlib.sha256(node.secret.encode()).hexdigest()
    dated = hashlib.sha256((inner + today).encode()).hexdigest()
    answer = fresh(
        node, "POST", "/identity/token/v1", json={"username": node.identity, "password": dated}
    ).json()
    assert answer["status"] == 1, answer
    token = {"Authorization": f"Bearer {answer['data']['token']}"}
    with node.client(headers=token) as client:
        assert client.get(f"/api/handles/{PREFIX}/ADMIN?auth=true").status_code == 200
    wrong = {"username": node.identity, "password": "0" * 64}
    refused = fresh(node, "POST", "/identity/token/v1", json=wrong).json()
    assert refused["status"] != 1


def test_detail_is_the_record_rest_serves(node: NodeProcess, bearer: dict[str, str]) -> None:
    handle = f"{PREFIX}/detail-1"
    values = [{"index": 1, "type": "URL", "data": "https://example.org/d1"}]
    with node.client(auth=node.auth) as client:
        assert client.put(f"/api/handles/{handle}", json=values).status_code == 201
        rest = client.get(f"/api/handles/{handle}").json()
    answer = fresh(
        node, "GET", "/identityv2/data/detail", params={"handle": handle}, headers=bearer
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == 1
    data = body["data"]
    assert data["handle"] == handle and data["prefix"] == PREFIX
    assert data["templateVersion"] is None
    by_index = {v["index"]: v for v in data["value"]}
    assert by_index[1]["data"] == {"format": "string", "value": "https://example.org/d1"}
    assert by_index[1]["auth"] == "1110"
    assert sorted(by_index) == sorted(v["index"] for v in rest["values"])
    anonymous = fresh(node, "GET", "/identityv2/data/detail", params={"handle": handle})
    assert anonymous.json()["status"] == -1
    missing = fresh(
        node, "GET", "/identityv2/data/detail", params={"handle": f"{PREFIX}/nope"}, headers=bearer
    )
    assert missing.json()["status"] == -2 and missing.json()["code"] == 100


def test_create_update_delete_one(node: NodeProcess, bearer: dict[str, str]) -> None:
    handle = f"{PREFIX}/one-1"
    # templateVersion names a template of the record's prefix, which must exist.
    template = {
        "prefix": PREFIX,
        "version": "t-v1",
        "items": [{"name": "型号", "idType": "model", "idIndex": 2000, "metadata": {}}],
    }
    made = fresh(node, "POST", "/snms/api/v5/template", json=template, headers=bearer).json()
    assert made["status"] == 1, made
    item = {"handle": handle, "templateVersion": "t-v1", "value": [url_value(1, "https://a")]}
    first = fresh(node, "POST", "/identityv2/data", json=item, headers=bearer).json()
    assert first["status"] == 1 and first["data"]["state"] == "created", first
    again = fresh(node, "POST", "/identityv2/data", json=item, headers=bearer).json()
    assert again["status"] == 1 and again["data"]["state"] == "unchanged", again
    other = {**item, "value": [url_value(1, "https://b")]}
    conflict = fresh(node, "POST", "/identityv2/data", json=other, headers=bearer).json()
    assert conflict["status"] == -2 and conflict["code"] == 101
    with node.client() as client:
        rest = {v["index"]: v for v in client.get(f"/api/handles/{handle}").json()["values"]}
    assert rest[1]["data"]["value"] == "https://a"
    assert rest[1001]["type"] == "TEMPLATE"
    assert rest[1001]["data"]["value"] == f"{PREFIX}/TEMPLATE.t-v1"
    updated = fresh(node, "PUT", "/identityv2/data", json=other, headers=bearer).json()
    assert updated["status"] == 1 and updated["data"]["state"] == "updated", updated
    with node.client() as client:
        rest = {v["index"]: v for v in client.get(f"/api/handles/{handle}").json()["values"]}
    assert rest[1]["data"]["value"] == "https://b"
    assert rest[1001]["data"]["value"] == f"{PREFIX}/TEMPLATE.t-v1"
    absent = {**other, "handle": f"{PREFIX}/one-absent"}
    refused = fresh(node, "PUT", "/identityv2/data", json=absent, headers=bearer).json()
    assert refused["status"] == -2 and refused["code"] == 100
    gone = fresh(node, "DELETE", "/identityv2/data", params={"handle": handle}, headers=bearer)
    assert gone.json()["status"] == 1
    with node.client() as client:
        assert client.get(f"/api/handles/{handle}").status_code == 404
    twice = fresh(node, "DELETE", "/identityv2/data", params={"handle": handle}, headers=bearer)
    assert twice.json()["status"] == -2 and twice.json()["code"] == 100


def test_batches_succeed_again_when_resent(node: NodeProcess, bearer: dict[str, str]) -> None:
    items = [
        {"handle": f"{PREFIX}/batch-{n}", "value": [url_value(1, f"https://b/{n}")]}
        for n in range(60)
    ]
    first = fresh(node, "POST", "/identityv2/data/batchCreate", json=items, headers=bearer).json()
    assert first["status"] == 1 and first["data"]["success"] == 60, first
    assert first["data"]["matched"] == 0
    # The client timed out and sends it again, one item now different.
    items[7] = {**items[7], "value": [url_value(1, "https://changed")]}
    retry = fresh(node, "POST", "/identityv2/data/batchCreate", json=items, headers=bearer).json()
    data = retry["data"]
    assert data["success"] == 59 and data["matched"] == 59 and data["failure"] == 1
    assert data["results"][7]["status"] == -2 and data["results"][7]["code"] == 101
    update = [*items[:10], {"handle": f"{PREFIX}/batch-absent", "value": [url_value(1, "x:y")]}]
    updated = fresh(node, "PUT", "/identityv2/data/batchUpdate", json=update, headers=bearer)
    states = [r.get("state") for r in updated.json()["data"]["results"]]
    assert states[7] == "updated" and states[0] == "unchanged"
    assert updated.json()["data"]["results"][10]["code"] == 100
    handles = [item["handle"] for item in items]
    deleted = fresh(node, "DELETE", "/identityv2/data/batchDelete", json=handles, headers=bearer)
    assert deleted.json()["data"]["success"] == 60 and deleted.json()["data"]["matched"] == 0
    resent = fresh(node, "DELETE", "/identityv2/data/batchDelete", json=handles, headers=bearer)
    assert resent.json()["data"]["success"] == 60 and resent.json()["data"]["matched"] == 60
    with node.client() as client:
        assert client.get(f"/api/handles/{PREFIX}/batch-3").status_code == 404
    too_many = [{"handle": f"{PREFIX}/x{n}", "value": []} for n in range(2001)]
    big = fresh(node, "POST", "/identityv2/data/batchCreate", json=too_many, headers=bearer)
    assert big.json()["status"] == -2


def test_an_identity_without_rights_gets_no_permission(node: NodeProcess) -> None:
    answer = login(node, f"300:{OTHER}", OTHER_SECRET)
    assert answer["status"] == 1
    headers = {"Authorization": f"Bearer {answer['data']['token']}"}
    item = {"handle": f"{PREFIX}/not-mine", "value": [url_value(1, "https://x")]}
    refused = fresh(node, "POST", "/identityv2/data", json=item, headers=headers).json()
    assert refused["status"] == -3, refused


# --- scoped tokens ------------------------------------------------------------------------


def issue(node: NodeProcess, auth: Any, **body: Any) -> httpx.Response:
    return fresh(node, "POST", "/api/tokens", json=body, auth=auth)


def test_a_token_holds_only_its_rights(node: NodeProcess) -> None:
    response = issue(node, node.auth, prefix=PREFIX, rights=["ADD_HANDLE"], label="adder")
    assert response.status_code == 201, response.text
    headers = {"Authorization": f"Bearer {response.json()['token']}"}
    handle = f"/api/handles/{PREFIX}/scoped-1"
    values = [{"index": 1, "type": "URL", "data": "https://s/1"}]
    assert fresh(node, "PUT", handle, json=values, headers=headers).status_code == 201
    changed = [{"index": 1, "type": "URL", "data": "https://s/2"}]
    refused = fresh(node, "PUT", handle, json=changed, headers=headers)
    assert refused.status_code == 403 and refused.json()["responseCode"] == 401
    assert fresh(node, "DELETE", handle, headers=headers).status_code == 403
    assert fresh(node, "PUT", handle, json=changed, auth=node.auth).status_code == 200
    # Tokens issue no tokens, and nobody issues one for a prefix they do not administer.
    by_token = fresh(node, "POST", "/api/tokens", json={"prefix": PREFIX}, headers=headers)
    assert by_token.status_code == 403
    elsewhere = issue(node, node.auth, prefix="99", rights=["ADD_HANDLE"])
    assert elsewhere.status_code == 403
    other = issue(node, basic_auth(f"300:{OTHER}", OTHER_SECRET), prefix=PREFIX, rights=4095)
    assert other.status_code == 403


def test_a_revoked_token_stops_working_on_every_worker(node: NodeProcess) -> None:
    response = issue(node, node.auth, prefix=PREFIX, rights=4095, expiresIn=600, label="rev")
    token, token_id = response.json()["token"], response.json()["id"]
    headers = {"Authorization": f"Bearer {token}"}
    handle = f"/api/handles/{PREFIX}/revoke-1"
    values = [{"index": 1, "type": "URL", "data": "https://r/1"}]
    for _ in range(4):  # both workers know it
        assert fresh(node, "PUT", handle, json=values, headers=headers).status_code in (200, 201)
    listed = fresh(node, "GET", "/api/tokens", auth=node.auth).json()["tokens"]
    mine = next(t for t in listed if t["id"] == token_id)
    assert mine["prefix"] == PREFIX and mine["revokedAt"] is None and "token" not in mine
    assert fresh(node, "DELETE", f"/api/tokens/{token_id}", auth=node.auth).status_code == 200
    assert fresh(node, "DELETE", f"/api/tokens/{token_id}", auth=node.auth).status_code == 404
    deadline = time.monotonic() + 30  # a worker remembers a checked token 5 s at most
    refusals = 0
    while refusals < 6 and time.monotonic() < deadline:
        status = fresh(node, "PUT", handle, json=values, headers=headers).status_code
        refusals = refusals + 1 if status == 403 else 0
        time.sleep(0.2)
    assert refusals >= 6, "the revoked token still works"
    listed = fresh(node, "GET", "/api/tokens", auth=node.auth).json()["tokens"]
    assert next(t for t in listed if t["id"] == token_id)["revokedAt"] is not None


def test_the_snms_login_token_works_on_rest(node: NodeProcess, bearer: dict[str, str]) -> None:
    handle = f"/api/handles/{PREFIX}/via-snms-token"
    values = [{"index": 1, "type": "URL", "data": "https://t"}]
    assert fresh(node, "PUT", handle, json=values, headers=bearer).status_code == 201
    unknown = {"Authorization": "Bearer not-a-token"}
    assert fresh(node, "PUT", handle, json=values, headers=unknown).status_code == 403


def test_the_token_command_issues_lists_and_revokes(node: NodeProcess) -> None:
    issue = ("token", "issue", node.identity, "--rights", "READ_VALUE", "--prefix")
    issued = json.loads(run_cli(node.env, *issue, PREFIX))
    headers = {"Authorization": f"Bearer {issued['token']}"}
    handle = f"/api/handles/{PREFIX}/by-cli-token"
    values = [{"index": 1, "type": "URL", "data": "https://c"}]
    refused = fresh(node, "PUT", handle, json=values, headers=headers)
    assert refused.status_code == 403 and refused.json()["responseCode"] == 401
    listed = json.loads(run_cli(node.env, "token", "list", node.identity))
    assert issued["id"] in [t["id"] for t in listed]
    run_cli(node.env, "token", "revoke", node.identity, issued["id"])
    with pytest.raises(CliFailed):
        run_cli(node.env, "token", "revoke", node.identity, issued["id"])
    with pytest.raises(CliFailed):  # 88.100's administrator administers nothing of 99
        run_cli(node.env, *issue, "99")
