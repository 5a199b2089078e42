"""Recursive resolution beside a direct lookup at the authoritative node, in one run.

    python -m loadtests.bench_recursive [--duration S] [--concurrency C] [--rows N] [--json F]

Starts a minimal federation as real ``idis serve`` processes on 127.0.0.1, one worker each: a
top-level node homing ``88`` that allocated ``88.100``; a secondary node that joined as
``88.100`` and hosts the enterprise prefix ``88.100.1`` with ``--rows`` identifiers, plus one
identifier under each of many more enterprise prefixes ``88.100.N`` (homed there with ``idis
prefix init``'s records, so that the top level refers to the secondary for them), and under
``88.X.1`` for many industry prefixes ``88.X`` the top level delegates to it as it does
``88.100`` (for fully cold walks: each walk under an industry prefix no node was asked about);
a recursive node whose root is the top-level node, and a second one with early requests off.
The top-level and secondary nodes each have a scratch PostgreSQL database (127.0.0.1:5432, user
postgres), created here and dropped at the end.  All traffic goes to 127.0.0.1.

Warm figures, wrk at ``--concurrency`` connections for ``--duration`` seconds after a warm-up,
in ``--warm-slices`` runs of each taken in turn, every response checked byte for byte:

(a) direct: one identifier at the secondary, in its memory: req/s, p50/p99;
(b) recursive: the same identifier through the recursive node, in its memory: req/s as a
    ratio of (a), target >= 0.9.

Cold figures, one request at a time from one client that takes the figures in turn, ``--block``
requests of each (so that every figure and its baseline see the same machine, and each node
runs warm), each request a handle never requested before from any node, every answer checked:

(d) direct: an identifier at the secondary (a miss through its memory to PostgreSQL): p50/p99;
(c) recursive, known prefix site: an identifier through the recursive node, which remembers
    where 88.100.1 is served (one upstream request, a miss at the secondary): p50 as a ratio
    of (d), target <= 3;
(n) recursive, new enterprise prefix: an identifier under an enterprise prefix ``88.100.N``
    nobody was asked about, the recursive node remembering where 88.100's derived prefixes are
    administered (from an earlier walk, as a DNS resolver remembers a zone cut): the identifier
    asked ahead at the secondary, which holds 0.NA/88.100.N and answers for it (a miss there):
    p50 as a ratio of (d), target <= 3;
(e) recursive, fully cold: an identifier under an industry prefix ``88.X`` no node was asked
    about, so that the recursive node remembers nothing on its way (the walk: 0.NA/88.X.1 at the
    top level, its 303 referral to the secondary, the identifier asked ahead there; a miss at
    every node): p50 as a ratio of (d), target <= 3;
(e0) as (e), through the recursive node with ``IDIS_FEDERATION__EARLY_REQUESTS=false`` (it asks
    the secondary for 0.NA/88.X.1, then for the identifier): what asking ahead saves;
(f) the lookups of a fully cold walk asked directly: (f1) the top level's referral for
    0.NA/88.X.1 and (f3) the secondary's 88.X.1/S, summed (what a fully cold walk cannot go
    below), and (f2) the secondary's 0.NA/88.X.1, which (e0) asks too;
(w) a cached identifier at the secondary: the client's own floor.

Each cold figure also gets the CPU time each node and PostgreSQL spent on its requests
(``/proc/PID/schedstat`` read around every request), and the nodes' ``/api/stats`` counters must
show the upstream requests and store misses the plan says, or the run fails.  The exit status
is 0 when every target is met without errors.  See loadtests/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from loadtests.client import Connection, get_request, watchdog
from loadtests.loadgen import GeneratorMissing, WrkResult, find_wrk, run_wrk
from loadtests.stats import percentile
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


@dataclass
class Options:
    """What :func:`run_benchmark` takes (the command line's options)."""

    duration: float = 10.0
    """Seconds of each warm figure per round."""
    warm_slices: int = 5
    """Warm runs per figure per round, (a) and (b) in turn: the duration split between them
    (fewer when the duration is shorter than this many seconds)."""
    warmup: float = 2.0
    """Seconds of warm-up before each warm run and (at most) before each cold pass."""
    rounds: int = 3
    concurrency: int = 32
    """Connections of the warm runs."""
    rows: int = 200_000
    """Identifiers under 88.100.1 (at least as many as the cold passes use)."""
    cold: int = 3_000
    """Requests of each cold figure per round: never-requested handles, one at a time."""
    cold_seconds: float = 60.0
    """A bound on each cold pass's time (it ends sooner when its handles run out)."""
    block: int = 50
    """Cold requests of one figure in a row before the next figure's turn: short enough that a
    figure and its baseline see the same machine, long enough that each node runs warm."""
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    pin: bool = True
    """Warm runs: the nodes on all CPUs but the last, wrk on the last."""
    pin_cold: bool = False
    """Cold passes pinned that way too (by default nothing is pinned: see the README)."""
    profile: str | None = None
    """A directory: add a cold pass of (c) and (e) with py-spy recording the recursive node."""

    def validate(self) -> None:
        if urlsplit(self.postgres).hostname not in LOCAL_HOSTS:
            raise ValueError("--postgres must be on 127.0.0.1")
        if not (1 <= self.duration <= 600 and 0 <= self.warmup <= 60 and 1 <= self.rounds <= 10):
            raise ValueError("--duration must be 1-600 s, --warmup 0-60 s, --rounds 1-10")
        if not 1 <= self.concurrency <= 256:
            raise ValueError("--concurrency must be 1-256")
        if not 1 <= self.warm_slices <= 60:
            raise ValueError("--warm-slices must be 1-60")
        if not (100 <= self.cold <= 100_000 and 5 <= self.cold_seconds <= 3600):
            raise ValueError("--cold must be 100-100000, --cold-seconds 5-3600")
        if not 1 <= self.block <= self.cold:
            raise ValueError("--block must be 1 to --cold")
        if not 1_000 <= self.rows <= 10_000_000:
            raise ValueError("--rows must be 1000-10000000")


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


# --- the runs --------------------------------------------------------------------------------


ENTERPRISE = f"/api/handles/{SECONDARY}."
INDUSTRY = f"/api/handles/{NATIONAL}."
INDUSTRY_HANDLE = f"{NATIONAL}.".encode()
RESULT = b'{"responseCode":1,"handle":"'


@dataclass(frozen=True)
class Cold:
    """A cold figure: where its requests go, what they ask, what each must cost upstream."""

    key: str
    label: str
    node: str
    span: str
    """The :class:`Plan` list its numbers come from ("" for a fixed path)."""
    path_format: str
    """The request path with ``%d`` for the number."""
    body_start: bytes
    expect: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per node, ``/api/stats`` counters per request (absent: zero)."""
    offset: int = 0
    """Added to the plan's numbers: :data:`COLD_PREFIX_BASE` for enterprise prefixes."""

    def path(self, number: int) -> bytes:
        if "%" not in self.path_format:
            return self.path_format.encode()
        return (self.path_format % (number + self.offset)).encode()


COLD_FIGURES = (
    Cold(
        "cached",
        "(w) direct, cached id",
        "secondary",
        "",
        "/api/handles/" + handle_text(0),
        RESULT + PREFIX.encode(),
    ),
    Cold(
        "direct_cold",
        "(d) direct, cold id",
        "secondary",
        "direct",
        f"/api/handles/{PREFIX}/{SUFFIX_FORMAT}",
        RESULT + PREFIX.encode(),
        {"secondary": {"walks": 1}},
    ),
    Cold(
        "recursive_cold",
        "(c) recursive, cold id, known prefix site",
        "recursive",
        "recursive",
        f"/api/handles/{PREFIX}/{SUFFIX_FORMAT}",
        RESULT + PREFIX.encode(),
        {"recursive": {"walks": 1, "upstream_requests": 1}, "secondary": {"walks": 1}},
    ),
    Cold(
        "new_prefix",
        "(n) recursive, new enterprise prefix",
        "recursive",
        "new_prefix",
        f"{ENTERPRISE}%d/{COLD_SUFFIX}",
        RESULT + SECONDARY.encode(),
        {
            "recursive": {"walks": 1, "upstream_requests": 1, "early_used": 1, "early_settled": 1},
            "secondary": {"walks": 1},
        },
        offset=COLD_PREFIX_BASE,
    ),
    Cold(
        "fully_cold",
        "(e) recursive, fully cold",
        "recursive",
        "fully_cold",
        f"{INDUSTRY}%d.1/{COLD_SUFFIX}",
        RESULT + INDUSTRY_HANDLE,
        {
            "recursive": {"walks": 1, "upstream_requests": 2, "early_used": 1, "early_settled": 1},
            "top-level": {"walks": 1},
            "secondary": {"walks": 1},
        },
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "fully_cold_seq",
        "(e0) recursive, fully cold, early requests off",
        "recursive-seq",
        "sequential",
        f"{INDUSTRY}%d.1/{COLD_SUFFIX}",
        RESULT + INDUSTRY_HANDLE,
        {
            "recursive-seq": {"walks": 1, "upstream_requests": 3},
            "top-level": {"walks": 1},
            "secondary": {"walks": 2},
        },
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "hop_top",
        "(f1) top level, 0.NA/P: referral",
        "top-level",
        "hops",
        f"/api/handles/0.NA/{NATIONAL}.%d.1",
        b'{"responseCode":303,"handle":"0.NA/' + INDUSTRY_HANDLE,
        {"top-level": {"walks": 1}},
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "hop_prefix",
        "(f2) secondary, 0.NA/P",
        "secondary",
        "hops",
        f"/api/handles/0.NA/{NATIONAL}.%d.1",
        RESULT + b"0.NA/" + INDUSTRY_HANDLE,
        {"secondary": {"walks": 1}},
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "hop_handle",
        "(f3) secondary, P/S",
        "secondary",
        "hops",
        f"{INDUSTRY}%d.1/{COLD_SUFFIX}",
        RESULT + INDUSTRY_HANDLE,
        {"secondary": {"walks": 1}},
        offset=INDUSTRY_BASE,
    ),
)
HOPS = ("hop_top", "hop_handle")
"""The lookups a fully cold walk makes, asked directly: (f) is their sum."""
CPU_GROUPS = (*NODES, "postgres")


class SchedMeter:
    """CPU time of groups of processes in nanoseconds: the first field of ``/proc/PID/schedstat``
    (time on a CPU, exact, unlike the clock ticks of ``/proc/PID/stat``), read with ``pread``
    from files kept open, about a microsecond each.  The main thread of each process: the nodes
    serve from their event loop, PostgreSQL backends have one thread."""

    def __init__(self, groups: dict[str, Sequence[int]]) -> None:
        self._fds: dict[str, list[int]] = {}
        for name, pids in groups.items():
            fds = []
            for pid in pids:
                with suppress(OSError):
                    fds.append(os.open(f"/proc/{pid}/schedstat", os.O_RDONLY))
            self._fds[name] = fds

    def read(self) -> dict[str, int]:
        out = {}
        for name, fds in self._fds.items():
            total = 0
            for fd in fds:
                with suppress(OSError, ValueError):  # a process that ended counts no more
                    total += int(os.pread(fd, 128, 0).split(b" ", 1)[0])
            out[name] = total
        return out

    def close(self) -> None:
        for fds in self._fds.values():
            for fd in fds:
                os.close(fd)


async def _backend_pids(admin_dsn: str, databases: Sequence[str]) -> list[int]:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])", list(databases)
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


def cpu_plan(pin: bool) -> tuple[list[int] | None, list[int] | None]:
    """(node CPUs, load generator CPUs): the generator on the last CPU, the nodes on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return cpus[:-1], [cpus[-1]]


class Bench:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.o = options
        self.passes = options.rounds + (1 if options.profile else 0)
        self.plan = plan_ids(self.passes, options.cold)
        self.all_cpus = sorted(os.sched_getaffinity(0))
        self.node_cpus, self.gen_cpus = cpu_plan(options.pin)
        self.fed = Federation(
            workdir,
            options.postgres,
            max(options.rows, self.plan.rows_needed),
            self.plan.cold_prefixes + 2,  # the last two for the checks before the runs
            self.plan.industries + 1,  # the last likewise
        )
        self.report: dict[str, Any] = {
            "settings": asdict(options)
            | {
                "rows": self.fed.rows,
                "enterprise_prefixes": self.fed.cold_prefixes,
                "industry_prefixes": self.fed.industries,
                "node_cpus": self.node_cpus,
                "generator_cpus": self.gen_cpus,
                "cpus": os.cpu_count(),
                "warm_generator": "wrk, 1 thread, keep-alive connections",
                "cold_client": "one Python client (uvloop, loadtests.client), one request at a"
                " time, the figures in turn",
                "workers_per_node": 1,
            },
            "rounds": [],
            "checks": {"counters": []},
        }

    def node(self, name: str) -> Node:
        return self.fed.nodes[name]

    def place(self, pinned: bool) -> list[int] | None:
        """Pin the nodes to their CPUs, or let them run anywhere; the load generator's CPUs."""
        cpus = self.node_cpus if pinned and self.node_cpus else self.all_cpus
        for node in self.fed.nodes.values():
            set_affinity(node.pid, cpus)
        return self.gen_cpus if pinned else None

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: self.node(name).counters() for name in NODES}

    # -- checks --

    def check_before(self) -> None:
        """Both nodes give the same bytes for a sample; a fully cold walk takes the whole way;
        under a new enterprise prefix, once 88.100's delegation is known, it starts at the
        secondary; a repeated request is answered from memory; an unknown identifier is not
        found."""
        from resolver.render import public_resolution

        recursive, secondary = self.node("recursive"), self.node("secondary")
        problems: list[str] = []
        unused = (  # prefixes no run uses
            f"{industry_prefix(self.plan.industries)}.1",
            cold_prefix(self.plan.cold_prefixes),  # teaches 88.100's delegation
            cold_prefix(self.plan.cold_prefixes + 1),
        )
        walks = []
        for prefix in unused:
            _, _, headers = get(recursive.port, f"/api/handles/{prefix}/{COLD_SUFFIX}")
            walks.append(unquote(headers.get("x-idis-source", "")).split(" -> "))
        self.report["checks"]["full_walk_path"] = walks[0]
        self.report["checks"]["new_prefix_path"] = walks[2]
        # The secondary holds 0.NA/P: its answer for the identifier stands without the record.
        if len(walks[0]) != 2 or not walks[0][0].endswith(":303"):
            problems.append(f"a fully cold walk went {walks[0]}, not top level then secondary")
        if len(walks[2]) != 2 or not walks[2][0].endswith("delegation cached"):
            problems.append(
                f"a new prefix's walk went {walks[2]}, not from the delegation {walks[1]} taught"
            )
        for i in [self.plan.warm_id, *self.plan.sample]:
            text = handle_text(i)
            expected = public_resolution(build_record(text, self.fed.seeded_at))
            for node in (secondary, recursive):
                status, body, _ = get(node.port, "/api/handles/" + text)
                if status != 200 or body != expected:
                    problems.append(f"{node.name} {text}: HTTP {status} {body[:160]!r}")
        _, _, headers = get(recursive.port, "/api/handles/" + handle_text(self.plan.warm_id))
        if headers.get("x-idis-source") != "memory":
            problems.append(f"recursive: a repeated request was not served from memory: {headers}")
        status, body, _ = get(recursive.port, f"/api/handles/{PREFIX}/NO-SUCH-ID")
        if status != 404 or b'"responseCode":100' not in body:
            problems.append(f"recursive {PREFIX}/NO-SUCH-ID: HTTP {status} {body[:100]!r}")
        self.report["checks"]["before"] = problems or "ok"
        if problems:
            raise RuntimeError("wrong answers before the runs:\n  " + "\n  ".join(problems))

    # -- warm figures --

    def warm(self) -> dict[str, Any]:
        """(a) and (b): a warm-up of each, then ``--warm-slices`` runs of each in turn, together
        ``--duration`` seconds per figure, so that both see the same machine."""
        path = "/api/handles/" + handle_text(self.plan.warm_id)
        figures = {"direct_warm": self.node("secondary"), "recursive_warm": self.node("recursive")}
        bodies = {}
        for node in figures.values():
            status, body, headers = get(node.port, path)
            if status != 200 or headers.get("x-idis-source") != "memory":
                raise RuntimeError(f"{node.name}: {path} not from memory: {status} {headers}")
            bodies[node.name] = body
        groups: dict[str, Sequence[int]] = {n: [self.node(n).pid] for n in NODES}
        common: dict[str, Any] = {
            "concurrency": self.o.concurrency,
            "cpus": self.place(pinned=self.o.pin),
        }
        if self.o.warmup > 0:
            for key, node in figures.items():
                url, body = node.base + path, bodies[node.name]
                run_wrk(f"{key} warm-up", url, body, duration=self.o.warmup, **common)
        # A wrk run lasts whole seconds, at least one: fewer slices for a short duration.
        slices = max(1, min(self.o.warm_slices, int(self.o.duration)))
        seconds = self.o.duration / slices
        runs: dict[str, list[WrkResult]] = {key: [] for key in figures}
        order = list(figures.items())
        for k in range(slices):
            for key, node in order[k % 2 :] + order[: k % 2]:  # alternate which goes first
                url, body = node.base + path, bodies[node.name]
                runs[key].append(
                    run_wrk(key, url, body, duration=seconds, cpu_groups=groups, **common)
                )
        out = {key: _merge(results) for key, results in runs.items()}
        for key, fig in out.items():
            say(
                f"  {key}: {fig['rate']:,.0f} req/s, p50 {fig['p50_ms']:.2f} ms,"
                f" p99 {fig['p99_ms']:.2f} ms, {fig['error_count']} errors"
            )
        return out

    # -- cold figures --

    def cold(self, n: int, figures: Sequence[Cold] = COLD_FIGURES) -> dict[str, Any]:
        """One cold pass of ``figures`` over round ``n``'s ranges: a warm-up over the warm-up
        ranges, then the measured ranges, the figures' requests taken in turn."""
        own = os.sched_getaffinity(0)
        client_cpus = self.place(pinned=self.o.pin_cold)
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        try:
            spans = {f.key: getattr(self.plan, f.span)[n] if f.span else None for f in figures}
            if self.o.warmup > 0:
                self._interleave(figures, spans, warm=True, meter=None)
            dbs = list(self.fed.created)
            groups: dict[str, Sequence[int]] = {m: [self.node(m).pid] for m in NODES}
            groups["postgres"] = asyncio.run(_backend_pids(self.fed.admin_dsn, dbs))
            meter = SchedMeter(groups)
            before = self.counters()
            try:
                out = self._interleave(figures, spans, warm=False, meter=meter)
            finally:
                meter.close()
            after = self.counters()
        finally:
            os.sched_setaffinity(0, own)
        self._check_counters(figures, out, before, after)
        for f in figures:
            fig = out[f.key]
            say(
                f"  {f.label}: {fig['ok']:,} requests, p50 {fig['p50_ms']:.3f} ms,"
                f" p99 {fig['p99_ms']:.2f} ms, {fig['errors']} errors;"
                f" CPU us/request {fig['cpu_us']}"
            )
        return out

    def _interleave(
        self,
        figures: Sequence[Cold],
        spans: dict[str, Span | None],
        *,
        warm: bool,
        meter: SchedMeter | None,
    ) -> dict[str, Any]:
        ranges = {
            key: (span.warm if warm else span.measured) if span else None
            for key, span in spans.items()
        }
        count = min(len(r) for r in ranges.values() if r is not None)
        seconds = min(self.o.warmup, self.o.cold_seconds) if warm else self.o.cold_seconds
        requests: dict[str, list[bytes]] = {}
        for f in figures:
            numbers = ranges[f.key] or range(count)
            host = f"{HOST}:{self.node(f.node).port}"
            requests[f.key] = [get_request(host, f.path(i)) for i in numbers[:count]]

        import uvloop

        return uvloop.run(self._requests(figures, requests, count, seconds, meter))

    async def _requests(
        self,
        figures: Sequence[Cold],
        requests: dict[str, list[bytes]],
        count: int,
        seconds: float,
        meter: SchedMeter | None,
    ) -> dict[str, Any]:
        ports = {f.key: self.node(f.node).port for f in figures}
        conns = [await Connection.open(HOST, ports[f.key]) for f in figures]
        guard = asyncio.ensure_future(watchdog(conns, REQUEST_TIMEOUT))
        latencies: dict[str, list[int]] = {f.key: [] for f in figures}
        errors = dict.fromkeys(latencies, 0)
        failures: dict[str, list[str]] = {f.key: [] for f in figures}
        cpu = {f.key: dict.fromkeys(CPU_GROUPS, 0) for f in figures}
        order = list(enumerate(figures))
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        try:
            block = self.o.block
            for first in range(0, count, block):
                if time.monotonic() > deadline:
                    break
                k = (first // block) % len(order)  # a different figure first each time
                for slot, f in order[k:] + order[:k]:
                    for i in range(first, min(count, first + block)):
                        conn = conns[slot]
                        a = meter.read() if meter else None
                        t0 = time.perf_counter_ns()
                        try:
                            status, body = await conn.request(requests[f.key][i])
                        except (ConnectionError, TimeoutError) as error:
                            errors[f.key] += 1
                            failures[f.key].append(repr(error))
                            conns[slot] = await Connection.open(HOST, ports[f.key])
                            continue
                        t1 = time.perf_counter_ns()
                        b = meter.read() if meter else None
                        if status != 200 or not body.startswith(f.body_start):
                            errors[f.key] += 1
                            failures[f.key].append(f"HTTP {status} {body[:120]!r}")
                            continue
                        latencies[f.key].append(t1 - t0)
                        if a is not None and b is not None:
                            used = cpu[f.key]
                            for group in CPU_GROUPS:
                                used[group] += b.get(group, 0) - a.get(group, 0)
        finally:
            guard.cancel()
            for conn in conns:
                conn.close()
        elapsed = time.monotonic() - started
        out: dict[str, Any] = {}
        for f in figures:
            ordered = sorted(latencies[f.key])
            ok = len(ordered)

            def ms(p: float, ordered: list[int] = ordered) -> float:
                return round(percentile(ordered, p) / 1e6, 4)

            out[f.key] = {
                "ok": ok,
                "errors": errors[f.key],
                "failures": failures[f.key][:5],
                "p50_ms": ms(50),
                "p90_ms": ms(90),
                "p99_ms": ms(99),
                "max_ms": round(ordered[-1] / 1e6, 3) if ordered else 0.0,
                "mean_ms": round(sum(ordered) / max(1, ok) / 1e6, 4),
                "cpu_us": {g: round(v / max(1, ok) / 1e3) for g, v in cpu[f.key].items()},
                "seconds": round(elapsed, 2),
                "ids_available": count,
            }
        return out

    def _check_counters(
        self,
        figures: Sequence[Cold],
        out: dict[str, Any],
        before: dict[str, dict[str, int]],
        after: dict[str, dict[str, int]],
    ) -> None:
        """Each node's counters grew by what the figures' requests should have made them."""
        errors = sum(out[f.key]["errors"] for f in figures)
        for name in NODES:
            for counter in COUNTERS:
                want = sum(
                    f.expect.get(name, {}).get(counter, 0) * (out[f.key]["ok"]) for f in figures
                )
                got = after[name][counter] - before[name][counter]
                # A failed request may or may not have reached the node.
                if abs(got - want) > 3 * errors:
                    self.report["checks"]["counters"].append(
                        f"{name} {counter}: {got} during a cold pass, expected {want}"
                    )

    def round(self, n: int) -> dict[str, Any]:
        return self.warm() | self.cold(n)

    def profiled_pass(self, directory: Path, n: int) -> None:
        """(c) and (e) once more with py-spy recording the recursive node."""
        from loadtests.bench_http import profile_summary

        spy = shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        directory.mkdir(parents=True, exist_ok=True)
        say(f"profiled pass of (c) and (e): py-spy on the recursive node, stacks in {directory}")
        out = directory / "recursive.txt"
        seconds = max(1, int(min(self.o.cold_seconds, 60)))
        record = [spy, "record", "--pid", str(self.node("recursive").pid), "--function"]
        record += ["--rate", "500", "--duration", str(seconds), "--format", "raw"]
        proc = subprocess.Popen(
            [*record, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            keys = ("recursive_cold", "new_prefix", "fully_cold")
            self.cold(n, [f for f in COLD_FIGURES if f.key in keys])
            proc.wait(timeout=seconds + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if out.exists():
            self.report["profile"] = profile_summary(out)

    def run(self) -> dict[str, Any]:
        try:
            self.fed.start()
            self.report["checks"]["seed_seconds"] = round(self.fed.seed_seconds, 1)
            self.check_before()
            for n in range(self.o.rounds):
                say(f"round {n + 1}/{self.o.rounds}")
                self.report["rounds"].append(self.round(n))
            if self.o.profile:
                self.profiled_pass(Path(self.o.profile), self.passes - 1)
        finally:
            self.fed.close()
        return self.report


def _merge(results: Sequence[WrkResult]) -> dict[str, Any]:
    """Slices of one warm figure as one: requests over seconds; the median slice's latency
    percentiles; the mean of their CPU use (the slices are equally long)."""
    seconds = sum(r.seconds for r in results)
    ok = sum(r.ok for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r.errors.items():
            errors[name] = errors.get(name, 0) + count
    cpu: dict[str, float] = {}
    for r in results:
        for name, cores in r.cpu.items():
            cpu[name] = cpu.get(name, 0.0) + cores / len(results)
    return {
        "label": results[0].label,
        "slices": len(results),
        "requests": sum(r.requests for r in results),
        "seconds": round(seconds, 3),
        "rate": round(ok / seconds, 1) if seconds else 0.0,
        "ok": ok,
        "errors": errors,
        "error_count": sum(errors.values()),
        "p50_ms": _median([r.p50_ms for r in results]),
        "p99_ms": _median([r.p99_ms for r in results]),
        "max_ms": max(r.max_ms for r in results),
        "cpu": {k: round(v, 3) for k, v in cpu.items()},
        "slice_rates": [r.rate for r in results],
    }


# --- the report ------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Each figure as the median over the rounds, beside its baseline, with the median of the
    per-round ratios and a verdict where there is a target; ``report["passed"]``."""
    rounds = report["rounds"]
    results: list[dict[str, Any]] = []

    def parts(key: str) -> list[str]:
        return list(HOPS) if key == "hops" else [key]

    def values(key: str, name: str) -> list[float]:
        return [sum(float(r[k][name]) for k in parts(key)) for r in rounds]

    def errors(key: str) -> int:
        return sum(
            int(r[k].get("error_count", r[k].get("errors", 0))) for r in rounds for k in parts(key)
        )

    def add(
        figure: str,
        key: str,
        name: str,
        base: str | None = None,
        target: tuple[str, float] | None = None,
    ) -> None:
        own = values(key, name)
        entry: dict[str, Any] = {
            "figure": figure,
            "key": f"{key}.{name}",
            "unit": "req/s" if name == "rate" else "ms",
            "value": round(_median(own), 4),
            "rounds": [round(v, 4) for v in own],
            "samples": sum(int(r[k]["ok"]) for r in rounds for k in parts(key)),
            "errors": errors(key),
        }
        if base is not None:
            bases = values(base, name)
            ratios = [v / b for v, b in zip(own, bases, strict=True) if b]
            entry |= {
                "baseline": round(_median(bases), 4),
                "baseline_key": f"{base}.{name}",
                "ratio": round(_median(ratios), 3) if ratios else None,
                "ratio_rounds": [round(x, 3) for x in ratios],
            }
            entry["errors"] += errors(base)
        if name == "rate" and base is not None:
            # Requests per CPU-second of the serving node: steadier than req/s when other jobs
            # take part of its core.
            per_core = []
            for r in rounds:
                a, b = r[key]["cpu"].get("recursive"), r[base]["cpu"].get("secondary")
                if a and b:
                    per_core.append((r[key]["rate"] / a) / (r[base]["rate"] / b))
            entry["ratio_per_server_core"] = round(_median(per_core), 3) if per_core else None
        if target is not None:
            op, bound = target

            def meets(x: float | None) -> bool:
                return x is not None and (x >= bound if op == ">=" else x <= bound)

            entry["target"] = f"{op} {bound:g}"
            entry["passed"] = meets(entry.get("ratio")) and entry["errors"] == 0
            core_ratio = entry.get("ratio_per_server_core")
            if core_ratio is not None and meets(core_ratio) != meets(entry.get("ratio")):
                # The machine was busy with other work: neither verdict can be trusted.
                entry["passed"] = False
                entry["disagrees"] = True
        results.append(entry)

    add("(a) direct at the secondary, warm: throughput", "direct_warm", "rate")
    add("(a) direct, warm: p50", "direct_warm", "p50_ms")
    add("(a) direct, warm: p99", "direct_warm", "p99_ms")
    add("(b) recursive, warm: throughput", "recursive_warm", "rate", "direct_warm", (">=", 0.9))
    add("(b) recursive, warm: p50", "recursive_warm", "p50_ms", "direct_warm")
    add("(b) recursive, warm: p99", "recursive_warm", "p99_ms", "direct_warm")
    add("(w) direct, cached id, cold client: p50", "cached", "p50_ms")
    add("(d) direct at the secondary, cold id: p50", "direct_cold", "p50_ms")
    add("(d) direct, cold id: p99", "direct_cold", "p99_ms")
    add(
        "(c) recursive, cold id, known prefix site: p50",
        "recursive_cold",
        "p50_ms",
        "direct_cold",
        ("<=", COLD_TARGET),
    )
    add("(c) recursive, cold id, known site: p99", "recursive_cold", "p99_ms", "direct_cold")
    add(
        "(n) recursive, new enterprise prefix, delegation known: p50",
        "new_prefix",
        "p50_ms",
        "direct_cold",
        ("<=", COLD_TARGET),
    )
    add("(n) recursive, new enterprise prefix: p99", "new_prefix", "p99_ms", "direct_cold")
    add(
        "(e) recursive, fully cold walk: p50",
        "fully_cold",
        "p50_ms",
        "direct_cold",
        ("<=", COLD_TARGET),
    )
    add("(e) recursive, fully cold walk: p99", "fully_cold", "p99_ms", "direct_cold")
    add("(e0) fully cold, early requests off: p50", "fully_cold_seq", "p50_ms", "direct_cold")
    add("(e) vs (e0): what early requests save", "fully_cold", "p50_ms", "fully_cold_seq")
    add("(f1) top level 0.NA/P referral, direct: p50", "hop_top", "p50_ms", "direct_cold")
    add("(f2) secondary 0.NA/P, direct: p50", "hop_prefix", "p50_ms", "direct_cold")
    add("(f3) secondary P/S, direct: p50", "hop_handle", "p50_ms", "direct_cold")
    add("(f) f1 + f3: a fully cold walk's floor", "hops", "p50_ms", "direct_cold")
    add("(e) vs (f): the walk over its floor", "fully_cold", "p50_ms", "hops")
    report["results"] = results
    report["passed"] = (
        report["checks"].get("before") == "ok"
        and not report["checks"]["counters"]
        and all(r.get("passed", True) for r in results)
    )
    return report


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nidis recursive resolution, {s['rounds']} round(s), one worker per node."
        f"\nwarm: wrk, {s['duration']:g}s per figure in {s['warm_slices']} runs taken in turn, at"
        f" concurrency {s['concurrency']}, after {s['warmup']:g}s warm-up; nodes on CPUs"
        f" {s['node_cpus'] or 'any'}, wrk on {s['generator_cpus'] or 'any'} (of {s['cpus']})."
        f"\ncold: one client, one request at a time (concurrency 1), the figures in turn,"
        f" {s['block']} requests of each at a time, up to {s['cold']:,} per figure per round,"
        " each handle never requested before;"
        f" {'pinned like the warm runs' if s['pin_cold'] else 'nothing pinned'}.\n"
    )
    head = ["figure", "value", "baseline", "ratio", "rounds", "target", "result", "n", "errors"]
    rows = [head]
    for r in report["results"]:
        rate = r["unit"] == "req/s"

        def show(v: float, rate: bool = rate) -> str:
            return f"{v:,.0f} req/s" if rate else f"{v:.3f} ms"

        verdict = "info"
        if "passed" in r:
            verdict = ("PASS" if r["passed"] else "FAIL") + ("*" if r.get("disagrees") else "")
        rows.append(
            [
                r["figure"],
                show(r["value"]),
                show(r["baseline"]) if "baseline" in r else "",
                f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "",
                " ".join(f"{x:.2f}" for x in r.get("ratio_rounds", [])),
                r.get("target", ""),
                verdict,
                f"{r['samples']:,}",
                str(r["errors"]),
            ]
        )
    _print_table(rows, left={0, 4, 5, 6})
    for r in report["results"]:
        if r.get("ratio_per_server_core") is not None:
            print(
                f"\n{r['figure']}: per CPU-second of the serving node"
                f" {r['ratio_per_server_core']:.2f}x of (a)"
            )
    rounds = report["rounds"]
    print("\nwarm runs, CPU in cores (the round of the median rate):")
    for key in ("direct_warm", "recursive_warm"):
        by_rate = sorted(rounds, key=lambda r: float(r[key]["rate"]))
        cpu = by_rate[len(rounds) // 2][key]["cpu"]
        print(f"  {key}: " + " ".join(f"{k}={v}" for k, v in cpu.items() if k != "machine_cores"))
    print("\ncold figures, CPU microseconds per request (medians over the rounds):")
    cpu_rows = [["figure", *CPU_GROUPS, "total"]]
    for f in COLD_FIGURES:
        per = {g: _median([r[f.key]["cpu_us"][g] for r in rounds]) for g in CPU_GROUPS}
        cpu_rows.append(
            [f.label, *(f"{per[g]:.0f}" for g in CPU_GROUPS), f"{sum(per.values()):.0f}"]
        )
    _print_table(cpu_rows, left={0})
    print(
        "  (postgres: the backends of the two scratch databases; each request's share of the"
        " time between its sending and its answer)"
    )
    print(f"\na fully cold walk's path: {' -> '.join(report['checks'].get('full_walk_path', []))}")
    for problem in report["checks"]["counters"]:
        print(f"counters off: {problem}")
    for r in rounds:
        for key, fig in r.items():
            for failure in fig.get("failures", []):
                print(f"failed: {key}: {failure}")
    summary = report.get("profile")
    if summary:
        print(f"\nprofile of the recursive node, (c) and (e) ({summary['samples'][0][1]} samples):")
        for kind in ("own", "inclusive"):
            print(f"  {kind}:")
            for name, pct in summary[kind][:20]:
                print(f"    {pct:5.1f}%  {name}")
    if any(r.get("disagrees") for r in report["results"]):
        print(
            "\n* req/s and per-core ratios disagree about the target: the machine was busy"
            " with other work; run again when it is quiet"
        )
    print("\n" + ("all targets met" if report["passed"] else "TARGETS MISSED"))


def _print_table(rows: list[list[str]], left: set[int]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


# --- entry points ----------------------------------------------------------------------------


def run_benchmark(**options: Any) -> dict[str, Any]:
    """Run the benchmark with the :class:`Options` given by name; the report.

    ``report["results"]`` lists each figure with its value, baseline, ratio and (where there
    is a target) whether it passed; ``report["passed"]`` is True when every target is met,
    without errors, and every cold pass's counters matched the plan.  Raises ValueError for bad
    options and :class:`loadtests.loadgen.GeneratorMissing` without wrk.
    """
    opts = Options(**options)
    opts.validate()
    find_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="idis-bench-recursive-"))
    try:
        report = Bench(opts, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return summarise(report)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(
        prog="python -m loadtests.bench_recursive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    add = top.add_argument
    add("--duration", type=float, default=d.duration, help="seconds of each warm figure")
    add("--warm-slices", type=int, default=d.warm_slices, help="warm runs per figure, in turn")
    add("--warmup", type=float, default=d.warmup, help="seconds of warm-up before each run")
    add("--rounds", type=int, default=d.rounds, help="rounds of every figure (medians)")
    add("--concurrency", type=int, default=d.concurrency, help="connections of warm runs")
    add("--rows", type=int, default=d.rows, help="identifiers under 88.100.1")
    add("--cold", type=int, default=d.cold, help="requests per cold figure per round")
    add("--cold-seconds", type=float, default=d.cold_seconds, help="bound on a cold pass")
    add("--block", type=int, default=d.block, help="cold requests of a figure in a row")
    add("--postgres", default=d.postgres, help="where scratch databases go (trust auth)")
    add("--no-pin", dest="pin", action="store_false", help="pin nothing in warm runs")
    add("--pin-cold", action="store_true", help="pin nodes and client in cold passes too")
    add("--profile", metavar="DIR", help="add a cold pass with py-spy on the recursive node")
    add("--json", help="also write the report here")
    args = top.parse_args(argv)
    options = {f.name: getattr(args, f.name) for f in fields(Options)}
    try:
        Options(**options).validate()
        find_wrk()
    except (ValueError, GeneratorMissing) as error:
        top.error(str(error))

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    report = run_benchmark(**options)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
