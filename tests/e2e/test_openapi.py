"""The node's OpenAPI document against a real ``idis serve`` on PostgreSQL: it is valid and
complete, Swagger UI works offline, and schemathesis finds no 5xx.

The node is top-level (so the replication routes exist too) and homes 88; schemathesis sends
every example of every operation twice, anonymously and as 88's administrator, a bounded
number of examples per operation (``MAX_EXAMPLES``).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import StartNode
from hypothesis import HealthCheck, settings
from nodeproc import NodeProcess
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 12
"""Per operation and pass: about 16 operations x 2 passes x 12, some 400 requests."""
FEDERATION_SECRET = "openapi-federation-secret"


@pytest.fixture(scope="module")
def node(node_factory: StartNode, pg_factory: Any) -> NodeProcess:
    return node_factory(
        database_url=pg_factory(),
        prefix="88",
        extra_env={"IDIS_ROLE": "top-level", "IDIS_FEDERATION__SECRET": FEDERATION_SECRET},
    )


@pytest.fixture(scope="module")
def spec(node: NodeProcess) -> dict[str, Any]:
    response = httpx.get(f"{node.base_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    return dict(response.json())


def test_the_document_is_valid(spec: dict[str, Any]) -> None:
    validate(spec)  # raises on undeclared path parameters, bad references, ...


def test_every_route_is_documented_with_its_parameters(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    for path in (
        "/api/handles/{handle}",
        "/api/handles",
        "/api/batch",
        "/api/prefixes",
        "/api/stats",
        "/api/replication/log",
        "/api/replication/status",
        "/api/prefix-applications",
        "/api/prefix-applications/{application_id}/approve",
        "/api/national/stats",
        "/api/national/reports",
        "/{handle}",
    ):
        assert path in paths, path
    resolution = paths["/api/handles/{handle}"]
    assert {"get", "head", "put", "delete"} <= set(resolution)
    for method, operation in resolution.items():
        names = {p["name"] for p in operation["parameters"]}
        assert "handle" in names, method
        assert "429" in operation["responses"] and "503" in operation["responses"]
    assert "type" in {p["name"] for p in resolution["get"]["parameters"]}
    put_body = resolution["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert put_body == {"$ref": "#/components/schemas/Values"}
    assert "requestBody" in paths["/api/batch"]["post"]
    assert "requestBody" in paths["/api/prefix-applications"]["post"]
    assert "Error" in spec["components"]["schemas"]


def test_the_interactive_docs_need_nothing_from_outside(node: NodeProcess) -> None:
    with node.client() as client:
        page = client.get("/api/docs")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets, page.text
        for url in assets:
            assert url.startswith("/api/docs/assets/"), f"{url} is not served by the node"
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
        assert "/openapi.json" in page.text


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(node: NodeProcess) -> Any:
    return schemathesis.openapi.from_url(f"{node.base_url}/openapi.json")


@pytest.fixture(scope="module")
def administrator(node: NodeProcess) -> dict[str, str]:
    identity = node.identity.replace(":", "%3A", 1)
    token = base64.b64encode(f"{identity}:{node.secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: Any, administrator: dict[str, str]) -> None:
    # Each example twice: anonymously (most writes stop at 401) and as the administrator of
    # 88 (they go through to validation and the database).
    for headers in ({}, administrator):
        case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=30)
