"""The failed-login stream of ``idis bench`` (loadtests/logins.py) against a real node: the
node throttles the attacker's address, and the suite's own clients, which come after it and
log in from 127.0.0.1 (batch registration), are not refused for the attacker's failures."""

from __future__ import annotations

from pathlib import Path

import httpx
from nodeproc import PREFIX, start_node

from loadtests.logins import FailedLogins


def test_failed_logins_leave_the_suites_own_clients_logged_in(pg_url: str, tmp_path: Path) -> None:
    node = start_node(tmp_path, database_url=pg_url)
    try:
        attacker = FailedLogins(node.url, 1.5, prefix=PREFIX)
        try:
            seen = attacker.result(timeout=60.0)
        finally:
            attacker.stop()
        # 200 a second for 1.5 s: past the per-address allowance (30 a minute), so throttled.
        assert seen["requests"] > 60
        assert seen["by_status"].get("429", 0) > 0, seen
        # The administrator logs in for the first time since the node started (nothing
        # remembered), from 127.0.0.1 as the suite's clients do: not refused.
        written = httpx.put(
            f"{node.url}/api/handles/{PREFIX}/AFTER-THE-ATTACK",
            json=[{"index": 1, "type": "URL", "data": "https://example.org/"}],
            auth=node.auth,
            timeout=10.0,
        )
        assert written.status_code in (200, 201), written.text
        read = httpx.get(f"{node.url}/api/handles/{PREFIX}/AFTER-THE-ATTACK", timeout=10.0)
        assert read.status_code == 200 and "https://example.org/" in read.text
    finally:
        node.stop()
