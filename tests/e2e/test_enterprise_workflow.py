"""The enterprise prefix workflow end to end, with real processes on loopback.

A top-level node homes 88 and has allocated 88.100; the secondary node 88.100 has joined it;
an enterprise node serves its own prefix 88.100.7; a recursive node's root is the top level.
Enterprises apply and operators decide with the ``idis enterprise`` commands (subprocesses, as
an operator would run them); identifiers are then registered and resolved over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from nodeproc import REPO, NodeProcess, basic_auth

from nodes.processes import run_cli

HTTP_TIMEOUT = 10.0
OPERATOR = "300:88.100/ADMIN"


@dataclass
class World:
    top: NodeProcess
    secondary: NodeProcess
    enterprise: NodeProcess
    recursive: NodeProcess
    workdir: Path

    def secret_file(self, name: str, secret: str | None = None) -> Path:
        path = self.workdir / f"secret-{name}-{uuid.uuid4().hex[:6]}"
        path.write_text((secret or f"e2e-{uuid.uuid4().hex}") + "\n", encoding="utf-8")
        return path

    @property
    def operator_secret_file(self) -> Path:
        return self.workdir / "secret-operator"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest,
    node_factory: Callable[..., NodeProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    """Four nodes, each on a database of its own: SQLite files, or PostgreSQL databases."""
    if request.param == "postgres":
        pg_factory: Callable[[], str] = request.getfixturevalue("pg_factory")
        base_start = node_factory

        def node_factory(**kwargs: Any) -> NodeProcess:
            return base_start(database_url=pg_factory(), **kwargs)

    workdir = tmp_path_factory.mktemp("enterprise-workflow")
    holder = workdir / "secret-holder"
    holder.write_text(f"holder-{uuid.uuid4().hex}\n", encoding="utf-8")
    operator = workdir / "secret-operator"
    operator.write_text(f"operator-{uuid.uuid4().hex}\n", encoding="utf-8")

    top = node_factory(prefix="88", extra_env={"IDIS_ROLE": "top-level"})
    run_cli(top.env, "prefix", "allocate", "88.100", "--secret-file", str(holder))
    to_top = {"IDIS_FEDERATION__TOP_LEVEL": json.dumps([top.base_url])}
    secondary = node_factory(
        prefix="88.100",
        secret=operator.read_text(encoding="utf-8").strip(),
        extra_env={
            "IDIS_ROLE": "secondary",
            "IDIS_FEDERATION__HOLDER_SECRET_FILE": str(holder),
            # Every application here comes from 127.0.0.1; rationing is tested in
            # test_throttling.py.
            "IDIS_THROTTLE__APPLY_SOURCE": "1000/minute",
            **to_top,
        },
    )
    # 88.100/ADMIN (the operator) exists already; joining registers the site at the top level.
    run_cli(secondary.env, "federation", "join", "88.100", "--secret-file", str(holder))
    enterprise = node_factory(prefix="88.100.7", extra_env={"IDIS_ROLE": "enterprise"})
    recursive = node_factory(init=False, extra_env={"IDIS_ROLE": "recursive", **to_top})
    return World(top, secondary, enterprise, recursive, workdir)


def idis(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``idis ARGS`` as an operator would, without any node settings in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIS_")}
    return subprocess.run(
        [sys.executable, "-m", "nodes.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(*args: str) -> str:
    done = idis(*args)
    assert done.returncode == 0, f"idis {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def apply(world: World, prefix: str, *extra: str) -> str:
    """Apply with the CLI; the application id."""
    out = ok("enterprise", "apply", "--node", world.secondary.base_url, prefix, *extra)
    found = re.search(r"application ([0-9a-f]{16}) submitted for " + re.escape(prefix), out)
    assert found, out
    return found.group(1)


def decide(world: World, action: str, application_id: str, *extra: str) -> str:
    return ok(
        "enterprise",
        action,
        "--node",
        world.secondary.base_url,
        application_id,
        "--identity",
        OPERATOR,
        "--secret-file",
        str(world.operator_secret_file),
        *extra,
    )


def get(node: NodeProcess, handle: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{node.base_url}/api/handles/{quote(handle)}", params=params, timeout=HTTP_TIMEOUT
    )


def register(node: NodeProcess, handle: str, url: str, auth: httpx.BasicAuth) -> None:
    response = httpx.put(
        f"{node.base_url}/api/handles/{quote(handle)}",
        json=[{"index": 1, "type": "URL", "data": url}],
        auth=auth,
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 201, response.text


def site_ports(values: list[dict[str, Any]]) -> list[int]:
    return [
        interface["port"]
        for value in values
        if value["type"] == "HS_SITE"
        for server in value["data"]["value"]["servers"]
        for interface in server["interfaces"]
    ]


def port(node: NodeProcess) -> int:
    return int(node.base_url.rsplit(":", 1)[1])


def hops(response: httpx.Response) -> list[str]:
    return unquote(response.headers["x-idis-source"]).split(" -> ")


def url_of(response: httpx.Response) -> str:
    [value] = [v for v in response.json()["values"] if v["type"] == "URL"]
    return str(value["data"]["value"])


def test_hosted_prefix(world: World) -> None:
    prefix = "88.100.1"
    enterprise_secret = world.secret_file("88.100.1")
    application = apply(
        world, prefix, "--name", "ACME 製造", "--contact", "ops@acme.example",
        "--secret-file", str(enterprise_secret),
    )  # fmt: skip
    pending = ok(
        "enterprise", "list", "--node", world.secondary.base_url, "--identity", OPERATOR,
        "--secret-file", str(world.operator_secret_file), "--status", "pending",
    )  # fmt: skip
    assert application in pending and prefix in pending

    out = decide(world, "approve", application)
    assert f"application {application} approved" in out
    assert "administrator: 300:88.100.1/ADMIN" in out
    assert "secret (shown once" not in out  # the enterprise sent its own

    # The top level recorded it: its HS_SITE names the secondary node.
    top = get(world.top, f"0.NA/{prefix}", auth="true").json()
    assert top["responseCode"] == 1
    assert site_ports(top["values"]) == [port(world.secondary)]

    # The enterprise registers as PREFIX/ADMIN; anyone resolves through the recursive node.
    auth = basic_auth(f"300:{prefix}/ADMIN", enterprise_secret.read_text().strip())
    register(world.secondary, f"{prefix}/ABC123", "https://acme.example/p/ABC123", auth)
    answer = get(world.recursive, f"{prefix}/ABC123")
    assert answer.status_code == 200, answer.text
    assert url_of(answer) == "https://acme.example/p/ABC123"
    assert hops(answer) == [
        f"{world.top.base_url} 0.NA/{prefix}:1",
        f"{world.secondary.base_url} {prefix}/ABC123:1",
    ]

    # Applying for it again is refused, by the API and the CLI alike.
    again = idis("enterprise", "apply", "--node", world.secondary.base_url, prefix, "--name", "X")
    assert again.returncode == 1
    assert "response code 101" in again.stderr
    response = httpx.post(
        f"{world.secondary.base_url}/api/prefix-applications",
        json={"prefix": prefix, "name": "X"},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 409
    assert response.json()["responseCode"] == 101


def test_self_hosted_prefix(world: World) -> None:
    prefix = "88.100.7"  # homed on the enterprise node by `idis prefix init` when it started
    application = apply(
        world, prefix, "--name", "Own Node Co", "--self-hosted", world.enterprise.base_url
    )
    out = decide(world, "approve", application)
    assert f"application {application} approved" in out
    assert f"idis prefix init {prefix}" in out
    assert "secret (shown once" not in out

    top = get(world.top, f"0.NA/{prefix}", auth="true").json()
    assert site_ports(top["values"]) == [port(world.enterprise)]
    # The secondary refers questions about the prefix's handles to the enterprise node.
    referral = get(world.secondary, f"{prefix}/SN-1").json()
    assert referral["responseCode"] == 302
    assert site_ports(referral["values"]) == [port(world.enterprise)]

    register(world.enterprise, f"{prefix}/SN-1", "https://own.example/SN-1", world.enterprise.auth)
    answer = get(world.recursive, f"{prefix}/SN-1")
    assert answer.status_code == 200, answer.text
    assert url_of(answer) == "https://own.example/SN-1"
    # The top level's record names the enterprise node, so the walk goes straight there.
    assert hops(answer) == [
        f"{world.top.base_url} 0.NA/{prefix}:1",
        f"{world.enterprise.base_url} {prefix}/SN-1:1",
    ]

    again = idis("enterprise", "apply", "--node", world.secondary.base_url, prefix, "--name", "X")
    assert again.returncode == 1 and "response code 101" in again.stderr


def test_only_the_operator_decides(world: World) -> None:
    prefix, other = "88.100.3", "88.100.4"
    secret = world.secret_file(prefix)
    decide(world, "approve", apply(world, prefix, "--name", "A", "--secret-file", str(secret)))
    application = apply(world, other, "--name", "B")
    wrong = world.secret_file("wrong")
    for identity, secret_file, code in (
        # Authenticated here as the administrator of 88.100.3, which is not 88.100's.
        (f"300:{prefix}/ADMIN", secret, 401),
        # The operator's identity with someone else's secret is not verified.
        (OPERATOR, wrong, 403),
    ):
        refused = idis(
            "enterprise", "approve", "--node", world.secondary.base_url, application,
            "--identity", identity, "--secret-file", str(secret_file),
        )  # fmt: skip
        assert refused.returncode == 1
        assert f"response code {code}" in refused.stderr
    url = f"{world.secondary.base_url}/api/prefix-applications/{application}/approve"
    anonymous = httpx.post(url, timeout=HTTP_TIMEOUT)
    assert (anonymous.status_code, anonymous.json()["responseCode"]) == (401, 402)
    shown = ok("enterprise", "show", "--node", world.secondary.base_url, application)
    assert "pending" in shown
    assert get(world.top, f"0.NA/{other}", auth="true").json()["responseCode"] != 1


def test_rejection(world: World) -> None:
    prefix = "88.100.5"
    application = apply(world, prefix, "--name", "Dubious Co")
    out = decide(world, "reject", application, "--reason", "unknown firm")
    assert f"application {application} rejected" in out and "unknown firm" in out
    shown = ok("enterprise", "show", "--node", world.secondary.base_url, application)
    assert "rejected" in shown and "unknown firm" in shown
    refused = idis(
        "enterprise", "approve", "--node", world.secondary.base_url, application,
        "--identity", OPERATOR, "--secret-file", str(world.operator_secret_file),
    )  # fmt: skip
    assert refused.returncode == 1 and "was rejected" in refused.stderr
    assert get(world.top, f"0.NA/{prefix}", auth="true").json()["responseCode"] != 1
    # The prefix is free for a better applicant; a generated secret is shown once.
    second = apply(world, prefix, "--name", "Solid Co")
    out = decide(world, "approve", second)
    found = re.search(r"secret \(shown once, give it to the enterprise\): (\S+)", out)
    assert found, out
    auth = basic_auth(f"300:{prefix}/ADMIN", found.group(1))
    register(world.secondary, f"{prefix}/X1", "https://solid.example/X1", auth)
    assert "secret (shown once" not in decide(world, "approve", second)


def test_bad_input_gets_handle_errors(world: World) -> None:
    url = f"{world.secondary.base_url}/api/prefix-applications"
    cases: list[tuple[Any, int, int]] = [
        (b"{not json", 400, 4),
        (b"[1, 2]", 400, 202),
        (json.dumps({"prefix": "88.100.9", "name": "A", "site_url": "x"}).encode(), 400, 202),
        (json.dumps({"prefix": "88.100.9"}).encode(), 400, 202),
        (json.dumps({"prefix": "88.100..9", "name": "A"}).encode(), 400, 102),
        (json.dumps({"prefix": "99.1", "name": "A"}).encode(), 400, 301),
        (json.dumps({"prefix": "88.100.9", "name": "A", "siteUrl": "ftp://x"}).encode(), 400, 202),
        (b"", 400, 202),
    ]
    for body, status, code in cases:
        response = httpx.post(
            url, content=body, headers={"content-type": "application/json"}, timeout=HTTP_TIMEOUT
        )
        assert (response.status_code, response.json()["responseCode"]) == (status, code), body
    missing = httpx.get(f"{url}/0123456789abcdef", timeout=HTTP_TIMEOUT)
    assert (missing.status_code, missing.json()["responseCode"]) == (404, 100)
    assert httpx.get(url, timeout=HTTP_TIMEOUT).status_code == 401
    listing = httpx.get(
        url,
        params={"status": "open"},
        auth=basic_auth(OPERATOR, world.operator_secret_file.read_text().strip()),
        timeout=HTTP_TIMEOUT,
    )
    assert (listing.status_code, listing.json()["responseCode"]) == (400, 202)

    # Deciding: the reject body is optional, but what there is of it must make sense.
    operator = basic_auth(OPERATOR, world.operator_secret_file.read_text().strip())
    created = httpx.post(url, json={"prefix": "88.100.9", "name": "A"}, timeout=HTTP_TIMEOUT)
    assert created.status_code == 201, created.text
    reject = f"{url}/{created.json()['application']['id']}/reject"
    for body in ({"reason": 5}, {"why": "typo"}, [1]):
        response = httpx.post(reject, json=body, auth=operator, timeout=HTTP_TIMEOUT)
        assert (response.status_code, response.json()["responseCode"]) == (400, 202), body
    response = httpx.post(reject, auth=operator, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["application"]["status"] == "rejected"
    assert "secretHash" not in response.text and "scrypt" not in response.text


def test_many_applications(world: World) -> None:
    # PostgreSQL switches a prepared statement to a generic plan after five runs: the sixth
    # application used to answer 500 there.
    url = f"{world.secondary.base_url}/api/prefix-applications"
    for n in range(8):
        prefix = f"88.100.{500 + n}"
        created = httpx.post(url, json={"prefix": prefix, "name": "A"}, timeout=HTTP_TIMEOUT)
        assert created.status_code == 201, (n, created.text)
        again = httpx.post(url, json={"prefix": prefix, "name": "B"}, timeout=HTTP_TIMEOUT)
        assert (again.status_code, again.json()["responseCode"]) == (409, 101), again.text
