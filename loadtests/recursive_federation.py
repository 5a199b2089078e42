"""The federation of :mod:`loadtests.bench_recursive`: its prefixes and identifiers (which
ranges each figure requests), the scratch databases and their seeding, and the ``idis serve``
processes (top level, secondary, two recursive nodes) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nodes.generation_board import GenerationBoard
from nodes.processes import ServeProcess, free_ports, node_env, run_cli

HOST = "127.0.0.1"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
NATIONAL = "88"
SECONDARY = "88.100"
PREFIX = "88.100.1"
SUFFIX_FORMAT = "SN%08d"
COLD_PREFIX_BASE = 1000
"""New enterprise prefixes are 88.100.1000, 88.100.1001, ..."""
INDUSTRY_BASE = 5000
"""Fully cold walks go under the industry prefixes 88.5000, 88.5001, ... (their ``.1``)."""
COLD_SUFFIX = "FC"
SAMPLE = 50
"""Identifiers compared byte for byte at both nodes before the runs."""
WARM_TARGET = 0.9
COLD_TARGET = 3.0
READY_TIMEOUT = 60.0
CLI_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 5.0
MONITOR = "IDIS_FEDERATION__SECRET"
NODES = ("top-level", "secondary", "recursive", "recursive-seq")
COUNTERS = ("walks", "upstream_requests", "early_used", "early_settled")
"""``/api/stats`` counters checked around every cold pass (``walks``: answers not from memory)."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def handle_text(i: int) -> str:
    return f"{PREFIX}/{SUFFIX_FORMAT % i}"


def cold_prefix(n: int) -> str:
    return f"{SECONDARY}.{COLD_PREFIX_BASE + n}"


def industry_prefix(n: int) -> str:
    return f"{NATIONAL}.{INDUSTRY_BASE + n}"


# --- identifiers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A warm-up range and a measured range of identifier (or prefix) numbers."""

    warm: range
    measured: range


def _spans(start: int, size: int, passes: int) -> tuple[list[Span], int]:
    warm = max(10, size // 10)
    out = []
    for _ in range(passes):
        out.append(Span(range(start, start + warm), range(start + warm, start + warm + size)))
        start += warm + size
    return out, start


@dataclass(frozen=True)
class Plan:
    """Disjoint ranges: no cold figure requests a handle twice, or one any figure asked for.
    The three lookups of (f) are different handles or go to different nodes, so one range of
    prefixes serves all three."""

    warm_id: int
    sample: range
    direct: list[Span]
    recursive: list[Span]
    new_prefix: list[Span]
    """Numbers of enterprise prefixes (see :func:`cold_prefix`)."""
    fully_cold: list[Span]
    """Numbers of industry prefixes (see :func:`industry_prefix`), like the rest below."""
    sequential: list[Span]
    hops: list[Span]
    rows_needed: int
    cold_prefixes: int
    industries: int


def plan_ids(passes: int, cold: int) -> Plan:
    direct, end = _spans(1 + SAMPLE, cold, passes)
    recursive, end = _spans(end, cold, passes)
    new_prefix, prefixes = _spans(0, cold, passes)
    fully, industries = _spans(0, cold, passes)
    sequential, industries = _spans(industries, cold, passes)
    hops, industries = _spans(industries, cold, passes)
    sample = range(1, 1 + SAMPLE)
    return Plan(
        0, sample, direct, recursive, new_prefix, fully, sequential, hops, end, prefixes, industries
    )


def build_record(text: str, now: int) -> Any:
    """A product identifier as IDIS registers them: URL, template reference, an attribute, the
    default HS_ADMIN."""
    from registry.service import default_admin
    from resolver.identifiers import Handle
    from resolver.values import Data, HandleValue, Record

    suffix = text.partition("/")[2]
    values = [
        HandleValue(
            1, "URL", Data("string", f"https://trace.example.com/p/{suffix}"), timestamp=now
        ),
        HandleValue(1001, "IDIS_TEMPLATE", Data("string", f"{PREFIX}/TPL-PRODUCT"), timestamp=now),
        HandleValue(2000, "productName", Data("string", f"Valve {suffix}"), timestamp=now),
    ]
    values.append(default_admin(Handle.parse(text), values, now))
    return Record(text, tuple(values), 1)


# --- the scratch databases -------------------------------------------------------------------


async def _admin_execute(admin_dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _rows(records: Sequence[Any]) -> list[tuple[str, str, bytes, int]]:
    from resolver.codecs.stored import encode_values
    from resolver.identifiers import fold

    return [(fold(r.handle), r.handle, encode_values(r.values), 1) for r in records]


async def _seed(dsn: str, rows: int, prefixes: Sequence[str], now: int) -> float:
    """COPY ``rows`` identifiers under 88.100.1; for each of ``prefixes`` (enterprise prefixes)
    the two records ``idis prefix init`` writes (sharing one secret hash: it is never checked)
    and one identifier; home those prefixes.  VACUUM ANALYZE afterwards."""
    import asyncpg

    from registry.prefixes import admin_record, prefix_record
    from registry.secrets import legacy_hash
    from resolver.identifiers import fold

    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        columns = ["key", "handle", "data", "version"]
        chunk = 50_000
        for first in range(0, rows, chunk):
            ids = range(first, min(rows, first + chunk))
            records = [build_record(handle_text(i), now) for i in ids]
            await conn.copy_records_to_table("handles", records=_rows(records), columns=columns)
        secret_hash = legacy_hash(secrets.token_urlsafe(16))
        for first in range(0, len(prefixes), chunk // 3):
            records = []
            for prefix in prefixes[first : first + chunk // 3]:
                records += [
                    prefix_record(prefix, now, []),
                    admin_record(prefix, secret_hash, now),
                    build_record(f"{prefix}/{COLD_SUFFIX}", now),
                ]
            await conn.copy_records_to_table("handles", records=_rows(records), columns=columns)
        await conn.copy_records_to_table(
            "prefixes", records=[(fold(p), p) for p in prefixes], columns=["key", "prefix"]
        )
        await conn.execute("VACUUM ANALYZE handles")
    finally:
        await conn.close()
    return time.monotonic() - started


async def _seed_top(dsn: str, industries: Sequence[str]) -> None:
    """At the top level, ``0.NA/88.X`` of each of ``industries`` delegated to the secondary
    node as ``88.100`` is: a copy of the record ``idis federation join`` left for ``88.100``."""
    import asyncpg

    from resolver.identifiers import fold, prefix_handle

    conn = await asyncpg.connect(dsn)
    try:
        key = fold(prefix_handle(SECONDARY))
        data = await conn.fetchval("SELECT data FROM handles WHERE key = $1", key)
        records = [(fold(prefix_handle(p)), prefix_handle(p), data, 1) for p in industries]
        columns = ["key", "handle", "data", "version"]
        await conn.copy_records_to_table("handles", records=records, columns=columns)
        await conn.execute("VACUUM ANALYZE handles")
    finally:
        await conn.close()


# --- processes -------------------------------------------------------------------------------


def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """GET ``path`` on 127.0.0.1:``port``: status, body, headers (names in lower case)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def set_affinity(pid: int, cpus: Sequence[int]) -> None:
    """Move every thread of process ``pid`` to ``cpus``."""
    with suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)


class Node(ServeProcess):
    """One ``idis serve`` process of the federation (see :mod:`nodes.processes`)."""

    @property
    def base(self) -> str:
        return self.url

    def cli(self, *args: str) -> str:
        """``idis ARGS`` with this node's settings; its output (raises with it on failure)."""
        return run_cli(self.env, *args, cwd=self.home, timeout=CLI_TIMEOUT)

    def counters(self) -> dict[str, int]:
        # /api/stats is for operators: the federation secret every node here is given.
        credentials = base64.b64encode(f"federation:{self.env[MONITOR]}".encode()).decode()
        status, body, _ = get(self.port, "/api/stats", {"authorization": f"Basic {credentials}"})
        if status != 200:
            raise RuntimeError(f"{self.name}: /api/stats answered HTTP {status}")
        stats = json.loads(body)
        return {k: int(stats.get(k, 0)) for k in COUNTERS}


@dataclass
class Federation:
    """The top-level, secondary and recursive nodes, and the scratch databases."""

    workdir: Path
    postgres: str
    rows: int
    cold_prefixes: int
    industries: int
    seeded_at: int = field(default_factory=lambda: int(time.time()))
    nodes: dict[str, Node] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: f"{os.getpid()}_{secrets.token_hex(3)}")
    monitor: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    """The federation secret of every node, with which the bench reads their ``/api/stats``."""
    created: list[str] = field(default_factory=list)
    """Scratch databases created (dropped by :meth:`close`)."""
    seed_seconds: float = 0.0

    @property
    def admin_dsn(self) -> str:
        pg = urlsplit(self.postgres)
        return f"postgresql://{pg.username or 'postgres'}@{pg.hostname}:{pg.port or 5432}/postgres"

    def database(self, role: str) -> str:
        """Create and migrate a scratch database for ``role``; its URL."""
        from registry.migrate import upgrade

        name = f"idis_benchrec_{role}_{self.tag}"
        asyncio.run(_admin_execute(self.admin_dsn, f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        url = self.admin_dsn.rpartition("/")[0] + "/" + name
        upgrade(url)
        return url

    def _node(self, name: str, role: str, port: int, extra: dict[str, str]) -> Node:
        home = self.workdir / name
        home.mkdir(parents=True)
        env = node_env(
            home / "data",
            port,
            name=f"benchrec{os.getpid()}-{name}",
            log_level="warning",
            extra={"IDIS_ROLE": role, MONITOR: self.monitor, **extra},
        )
        node = Node(name, env, home)
        self.nodes[name] = node
        return node

    def start(self) -> None:
        top_port, secondary_port, recursive_port, sequential_port = free_ports(4)
        top_urls = json.dumps([f"http://{HOST}:{top_port}"])
        secrets_dir = self.workdir / "secrets"
        secrets_dir.mkdir()
        national, holder, enterprise = (secrets_dir / n for n in ("88", "88.100", "88.100.1"))
        for path in (national, holder, enterprise):
            path.write_text(secrets.token_urlsafe(24) + "\n")

        say(f"top-level node: idis prefix init {NATIONAL}, prefix allocate {SECONDARY}, serve")
        top_db = self.database("top")
        top = self._node(
            "top-level",
            "top-level",
            top_port,
            {"IDIS_DATABASE_URL": top_db, "IDIS_MIGRATE_ON_START": "false"},
        )
        top.cli("prefix", "init", NATIONAL, "--secret-file", str(national))
        top.cli("prefix", "allocate", SECONDARY, "--secret-file", str(holder))
        top.start(READY_TIMEOUT)

        say(f"secondary node: idis federation join {SECONDARY}, prefix init {PREFIX}, serve")
        secondary_db = self.database("secondary")
        secondary = self._node(
            "secondary",
            "secondary",
            secondary_port,
            {
                "IDIS_DATABASE_URL": secondary_db,
                "IDIS_MIGRATE_ON_START": "false",
                "IDIS_FEDERATION__TOP_LEVEL": top_urls,
            },
        )
        secondary.cli("federation", "join", SECONDARY, "--secret-file", str(holder))
        secondary.cli("prefix", "init", PREFIX, "--secret-file", str(enterprise))
        industries = [industry_prefix(n) for n in range(self.industries)]
        say(
            f"  seeding {self.rows:,} identifiers under {PREFIX}; {self.cold_prefixes:,}"
            f" enterprise prefixes {cold_prefix(0)}..{cold_prefix(self.cold_prefixes - 1)}"
            f" and {len(industries):,} more, {industries[0]}.1..{industries[-1]}.1, with one"
            f" identifier each; {industries[0]}..{industries[-1]} delegated like {SECONDARY}"
        )
        asyncio.run(_seed_top(top_db, industries))
        # Written behind the running top level's back: let its caches go, as idis import does.
        board = GenerationBoard(Path(top.env["IDIS_DATA_DIR"]) / "generations.board")
        board.bump_all()
        board.close()
        prefixes = [cold_prefix(n) for n in range(self.cold_prefixes)]
        prefixes += [f"{industry}.1" for industry in industries]
        self.seed_seconds = asyncio.run(_seed(secondary_db, self.rows, prefixes, self.seeded_at))
        secondary.start(READY_TIMEOUT)

        say("recursive node: serve, its root the top-level node")
        recursive = self._node(
            "recursive", "recursive", recursive_port, {"IDIS_FEDERATION__TOP_LEVEL": top_urls}
        )
        recursive.start(READY_TIMEOUT)
        say("a second recursive node, for comparison: early requests off")
        sequential = self._node(
            "recursive-seq",
            "recursive",
            sequential_port,
            {"IDIS_FEDERATION__TOP_LEVEL": top_urls, "IDIS_FEDERATION__EARLY_REQUESTS": "false"},
        )
        sequential.start(READY_TIMEOUT)

    def close(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop(STOP_TIMEOUT)
        while self.created:
            name = self.created.pop()
            with suppress(Exception):
                sql = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                asyncio.run(_admin_execute(self.admin_dsn, sql))
