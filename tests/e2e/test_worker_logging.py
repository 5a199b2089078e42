"""With several workers, each worker's log lines of the configured level reach the node's log:
spawned workers start with logging unset, where INFO lines used to be lost."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from nodeproc import NodeProcess

from nodes.processes import run_cli

WAIT = 30.0


def test_every_worker_logs_info_lines(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory(
        prefix="88",
        workers=2,
        extra_env={"IDIS_ROLE": "top-level", "IDIS_CACHE__PREFIX_RECORDS": "1"},
    )
    secret = tmp_path / "secret"
    secret.write_text("allocated-prefix-secret\n", encoding="utf-8")
    for prefix in ("88.100", "88.200"):
        run_cli(node.env, "prefix", "allocate", prefix, "--secret-file", str(secret))
    deadline = time.monotonic() + WAIT
    while True:
        # New connections, so that both workers serve some: each then reads the prefix
        # records, finds more than the one it may keep, and says so at INFO level.
        httpx.get(f"{node.base_url}/api/handles/0.NA/88.100", timeout=10)
        log = node.log()
        workers = set(re.findall(r"INFO nodes\.http\.server worker (\d+) serves", log))
        too_many = log.count("INFO resolver.prefix_records more than 1 prefix records")
        if (len(workers) == 2 and too_many >= 2) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(workers) == 2, log
    assert too_many >= 2, log
