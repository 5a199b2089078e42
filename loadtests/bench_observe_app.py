"""What observability costs a cached REST resolution inside the application (issue 15), measured
without an HTTP server or a load generator, so that a shared machine's noise does not drown a
difference of a few hundred nanoseconds.

Two nodes of the same code in one process on one SQLite database: one with its metrics and
its usage counting (national statistics) on, one with ``IDIS_METRICS=false`` and
``IDIS_STATS__ENABLED=false``; the process logs JSON (logging is per process, and a cached
answer logs nothing either way).  Each is handed the same ASGI request for a handle it holds
in its rendered hot copies, in blocks of calls that alternate between the two; the figure is
the CPU time per call (``time.process_time``, which the metrics' flush thread is part of), the
least over the blocks (the block least disturbed by other work).

:func:`measure` returns (all times in nanoseconds of CPU per call)::

    {"app_ns_on": float, "app_ns_off": float, "app_delta_ns": float,
     "app_ns_on_median": float, "app_ns_off_median": float,
     "blocks": int, "calls_per_block": int, "counted": int}

``counted`` is what the metrics of the node with them on counted for the calls it was given
(all of them, or the figure measured a node that skipped its counting).  Run alone:
``python3 -m loadtests.bench_observe_app [--quick]`` prints the dict as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from nodes.processes import node_env, run_cli

PREFIX = "88.100.1"
HANDLE = f"{PREFIX}/OBSERVE"
PATH = f"/api/handles/{HANDLE}"
SECRET = "observe-bench-secret"


def _scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def _measure(root: Path, blocks: int, calls: int) -> dict[str, Any]:
    from nodes.bootstrap import build_node
    from nodes.http.server import create_app
    from nodes.settings import load_settings

    database = f"sqlite:///{root / 'idis.db'}"
    nodes, apps = {}, {}
    for kind, metrics in (("on", True), ("off", False)):
        settings = load_settings(
            data_dir=root / kind,
            database_url=database,
            metrics=metrics,
            stats={"enabled": metrics},
            secret_key_file=root / "init" / "secret.key",
        )
        nodes[kind] = build_node(settings)
        apps[kind] = create_app(nodes[kind])
    sent: list[MutableMapping[str, Any]] = []

    async def keep(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def drop(message: MutableMapping[str, Any]) -> None:
        pass

    body = json.dumps([{"index": 1, "type": "URL", "data": "https://example.org/o"}]).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    credentials = base64.b64encode(f"300%3A{PREFIX}%2FADMIN:{SECRET}".encode()).decode()
    headers = [
        (b"authorization", f"Basic {credentials}".encode()),
        (b"content-type", b"application/json"),
    ]
    await apps["on"](_scope("PUT", headers), receive, keep)
    if sent[0]["status"] >= 300:
        raise RuntimeError(f"PUT {PATH} answered {sent[0]['status']}: {sent[-1]['body']!r}")
    scope = _scope()
    for kind, app in apps.items():  # cached in memory, then kept as a hot copy
        for _ in range(3):
            sent.clear()
            await app(scope, receive, keep)
            if sent[0]["status"] != 200:
                raise RuntimeError(f"{kind}: GET {PATH} answered {sent[0]['status']}")
    before = _resolutions(nodes["on"])
    times: dict[str, list[float]] = {"on": [], "off": []}
    for block in range(blocks):
        order = ("on", "off") if block % 2 == 0 else ("off", "on")
        for kind in order:
            app = apps[kind]
            started = time.process_time()
            for _ in range(calls):
                await app(scope, receive, drop)
            times[kind].append((time.process_time() - started) / calls * 1e9)
    counted = _resolutions(nodes["on"]) - before
    for node in nodes.values():
        node.metrics.close()
        await node.close()
    on, off = min(times["on"]), min(times["off"])
    return {
        "app_ns_on": round(on, 1),
        "app_ns_off": round(off, 1),
        "app_delta_ns": round(on - off, 1),
        "app_ns_on_median": round(statistics.median(times["on"]), 1),
        "app_ns_off_median": round(statistics.median(times["off"]), 1),
        "blocks": blocks,
        "calls_per_block": calls,
        "counted": counted,
    }


def _resolutions(node: Any) -> int:
    snapshot = node.metrics.snapshot()
    return int(
        sum(v for n, k, v in snapshot["counters"] if n == "idis_requests" and k[1] == "resolve")
    )


def measure(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """The figure (keys in the module's docstring), with its files under ``workdir``."""
    from nodes.logs import setup_logging

    workdir.mkdir(parents=True, exist_ok=True)
    secret = workdir / "admin.secret"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    env = node_env(
        workdir / "init",
        8000,  # never served: the CLI only checks it
        name="observe-app",
        extra={"IDIS_DATABASE_URL": f"sqlite:///{workdir / 'idis.db'}"},
    )
    run_cli(env, "prefix", "init", PREFIX, "--secret-file", str(secret))
    blocks, calls = (9, 10_000) if quick else (21, 20_000)
    # Logging is per process: put the caller's back afterwards (``idis bench`` runs this in
    # its own process, whose later steps would otherwise log JSON at level info).
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    httpx_level = logging.getLogger("httpx").level
    setup_logging("info", "json")
    try:
        return asyncio.run(_measure(workdir, blocks, calls))
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(httpx_level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter blocks")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idis-observe-") as scratch:
        result = measure(Path(scratch), quick=args.quick)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
