"""The HTTP change feed across an operator boundary, through real processes: a producer node
and a mirror following its feed (``IDIS_MIRROR__SOURCE``).  Changes flow; while the mirror is
down the producer prunes its log past the mirror's cursor; the restarted mirror is told so,
re-synchronises from a snapshot, and ends identical to the producer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from nodeproc import RUNNING, NodeProcess

from nodes.processes import run_cli

FEED_SECRET = f"feed-{uuid.uuid4().hex}"
GIVE_UP = 20.0
RETENTION = 1.0
"""The producer's IDIS_CHANGE_LOG__RETENTION (seconds): short, so the test can outwait it."""


def _wait(what: str, done: Callable[[], bool], timeout: float = GIVE_UP) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _snapshot(node: NodeProcess) -> tuple[list[Any], list[Any]]:
    """Every record (key, handle, data, version) and the homed prefixes of ``node``."""
    auth = httpx.BasicAuth("federation", FEED_SECRET)
    records: list[Any] = []
    after = ""
    with node.client(auth=auth) as client:
        while True:
            page = client.get("/api/replication/snapshot", params={"after": after, "limit": 50})
            assert page.status_code == 200, page.text
            body = page.json()
            homes = body["homes"]
            records += [(r["key"], r["handle"], r["data"], r["version"]) for r in body["records"]]
            if body["next"] is None:
                return records, homes
            after = body["next"]


def _status(node: NodeProcess) -> dict[str, Any]:
    with node.client() as client:
        answer = client.get("/api/replication/status", auth=node.operator_auth)
        body: dict[str, Any] = answer.json()
    return body


def test_mirror_follows_falls_behind_and_resyncs(
    node_factory: Any, pg_factory: Callable[[], str]
) -> None:
    producer = node_factory(
        database_url=pg_factory(),
        extra_env={
            "IDIS_FEDERATION__SECRET": FEED_SECRET,
            "IDIS_CHANGE_LOG__RETENTION": str(RETENTION),
            "IDIS_CHANGE_LOG__PRUNE_INTERVAL": "0.5",
        },
    )
    mirror = node_factory(
        database_url=pg_factory(),
        init=False,
        secret=producer.secret,
        extra_env={
            "IDIS_MIRROR__SOURCE": producer.base_url,
            "IDIS_MIRROR__SECRET": FEED_SECRET,
            "IDIS_FEDERATION__SECRET": FEED_SECRET,
        },
    )
    auth = producer.auth
    handles = [f"{producer.prefix}/M{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    with producer.client() as p, mirror.client() as m:
        for i, handle in enumerate(handles):
            value = [{"index": 1, "type": "URL", "data": f"https://example.com/{i}"}]
            assert p.put(f"/api/handles/{quote(handle)}", json=value, auth=auth).is_success
        # Changes flow: the mirror serves the producer's records (and its homed prefix).
        _wait(
            "the mirror serves every record",
            lambda: all(m.get(f"/api/handles/{quote(h)}").status_code == 200 for h in handles),
        )
        assert p.delete(f"/api/handles/{quote(handles[0])}", auth=auth).status_code == 200
        _wait(
            "the deletion reaches the mirror",
            lambda: m.get(f"/api/handles/{quote(handles[0])}").status_code == 404,
        )
        assert _snapshot(mirror) == _snapshot(producer)
        cursor = _status(mirror)["mirror"]["cursor"]

        # The mirror goes down; the producer keeps writing and prunes past the mirror's cursor.
        mirror.stop()
        for i, handle in enumerate(handles[1:6]):
            value = [{"index": 1, "type": "URL", "data": f"https://example.com/changed/{i}"}]
            assert p.put(f"/api/handles/{quote(handle)}", json=value, auth=auth).is_success
        for handle in handles[6:9]:
            assert p.delete(f"/api/handles/{quote(handle)}", auth=auth).status_code == 200
        later = f"{producer.prefix}/LATE-{uuid.uuid4().hex[:6]}"
        value = [{"index": 1, "type": "URL", "data": "https://example.com/late"}]
        assert p.put(f"/api/handles/{quote(later)}", json=value, auth=auth).status_code == 201
        homed = f"{producer.prefix}.{uuid.uuid4().int % 10**6}"
        run_cli(
            producer.env, "prefix", "init", homed, "--secret-file", str(producer.home / "secret")
        )
        _wait(
            "the producer prunes past the mirror's cursor",
            lambda: _status(producer)["horizon"] > cursor,
        )

        # A consumer at the old cursor is told, distinctly, that it fell behind.
        feed = httpx.get(
            f"{producer.base_url}/api/replication/log",
            params={"after": cursor},
            auth=httpx.BasicAuth("federation", FEED_SECRET),
            timeout=10,
        )
        assert feed.status_code == 410 and feed.json()["responseCode"] == 410, feed.text
        assert feed.json()["horizon"] > cursor

        mirror.stopped = False
        RUNNING.append(mirror)
        mirror.start(GIVE_UP)
        _wait(
            "the mirror re-synchronises from a snapshot",
            # A fresh process, whose cursor was set: only the 410 makes it re-synchronise.
            lambda: (_status(mirror)["mirror"] or {}).get("resyncs", 0) >= 1,
        )
        _wait(
            "the mirror is identical to the producer",
            lambda: _snapshot(mirror) == _snapshot(producer),
        )
        records, homes = _snapshot(mirror)
        assert any(r[0] == later.upper() for r in records)
        assert not any(r[0] == handles[7].upper() for r in records)
        assert homed in homes
        # And it keeps following the log after the re-synchronisation.
        value = [{"index": 1, "type": "URL", "data": "https://example.com/after"}]
        assert p.put(f"/api/handles/{quote(handles[2])}", json=value, auth=auth).is_success
    with mirror.client() as m:
        _wait(
            "a change after the resync reaches the mirror",
            lambda: "after" in m.get(f"/api/handles/{quote(handles[2])}").text,
        )
