"""Load generation for the HTTP benchmark: wrk driven by a generated Lua script, CPU accounting,
and the baselines that run as processes of their own.

The HTTP load comes from ``wrk`` (C, epoll, keep-alive connections): per request it costs a few
microseconds where a Python client costs tens, so on a 2-core machine it leaves the server
almost a whole core.  Its ceiling is not assumed but measured in each run, against
:func:`serve_constant` (a raw uvloop server writing constant bytes).  Install it with::

    apt-get install -y wrk        # Debian/Ubuntu; or build https://github.com/wg/wrk

The Lua script checks every response (status 200 and the expected body, or for distinct paths
the expected start of the body), so errors are counted rather than timed as successes, and it
bounds the number of requests as well as wrk's ``-d`` bounds the time.  With distinct paths a
wrk thread stops once its share of identifiers is used up, so no identifier is requested twice;
the run is then flagged ``exhausted`` and its rate is not a valid figure.

Processes of their own (``python -m loadtests.loadgen <command>``):

``constant``  raw uvloop HTTP server answering every request with constant bytes
``asgi``      uvicorn as the node runs it, with a minimal raw ASGI app answering constant JSON
``pg``        raw asyncpg primary-key lookups on connections held from a pool, distinct keys
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nodes.processes import ServeProcess, free_ports, node_env

WRK_INSTALL_HINT = (
    "wrk is needed for the HTTP load: install it with `apt-get install -y wrk` "
    "(Debian/Ubuntu) or build it from https://github.com/wg/wrk"
)
_MARK = "LOADGEN-RESULT "
_STARTED = "LOADGEN-MEASURING"
CONSTANT_BODY = b'{"status":"ok"}'
PK_SQL = "SELECT handle, data, version FROM handles WHERE key = $1"


class GeneratorMissing(RuntimeError):
    """wrk is not installed."""


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise GeneratorMissing(WRK_INSTALL_HINT)
    return path


# --- CPU accounting ------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds used) for every visible process."""
    table: dict[int, tuple[int, str, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is state (stat field 3): utime and stime are stat fields 14 and 15.
        table[int(name)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / _TICK)
    return table


def _busy_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


def _descendants(table: dict[int, tuple[int, str, float]], roots: Iterable[int]) -> set[int]:
    found = {pid for pid in roots if pid in table}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


@dataclass
class CpuSample:
    table: dict[int, tuple[int, str, float]]
    busy: float
    total: float
    wall: float


def cpu_sample() -> CpuSample:
    busy, total = _busy_cpu_seconds()
    return CpuSample(_proc_table(), busy, total, time.monotonic())


def cpu_usage(
    before: CpuSample, after: CpuSample, groups: dict[str, Sequence[int]]
) -> dict[str, float]:
    """Cores used between two samples by each group of process trees, by PostgreSQL, by other
    processes, unattributed (busy time charged to no process seen), and by the whole machine.

    A process that ended between the samples is not counted (its time is lost to /proc).
    """
    wall = after.wall - before.wall or 1e-9
    out: dict[str, float] = {}
    claimed: set[int] = set()
    for name, roots in groups.items():
        pids = _descendants(after.table, roots)
        claimed |= pids
        used = sum(after.table[p][2] - before.table.get(p, (0, "", 0.0))[2] for p in pids)
        out[name] = round(used / wall, 2)
    rest: dict[str, float] = {"postgres": 0.0, "other_procs": 0.0}
    for pid, (_, comm, used) in after.table.items():
        if pid not in claimed:
            delta = used - before.table.get(pid, (0, "", 0.0))[2]
            rest["postgres" if comm.startswith("postgres") else "other_procs"] += delta
    out["postgres"] = round(rest["postgres"] / wall, 2)
    # Other processes include whatever else shares the machine (other users' jobs).
    out["other_procs"] = round(rest["other_procs"] / wall, 2)
    machine = (after.busy - before.busy) / wall
    # Busy time charged to no process seen in both samples: softirq work of the loopback
    # network, and processes that started and ended between the samples.
    out["unattributed"] = round(max(0.0, machine - sum(out.values())), 2)
    out["machine"] = round((after.busy - before.busy) / wall, 2)
    out["machine_cores"] = round((after.total - before.total) / wall, 2)
    return out


# --- wrk -----------------------------------------------------------------------------------

_LUA_COMMON = """
-- Globals, not locals: done() reads them from each thread with thread:get().
threads = {}
tid = 0
ok, bad_status, bad_body, exhausted, received = 0, 0, 0, 0, 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if exhausted == 1 then return end  -- the run is void; STOP_PATH answers are not errors
  received = received + 1
  if status ~= STATUS then
    bad_status = bad_status + 1
  elseif CHECK(body) then
    ok = ok + 1
  else
    bad_body = bad_body + 1
  end
  if received >= MAX_PER_THREAD then
    exhausted = 1
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t = {ok = 0, bad_status = 0, bad_body = 0, exhausted = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    "%s{\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,\\"ok\\":%d,\\"bad_status\\":%d," ..
    "\\"bad_body\\":%d,\\"exhausted\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d," ..
    "\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d,\\"max_us\\":%d}\\n",
    MARK, summary.requests, summary.duration, summary.bytes, t.ok, t.bad_status, t.bad_body,
    t.exhausted, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

_LUA_FIXED = """
local expected = EXPECTED
function CHECK(body) return body == expected end
"""

# Distinct paths: thread ``tid`` requests FIRST + tid*PER_THREAD ... + PER_THREAD - 1, in order.
# Once they are used up it stops, and the request it must still return goes to STOP_PATH,
# which requests no identifier.
_LUA_DISTINCT = """
local body_start = EXPECTED
local n = #body_start
local next_i, last_i
function CHECK(body) return string.sub(body, 1, n) == body_start end

function init(args)
  next_i = FIRST + tid * PER_THREAD
  last_i = next_i + PER_THREAD - 1
end

function request()
  if next_i > last_i then
    exhausted = 1
    wrk.thread:stop()
    return wrk.format("GET", STOP_PATH)
  end
  local path = PATH_PREFIX .. string.format(SUFFIX_FORMAT, next_i)
  next_i = next_i + 1
  return wrk.format("GET", path)
end
"""


def _lua_str(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return '"' + "".join(f"\\{b:03d}" for b in raw) + '"'


@dataclass(frozen=True)
class Distinct:
    """Each request a path never requested before: ``prefix + suffix_format % i``."""

    path_prefix: str
    suffix_format: str
    """A Lua ``string.format`` pattern for one integer, e.g. ``"SN%08d"``."""
    first: int
    count: int
    """Identifiers available to the run, shared equally by the threads."""
    stop_path: str = "/healthz"


@dataclass
class WrkResult:
    label: str
    requests: int
    seconds: float
    rate: float
    ok: int
    errors: dict[str, int]
    exhausted: bool
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_count"] = self.error_count
        return out


def lua_script(
    expected: bytes,
    *,
    distinct: Distinct | None = None,
    threads: int,
    max_requests: int,
    status: int = 200,
) -> str:
    """The Lua script: exact-body checks for a fixed path, body-start checks for distinct ones;
    every answer must have ``status``."""
    parts = [f"local MARK = {_lua_str(_MARK)}\nlocal STATUS = {int(status)}\n"]
    per_thread_cap = max(1, max_requests // threads)
    if distinct is None:
        parts.append(f"local MAX_PER_THREAD = {per_thread_cap}\n")
        parts.append(_LUA_FIXED.replace("EXPECTED", _lua_str(expected)))
    else:
        per_thread = distinct.count // threads
        parts.append(f"local MAX_PER_THREAD = {min(per_thread_cap, per_thread) + 1}\n")
        parts.append(
            _LUA_DISTINCT.replace("EXPECTED", _lua_str(expected))
            .replace("FIRST", str(distinct.first))
            .replace("PER_THREAD", str(per_thread))
            .replace("STOP_PATH", _lua_str(distinct.stop_path))
            .replace("PATH_PREFIX", _lua_str(distinct.path_prefix))
            .replace("SUFFIX_FORMAT", _lua_str(distinct.suffix_format))
        )
    parts.append(_LUA_COMMON)
    return "".join(parts)


def run_wrk(
    label: str,
    url: str,
    expected: bytes,
    *,
    concurrency: int,
    duration: float,
    threads: int = 1,
    distinct: Distinct | None = None,
    max_requests: int = 20_000_000,
    cpus: Sequence[int] | None = None,
    cpu_groups: dict[str, Sequence[int]] | None = None,
    status: int = 200,
) -> WrkResult:
    """One wrk run of ``duration`` seconds (and at most ``max_requests`` requests) on ``url``,
    each answer checked for ``status`` and the body.

    ``url`` is the whole URL for a fixed path, or only ``http://host:port`` with ``distinct``.
    ``cpus`` pins wrk; ``cpu_groups`` names process trees whose CPU use is reported (wrk's own
    is reported as ``generator``).
    """
    wrk = find_wrk()
    if concurrency < threads:
        raise ValueError("wrk needs at least one connection per thread")
    script = lua_script(
        expected, distinct=distinct, threads=threads, max_requests=max_requests, status=status
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    seconds = max(1, round(duration))
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        f.name,
        url,
    ]
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        try:
            # Sampled while wrk runs, so that its own CPU time is still in /proc.
            time.sleep(0.3)
            start = cpu_sample()
            time.sleep(max(0.1, seconds - 0.6))
            end = cpu_sample()
            out, err = proc.communicate(timeout=seconds + 30)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    finally:
        os.unlink(f.name)
    lines = [line for line in out.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
    raw = json.loads(lines[-1][len(_MARK) :])
    groups = dict(cpu_groups or {})
    groups["generator"] = [proc.pid]
    secs = raw["duration_us"] / 1e6
    return WrkResult(
        label=label,
        requests=raw["requests"],
        seconds=round(secs, 3),
        rate=round(raw["ok"] / secs, 1) if secs else 0.0,
        ok=raw["ok"],
        errors={
            k: raw[k]
            for k in ("bad_status", "bad_body", "connect", "read", "write", "timeout")
            if raw[k]
        },
        exhausted=bool(raw["exhausted"]),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        cpu=cpu_usage(start, end, groups),
    )


# --- the constant servers ------------------------------------------------------------------


def _constant_response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def serve_constant(host: str, port: int, body: bytes = CONSTANT_BODY) -> None:
    """A raw uvloop HTTP/1.1 server answering every request (GET, no body) with ``body``."""
    import uvloop

    response = _constant_response(body)

    class Constant(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.pending = b""

        def data_received(self, data: bytes) -> None:
            data = self.pending + data
            complete = data.count(b"\r\n\r\n")
            self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if complete else data
            if complete:
                self.transport.write(response * complete)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Constant, host, port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


class ReferenceServer(ServeProcess):
    """``python -m loadtests.loadgen KIND`` (``constant`` or ``asgi``) on a free loopback port,
    started, awaited (``GET /healthz``, which it answers as it answers every path) and stopped
    as an ``idis serve`` node is, by :mod:`nodes.processes`; its output in ``home/serve.log``."""

    def __init__(
        self,
        kind: str,
        home: Path,
        cpus: Sequence[int] | None = None,
        workers: int = 1,
        answer: bytes | None = None,
    ) -> None:
        """``answer``: for ``asgi``, the body of a node's cached resolution to answer with."""
        extra = {}
        if answer is not None:
            home.mkdir(parents=True, exist_ok=True)
            (home / "answer").write_bytes(answer)
            extra[ANSWER_FILE] = str(home / "answer")
        # At level warning readiness is the answer alone: these servers log nothing.
        env = node_env(
            home, free_ports(1)[0], name=kind, workers=workers, log_level="warning", extra=extra
        )
        super().__init__(kind, env, home, cpus=cpus)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "loadtests.loadgen", self.name, "--port", str(self.port)]


ANSWER_FILE = "LOADGEN_ANSWER_FILE"
"""With this environment variable naming a file, the raw ASGI app answers with that file's
bytes, and the headers a node's cached resolution has (``x-idis-source: memory`` too): the
same response as the node's, without the node."""


def constant_asgi_app() -> Any:
    """A minimal raw ASGI app answering every request with constant JSON (uvicorn factory)."""
    body = CONSTANT_BODY
    extra: list[tuple[bytes, bytes]] = []
    if os.environ.get(ANSWER_FILE):
        body = Path(os.environ[ANSWER_FILE]).read_bytes()
        extra.append((b"x-idis-source", b"memory"))
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            *extra,
        ],
    }
    message = {"type": "http.response.body", "body": body}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send(start)
        await send(message)

    return app


def serve_asgi(host: str, port: int) -> None:
    """uvicorn run exactly as the node runs it (:func:`nodes.http.server.uvicorn_options`,
    from the same ``IDIS_*`` settings, workers included), with :func:`constant_asgi_app`."""
    import uvicorn

    from nodes.http.server import uvicorn_options
    from nodes.settings import load_settings

    options = uvicorn_options(load_settings(http=f"{host}:{port}"))
    uvicorn.run("loadtests.loadgen:constant_asgi_app", factory=True, **options)


# --- raw asyncpg lookups -------------------------------------------------------------------


async def pg_lookups(
    dsn: str,
    keys: Sequence[str],
    warm_keys: Sequence[str],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """Primary-key lookups, each task on a connection it holds, keys in order.

    Warm-up reads ``warm_keys`` for ``warmup`` seconds, then the measured phase reads ``keys``
    for ``duration`` seconds.
    """
    import asyncpg

    async with asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency) as pool:

        async def phase(todo: Sequence[str], seconds: float) -> dict[str, Any]:
            # Each key once, in order; a run outlasting the keys starts over (PostgreSQL keeps
            # no result cache, and every page is in its buffers either way): see ``passes``.
            position = 0
            counts = {"ok": 0, "missing": 0, "errors": 0}
            deadline = time.monotonic() + seconds
            limit = max(1, int(seconds * 1_000_000))  # a bound on the count as well as time

            async def worker() -> None:
                nonlocal position
                async with pool.acquire() as conn:
                    while time.monotonic() < deadline and position < limit:
                        key = todo[position % len(todo)]
                        position += 1
                        try:
                            row = await conn.fetchrow(PK_SQL, key)
                        except Exception:
                            counts["errors"] += 1
                            continue
                        counts["ok" if row is not None and row[0] else "missing"] += 1

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.monotonic() - started
            return {
                **counts,
                "seconds": round(elapsed, 3),
                "rate": round(counts["ok"] / elapsed, 1),
                "passes": round(position / len(todo), 2),
            }

        await phase(warm_keys, warmup)
        print(_STARTED, flush=True)  # the parent samples CPU from here
        return await phase(keys, duration)


def _pg_main(args: argparse.Namespace) -> None:
    import uvloop

    from resolver.identifiers import fold

    def keys(first: int, count: int, start: int | None = None) -> list[str]:
        ids = list(range(first, first + count))
        if start is not None and first <= start < first + count:
            ids = ids[start - first :] + ids[: start - first]
        return [fold(args.prefix + "/" + args.suffix_format % i) for i in ids]

    result = uvloop.run(
        pg_lookups(
            args.dsn,
            keys(args.first, args.count, args.start),
            keys(args.warm_first, args.warm_count),
            concurrency=args.concurrency,
            duration=args.duration,
            warmup=args.warmup,
        )
    )
    print(_MARK + json.dumps(result), flush=True)


def run_pg(
    dsn: str,
    *,
    prefix: str,
    suffix_format: str,
    slices: Sequence[tuple[int, int]],
    start: int = 0,
    warm: tuple[int, int],
    concurrency: int,
    duration: float,
    warmup: float,
    cpus: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Raw asyncpg lookups from one process per ``(first, count)`` slice, run together; the
    slice holding id ``start`` begins with it.

    Each process holds ``concurrency // len(slices)`` connections; the rates are summed.
    """
    procs = []
    share = max(1, concurrency // len(slices))
    warm_share = warm[1] // len(slices)
    for n, (first, count) in enumerate(slices):
        cmd = [
            sys.executable,
            "-m",
            "loadtests.loadgen",
            "pg",
            "--dsn",
            dsn,
            "--prefix",
            prefix,
            "--suffix-format",
            suffix_format,
            "--first",
            str(first),
            "--start",
            str(start),
            "--count",
            str(count),
            "--warm-first",
            str(warm[0] + n * warm_share),
            "--warm-count",
            str(warm_share),
            "--concurrency",
            str(share),
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        )
    try:
        # CPU is sampled inside the measured phase: from its start, ending before any process
        # ends (a process that has exited takes its CPU time out of /proc).
        deadline = time.monotonic() + warmup + 60
        for p in procs:
            assert p.stdout is not None
            while True:
                ready, _, _ = select.select(
                    [p.stdout], [], [], max(0.0, deadline - time.monotonic())
                )
                line = p.stdout.readline() if ready else ""
                if not line or line.strip() == _STARTED:
                    break
        start = cpu_sample()
        time.sleep(max(0.1, duration - 0.5))
        end = cpu_sample()
        outs = [p.communicate(timeout=duration + 60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for p, (out, err) in zip(procs, outs, strict=True):
        lines = [line for line in out.splitlines() if line.startswith(_MARK)]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"asyncpg baseline failed ({p.returncode}): {err.strip()}")
        results.append(json.loads(lines[-1][len(_MARK) :]))
    total = {k: sum(r[k] for r in results) for k in ("ok", "missing", "errors")}
    return {
        **total,
        "rate": round(sum(r["rate"] for r in results), 1),
        "seconds": max(r["seconds"] for r in results),
        "passes": max(r["passes"] for r in results),
        "processes": len(results),
        "cpu": cpu_usage(start, end, {"baseline": [p.pid for p in procs]}),
    }


def main(argv: Sequence[str] | None = None) -> None:
    top = argparse.ArgumentParser(prog="python -m loadtests.loadgen", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    for name in ("constant", "asgi"):
        server = commands.add_parser(name)
        server.add_argument("--host", default="127.0.0.1")
        server.add_argument("--port", type=int, required=True)
    pg = commands.add_parser("pg")
    pg.add_argument("--dsn", required=True)
    pg.add_argument("--prefix", required=True)
    pg.add_argument("--suffix-format", required=True)
    for name in ("--first", "--count", "--warm-first", "--warm-count", "--concurrency"):
        pg.add_argument(name, type=int, required=True)
    pg.add_argument("--start", type=int, help="begin with this id if the slice holds it")
    pg.add_argument("--duration", type=float, required=True)
    pg.add_argument("--warmup", type=float, default=1.0)
    args = top.parse_args(argv)
    if args.command in ("constant", "asgi") and args.host not in ("127.0.0.1", "localhost"):
        top.error("the benchmark servers listen on 127.0.0.1 only")
    if args.command == "constant":
        serve_constant(args.host, args.port)
    elif args.command == "asgi":
        serve_asgi(args.host, args.port)
    else:
        _pg_main(args)


if __name__ == "__main__":
    main()
