"""Write-to-visible across hosts: how long after a write is acknowledged on one host another
host of the same site (its own generation board, the same database and Redis) serves it,
beside the same read on the writing host (which invalidates before acknowledging).

Each of ``count`` writes: create a handle on the writer, wait until both hosts serve it from
their caches, replace its value on the writer, then ask both hosts in turn until each serves
the new value; the time from the acknowledgement to each host's first new answer is one
sample.  Bounded: every wait gives up after ``give_up`` seconds (counted as an error).
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import quote

import httpx

from loadtests.stats import percentile

CACHED = ("memory", "redis")


def _url(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return None
    for value in response.json().get("values", []):
        if value.get("type") == "URL":
            return str(value["data"]["value"])
    return None


def _cached(client: httpx.Client, path: str, url: str, give_up: float) -> bool:
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        response = client.get(path)
        if _url(response) == url and response.headers.get("x-idis-source") in CACHED:
            return True
        time.sleep(0.005)
    return False


def measure(
    writer: str,
    reader: str,
    authorization: str,
    prefix: str,
    *,
    count: int = 50,
    give_up: float = 10.0,
) -> dict[str, Any]:
    """p50 and p99 (seconds) on the writing host and on the other; ``authorization`` is the
    header of an administrator of ``prefix``."""
    tag = secrets.token_hex(3)
    auth = {"authorization": authorization}
    own: list[float] = []
    other: list[float] = []
    errors = 0
    with (
        httpx.Client(base_url=writer, timeout=10) as w,
        httpx.Client(base_url=reader, timeout=10) as r,
    ):
        for i in range(count):
            path = f"/api/handles/{quote(f'{prefix}/XHOST-{tag}-{i}')}"
            old, new = f"https://example.com/{tag}/{i}/old", f"https://example.com/{tag}/{i}/new"
            body = [{"index": 1, "type": "URL", "data": old, "ttl": 86400}]
            if w.put(path, json=body, headers=auth).status_code != 201:
                errors += 1
                continue
            if not (_cached(w, path, old, give_up) and _cached(r, path, old, give_up)):
                errors += 1
                continue
            body[0]["data"] = new
            if w.put(path, json=body, headers=auth).status_code != 200:
                errors += 1
                continue
            acknowledged = time.monotonic()
            seen: dict[str, float] = {}
            while len(seen) < 2 and time.monotonic() - acknowledged < give_up:
                for name, client in (("own", w), ("other", r)):
                    if name not in seen and _url(client.get(path)) == new:
                        seen[name] = time.monotonic() - acknowledged
            if len(seen) < 2:
                errors += 1
                continue
            own.append(seen["own"])
            other.append(seen["other"])
    own.sort()
    other.sort()
    return {
        "writes": count,
        "errors": errors,
        "own_p50_s": percentile(own, 50) if own else None,
        "own_p99_s": percentile(own, 99) if own else None,
        "other_p50_s": percentile(other, 50) if other else None,
        "other_p99_s": percentile(other, 99) if other else None,
    }
