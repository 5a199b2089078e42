"""kill -9 of a node (every process of it) while clients register batches on PostgreSQL, then a
restart: every item the node acknowledged is there, with its values."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable

import httpx
from nodeproc import PREFIX, STARTUP_TIMEOUT, NodeProcess

CLIENTS = 4
BATCH = 200
MIN_ACKNOWLEDGED = 12
"""Batches acknowledged before the kill, so that it lands amid a steady stream of writes."""
DEADLINE = 60.0


def test_acknowledged_batch_items_survive_kill_9(
    node_factory: Callable[..., NodeProcess], pg_factory: Callable[[], str]
) -> None:
    node = node_factory(database_url=pg_factory(), workers=1)
    acknowledged: list[str] = []
    batches = 0
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        nonlocal batches
        with node.client(auth=node.auth, timeout=30.0) as http:
            while not stop.is_set():
                tag = uuid.uuid4().hex[:10]
                items = [
                    {
                        "handle": f"{PREFIX}/k{number}-{tag}-{i}",
                        "values": [{"index": 1, "type": "URL", "data": f"https://e.com/{tag}/{i}"}],
                    }
                    for i in range(BATCH)
                ]
                try:
                    response = http.post("/api/batch", json={"handles": items})
                except httpx.HTTPError:
                    return  # the node is gone: what was not answered was not acknowledged
                assert response.status_code == 200, response.text
                done = [r["handle"] for r in response.json()["results"] if r["responseCode"] == 1]
                with lock:
                    acknowledged.extend(done)
                    batches += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE
    while batches < MIN_ACKNOWLEDGED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batches >= MIN_ACKNOWLEDGED, f"only {batches} batches in {DEADLINE} s"
    os.killpg(node.pid, signal.SIGKILL)  # the serving process and its workers, mid-write
    assert node.process is not None
    node.process.wait(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    with lock:
        promised = set(acknowledged)
    assert len(promised) >= MIN_ACKNOWLEDGED * BATCH

    node.start(STARTUP_TIMEOUT)
    with node.client(auth=node.auth) as http:
        present: set[str] = set()
        page = 0
        while True:
            listing = http.get(
                "/api/handles", params={"prefix": PREFIX, "page": page, "pageSize": 10_000}
            ).json()
            present.update(listing["handles"])
            if len(listing["handles"]) < 10_000:
                break
            page += 1
        missing = promised - present
        assert not missing, f"{len(missing)} of {len(promised)} acknowledged items lost"
        for handle in sorted(promised)[:: max(1, len(promised) // 50)]:
            values = http.get(f"/api/handles/{handle}", params={"auth": "true"}).json()["values"]
            tag, i = handle.rsplit("-", 2)[1:]
            assert [v["data"]["value"] for v in values if v["type"] == "URL"] == [
                f"https://e.com/{tag}/{i}"
            ]
