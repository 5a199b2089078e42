"""Helpers for end-to-end tests of the national statistics (shared by test_national_stats.py
and test_console.py): secondary nodes that report upward quickly, traffic whose counts the
test knows, and the top level's ``GET /api/national/stats`` polled with a bounded deadline.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
from nodeproc import NodeProcess, basic_auth

from nodes.processes import run_cli

DEADLINE = 20.0
"""Seconds for reports to reach the top level (a secondary reports every half second)."""
HTTP_TIMEOUT = 10.0
REPORT_INTERVAL = 0.5
FLUSH_INTERVAL = 0.2


def secret_files(workdir: Path, prefixes: Iterable[str]) -> dict[str, Path]:
    """A fresh secret per prefix, each in a file ``secret-PREFIX`` under ``workdir``."""
    files = {}
    for prefix in prefixes:
        files[prefix] = workdir / f"secret-{prefix}"
        files[prefix].write_text(f"e2e-{uuid.uuid4().hex}\n", encoding="utf-8")
    return files


def secret(files: dict[str, Path], prefix: str) -> str:
    return files[prefix].read_text(encoding="utf-8").strip()


def secondary_env(top_level: Sequence[str], holder_secret_file: Path) -> dict[str, str]:
    """The settings of a secondary node under ``top_level`` that counts and reports its
    figures every :data:`REPORT_INTERVAL` seconds as the holder of its prefix."""
    return {
        "IDIS_ROLE": "secondary",
        "IDIS_FEDERATION__TOP_LEVEL": json.dumps(list(top_level)),
        "IDIS_FEDERATION__HOLDER_SECRET_FILE": str(holder_secret_file),
        "IDIS_STATS__REPORT_INTERVAL": str(REPORT_INTERVAL),
        "IDIS_STATS__FLUSH_INTERVAL": str(FLUSH_INTERVAL),
    }


def join(node: NodeProcess, prefix: str, holder_secret_file: Path) -> None:
    """``idis federation join``: the secondary ``node`` homes ``prefix`` (allocated by its top
    level to the holder whose secret is in ``holder_secret_file``)."""
    run_cli(node.env, "federation", "join", prefix, "--secret-file", str(holder_secret_file))


def register(node: NodeProcess, prefix: str, secret: str, count: int) -> list[str]:
    """Register ``count`` new identifiers under ``prefix`` on ``node``; their handles."""
    auth = basic_auth(f"300:{prefix}/ADMIN", secret)
    made, batch = [], uuid.uuid4().hex[:8]
    with node.client() as client:
        for n in range(count):
            handle = f"{prefix}/STATS-{batch}-{n}"
            value = {"index": 1, "type": "URL", "data": f"https://example.com/{n}"}
            response = client.put(f"/api/handles/{handle}", json={"values": [value]}, auth=auth)
            assert response.status_code == 201, response.text
            made.append(handle)
    return made


def resolve(node: NodeProcess, handle: str, times: int) -> None:
    """Resolve ``handle`` on ``node`` ``times`` times (each counts as one resolution)."""
    with node.client() as client:
        for _ in range(times):
            response = client.get(f"/api/handles/{handle}")
            assert response.status_code == 200, response.text


def national_stats(top: str, days: int | None = None) -> dict[str, Any]:
    """The top level's ``GET /api/national/stats`` (``days`` None: its default, as the
    console asks)."""
    params = {} if days is None else {"days": days}
    response = httpx.get(f"{top}/api/national/stats", params=params, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_stats(
    top: str, check: Callable[[dict[str, Any]], bool], days: int | None = 7
) -> dict[str, Any]:
    """Poll the top level until ``check`` holds of its figures (at most :data:`DEADLINE`
    seconds); the figures."""
    deadline = time.monotonic() + DEADLINE
    while True:
        stats = national_stats(top, days)
        if check(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"the top level still shows {json.dumps(stats, indent=1)}")
        time.sleep(0.1)


def industry_nodes(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The figures' industry nodes by prefix."""
    return {node["prefix"]: node for node in stats["nodes"]}


def counts(node: dict[str, Any]) -> tuple[int, int, int]:
    """An industry node's identifiers, registered today and resolved today."""
    return node["identifiers"], node["registeredToday"], node["resolvedToday"]


def all_counts(stats: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {prefix: counts(node) for prefix, node in industry_nodes(stats).items()}
