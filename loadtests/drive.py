"""The load generator: registration through the batch API, resolution with a realistic mix, and
the generator's own ceiling against a constant server.

Each run is an ``async`` function returning a JSON-able report; :func:`run` executes one on
uvloop (when installed) with Ctrl-C and SIGTERM wired to a stop event, so an interrupted run
still returns its partial report (``"stopped_by": "interrupt"``).  Every run is bounded in count
and in time.  The generator measures its own CPU share (:class:`~loadtests.stats.CpuMeter`) and
reports ``"saturated": true`` when it, rather than the target, may be setting the pace.

Connections are kept alive, one request in flight on each (:mod:`loadtests.client`); the
number of connections is the concurrency.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import orjson

from loadtests.client import Connection, RequestTimeout, get_request, parse_target, post_request
from loadtests.client import watchdog as _watchdog
from loadtests.loadgen import ReferenceServer
from loadtests.mix import Mix, ResolveMix
from loadtests.shapes import Population
from loadtests.stats import CpuMeter, Recorder, rate, summarise_latencies

T = TypeVar("T")
Tick = Callable[[dict[str, Any]], None]
"""Called a few times a second with ``{"done", "errors", "elapsed"}`` (for progress bars)."""

MAX_BATCH = 2000
TICK_SECONDS = 0.25
RETRYABLE = frozenset({500, 502, 503, 504})
"""Batch answers worth sending again: the batch API is idempotent, so a retry is safe."""


def basic_auth(identity: str, secret: str) -> str:
    """The ``Authorization`` header value Handle clients send: the identity percent-encoded."""
    user = quote(identity, safe="")
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


def admin_identity(prefix: str) -> str:
    """The administrator ``idis prefix init PREFIX`` creates: ``300:PREFIX/ADMIN``."""
    return f"300:{prefix}/ADMIN"


# --- running --------------------------------------------------------------------------------


def run(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` on a fresh event loop (uvloop if installed); SIGINT/SIGTERM set
    ``stop`` (a second one cancels the run).  Returns what ``main`` returns."""

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        wired = []

        def on_signal() -> None:
            if stop.is_set() and task is not None:
                task.cancel()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                wired.append(sig)
        try:
            return await main(stop)
        finally:
            for sig in wired:
                loop.remove_signal_handler(sig)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(wrapper())
    return uvloop.run(wrapper())


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover
        return "asyncio"
    return "uvloop"


async def _ticker(
    on_tick: Tick | None, state: dict[str, Any], started: float, stop: asyncio.Event
) -> None:
    if on_tick is None:
        return
    while not stop.is_set():
        on_tick({**state, "elapsed": time.monotonic() - started})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), TICK_SECONDS)


# --- registration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Who registers under a prefix."""

    identity: str
    secret: str

    @property
    def header(self) -> str:
        return basic_auth(self.identity, self.secret)


def batches(population: Population, start: int, count: int, size: int) -> Iterator[list[int]]:
    """Indexes ``start .. start + count - 1`` grouped by prefix into batches of ``size``.

    An enterprise registers its own identifiers, so a batch holds one prefix, as it would in
    production; the last, partial batch of each prefix comes at the end.
    """
    pending: dict[str, list[int]] = {}
    for i in range(start, start + count):
        group = pending.setdefault(population.prefix_of(i), [])
        group.append(i)
        if len(group) >= size:
            yield group
            pending[population.prefix_of(i)] = []
    for group in pending.values():
        if group:
            yield group


async def register(
    target: str,
    population: Population,
    credentials: dict[str, Credentials],
    *,
    start: int = 0,
    count: int,
    batch_size: int = 1000,
    concurrency: int = 4,
    max_seconds: float = 3600.0,
    timeout: float = 120.0,
    retries: int = 2,
    grace: float = 10.0,
    stop: asyncio.Event | None = None,
    on_tick: Tick | None = None,
) -> dict[str, Any]:
    """Register identifiers ``start .. start + count - 1`` of ``population`` through
    ``POST /api/batch`` on ``target``, ``concurrency`` batches in flight.

    ``credentials`` maps each prefix of the population to who registers under it.  Bounded by
    ``count`` and by ``max_seconds``; when ``stop`` is set (Ctrl-C) or time is up, no new batch
    starts and the ones in flight get ``grace`` seconds to finish.  A batch that fails with a
    connection error, a timeout or HTTP 5xx is sent again up to ``retries`` times (the API is
    idempotent: records that already match come back ``unchanged``).

    The report counts identifiers by the status the API gave them (created, updated,
    unchanged), errors by response code (``"item 102"`` for an item's responseCode,
    ``"HTTP 401"`` for a refused batch, ``"timeout"``, ``"connection"``), batch latency
    percentiles, identifiers/s over the run, and the generator's CPU share.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}")
    if not 1 <= concurrency <= 256:
        raise ValueError("concurrency must be 1..256")
    missing = [p for p in population.prefixes if p not in credentials]
    if missing:
        raise ValueError(f"no credentials for prefixes {missing}")
    host, port = parse_target(target)
    stop = stop or asyncio.Event()
    meter = CpuMeter()
    started = time.monotonic()
    deadline = started + max_seconds
    work = batches(population, start, count, batch_size)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies = Recorder(started=started)
    state: dict[str, Any] = {"done": 0, "errors": 0, "total": count}
    counters = {"sent": 0, "retries": 0, "batches": 0, "request_bytes": 0}
    connections: list[Connection] = []
    halt = asyncio.Event()  # stop or time: no new batch
    stopped_by = "count"

    def item_results(body: bytes) -> list[dict[str, Any]]:
        doc = orjson.loads(body)
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list):
            raise ValueError("no results in the batch answer")
        return results

    async def send(conn: Connection | None, request: bytes) -> tuple[Connection, int, bytes]:
        if conn is None or conn.closed:
            conn = await Connection.open(host, port)
            connections.append(conn)
        return conn, *(await conn.request(request))

    async def worker() -> None:
        conn: Connection | None = None
        while not halt.is_set():
            group = next(work, None)
            if group is None:
                return
            prefix = population.prefix_of(group[0])
            body = orjson.dumps({"handles": [population.record(i) for i in group]})
            request = post_request(
                host,
                "/api/batch",
                body,
                {"Content-Type": "application/json", "Authorization": credentials[prefix].header},
            )
            counters["sent"] += len(group)
            counters["request_bytes"] += len(request)
            outcome = ""
            for attempt in range(retries + 1):
                if attempt:
                    counters["retries"] += 1
                t0 = time.perf_counter_ns()
                try:
                    conn, status, answer = await send(conn, request)
                except RequestTimeout:
                    outcome, conn = "timeout", None
                    continue
                except (TimeoutError, ConnectionError, OSError):
                    outcome, conn = "connection", None
                    await asyncio.sleep(min(1.0, 0.1 * 2**attempt))
                    continue
                latency = (time.perf_counter_ns() - t0) // 1000
                if status in RETRYABLE:
                    outcome = f"HTTP {status}"
                    await asyncio.sleep(min(1.0, 0.1 * 2**attempt))
                    continue
                latencies.add("ok" if status == 200 else f"HTTP {status}", latency)
                counters["batches"] += 1
                if status != 200:
                    outcome = f"HTTP {status}"
                    break
                try:
                    results = item_results(answer)
                except ValueError:
                    outcome = "bad answer"
                    break
                outcome = ""
                for item in results:
                    code = item.get("responseCode") if isinstance(item, dict) else None
                    if code == 1:
                        statuses[str(item.get("status", "ok"))] += 1
                        state["done"] += 1
                    else:
                        errors[f"item {code}"] += 1
                        state["errors"] += 1
                break
            if outcome:
                errors[outcome] += len(group)
                state["errors"] += len(group)

    async def timer() -> None:
        nonlocal stopped_by
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, deadline - time.monotonic()))
        if not halt.is_set():
            stopped_by = "interrupt" if stop.is_set() else "time"
            halt.set()

    ticking = asyncio.Event()
    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    helpers = [
        asyncio.ensure_future(timer()),
        asyncio.ensure_future(_watchdog(connections, timeout)),
        asyncio.ensure_future(_ticker(on_tick, state, started, ticking)),
    ]
    everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
    halted: asyncio.Future[Any] = asyncio.ensure_future(halt.wait())
    try:
        await asyncio.wait([everything, halted], return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():
            # Ctrl-C or time: the workers take no new batch; those in flight get some grace.
            await asyncio.wait([everything], timeout=grace)
    except asyncio.CancelledError:
        stopped_by = "interrupt"
    finally:
        halt.set()
        halted.cancel()
        for t in tasks:
            t.cancel()
        ticking.set()
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
        for conn in connections:
            conn.close()
    elapsed = time.monotonic() - started
    if on_tick is not None:
        on_tick({**state, "elapsed": elapsed})
    registered = sum(statuses.values())
    unsent = count - counters["sent"]
    in_flight_lost = counters["sent"] - registered - sum(errors.values())
    if in_flight_lost > 0:
        errors["interrupted"] += in_flight_lost
    return {
        "kind": "register",
        "target": target,
        "population": population.describe(),
        "start": start,
        "count": count,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 3),
        "stopped_by": stopped_by,
        "sent": counters["sent"],
        "not_sent": unsent,
        "registered": registered,
        "by_status": dict(statuses),
        "errors": dict(errors),
        "retries": counters["retries"],
        "identifiers_per_s": round(rate(registered, elapsed), 1),
        "request_bytes_per_identifier": round(counters["request_bytes"] / counters["sent"], 1)
        if counters["sent"]
        else 0.0,
        "batches": summarise_latencies(
            [x for k, b in latencies.samples.items() for x in b if k == "ok"], elapsed
        ),
        "batch_latency_by_outcome": latencies.summary(elapsed),
        "timeline_batches_per_s": latencies.timeline,
        "generator": {**meter.report(), "loop": event_loop_name()},
    }


# --- resolution -----------------------------------------------------------------------------

RESOLUTION_START = b'{"responseCode":1,'


async def resolve(
    target: str,
    mix: Mix,
    *,
    concurrency: int = 32,
    duration: float = 10.0,
    max_requests: int = 10_000_000,
    warmup: float = 0.0,
    timeout: float = 10.0,
    check_body: bool = True,
    stop: asyncio.Event | None = None,
    on_tick: Tick | None = None,
) -> dict[str, Any]:
    """Resolve identifiers drawn from ``mix`` on ``target`` for ``duration`` seconds (after an
    unmeasured ``warmup``), ``concurrency`` keep-alive connections with one request in flight
    each, at most ``max_requests`` requests.  Ends early, with what it measured, when ``stop``
    is set.

    ``mix`` ending (``draw()`` returning None) ends the run too, with ``"exhausted": true``.
    Outcomes: ``found`` (200 and, with ``check_body``, a resolution body), ``not found`` (404),
    ``error <status>``, ``error body`` (200 with another body), ``error timeout`` and
    ``error connection``.  ``anomalies`` counts registered identifiers answered 404 and
    unknown ones answered 200.  Rates are over the measured phase.
    """
    if not 1 <= concurrency <= 1024:
        raise ValueError("concurrency must be 1..1024")
    host, port = parse_target(target)
    stop = stop or asyncio.Event()
    connections: list[Connection] = []
    anomalies: Counter[str] = Counter()
    state: dict[str, Any] = {"done": 0, "errors": 0, "total": None}
    phase = {"measuring": warmup <= 0}
    recorder = Recorder()
    meter = CpuMeter()
    end_at = [time.monotonic() + warmup + duration]
    budget = [max_requests]
    exhausted = [False]
    draw = mix.draw
    perf = time.perf_counter_ns
    mono = time.monotonic

    async def worker() -> None:
        conn: Connection | None = None
        while not stop.is_set() and budget[0] > 0:
            if conn is None or conn.closed:
                try:
                    conn = await Connection.open(host, port)
                except (TimeoutError, OSError):
                    if phase["measuring"]:
                        recorder.add("error connection", 0)
                        state["errors"] += 1
                    conn = None
                    await asyncio.sleep(0.05)
                    continue
                connections.append(conn)
            drawn = draw()
            if drawn is None:
                exhausted[0] = True
                return
            known, path = drawn
            request = get_request(host, path)
            budget[0] -= 1
            t0 = perf()
            try:
                status, body = await conn.request(request)
            except RequestTimeout:
                outcome, latency = "error timeout", (perf() - t0) // 1000
                conn = None
            except (ConnectionError, OSError):
                outcome, latency = "error connection", (perf() - t0) // 1000
                conn = None
            else:
                latency = (perf() - t0) // 1000
                if status == 200:
                    if check_body and not body.startswith(RESOLUTION_START):
                        outcome = "error body"
                    else:
                        outcome = "found"
                        if check_body and not known:
                            anomalies["unknown identifier found"] += 1
                elif status == 404:
                    outcome = "not found"
                    if known:
                        anomalies["registered identifier not found"] += 1
                else:
                    outcome = f"error {status}"
            if phase["measuring"]:
                recorder.add(outcome, latency)
                state["done"] += 1
                if outcome.startswith("error"):
                    state["errors"] += 1

    async def clock() -> None:
        if warmup > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), warmup)
            # The measured phase starts now: fresh counters, fresh CPU meter.
            phase["measuring"] = True
            anomalies.clear()
            recorder.samples.clear()
            recorder.timeline.clear()
            recorder.started = mono()
            meter.restart()
            budget[0] = max_requests
            end_at[0] = mono() + duration
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, end_at[0] - mono()))

    started = mono()
    ticking = asyncio.Event()
    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    helpers = [
        asyncio.ensure_future(_watchdog(connections, timeout)),
        asyncio.ensure_future(_ticker(on_tick, state, started, ticking)),
    ]
    clock_task = asyncio.ensure_future(clock())
    stopped_by = "time"
    try:
        done, _ = await asyncio.wait([clock_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            stopped_by = "interrupt"
        elif clock_task not in done:
            stopped_by = "count"  # the workers used up max_requests (or the mix its ids)
    except asyncio.CancelledError:
        stopped_by = "interrupt"
    finally:
        measured = mono() - recorder.started
        # Requests in flight now are not counted: the measured phase ends here.
        phase["measuring"] = False
        ticking.set()
        for t in [clock_task, *tasks, *helpers]:
            t.cancel()
        await asyncio.gather(clock_task, *tasks, *helpers, return_exceptions=True)
        for conn in connections:
            conn.close()
    cpu = meter.report()
    if on_tick is not None:
        on_tick({**state, "elapsed": mono() - started})
    by_outcome = recorder.summary(measured)
    total = by_outcome["all"]["count"]
    return {
        "kind": "resolve",
        "target": target,
        "mix": mix.describe(),
        "concurrency": concurrency,
        "duration_s": duration,
        "warmup_s": warmup,
        "elapsed_s": round(measured, 3),
        "stopped_by": stopped_by,
        "exhausted": exhausted[0],
        "requests": total,
        "per_s": round(rate(total, measured), 1),
        "ok_per_s": round(
            rate(
                recorder.count_of("found") + recorder.count_of("not found"),
                measured,
            ),
            1,
        ),
        "by_outcome": by_outcome,
        "anomalies": dict(anomalies),
        "timeline_per_s": recorder.timeline,
        "generator": {**cpu, "loop": event_loop_name()},
    }


# --- the generator's ceiling ----------------------------------------------------------------


async def ceiling(
    port: int,
    *,
    concurrency: int = 32,
    duration: float = 3.0,
    warmup: float = 0.5,
    population: Population | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """The generator against a constant server on 127.0.0.1:``port``: the most it can send.

    The requests are the same realistic resolution paths as a resolve run (the server does not
    look at them); bodies are not checked.  The report is a resolve report with
    ``kind: "ceiling"``; its ``per_s`` is the ceiling and ``generator.cpu_share`` how much of a
    core it took (about 1.0: a Python generator is bound to one core).
    """
    mix = ResolveMix(population or Population(), 0, 1_000_000, unknown_share=0.05, seed=7)
    report = await resolve(
        f"http://127.0.0.1:{port}",
        mix,
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
        check_body=False,
        stop=stop,
    )
    report["kind"] = "ceiling"
    return report


def measure_ceiling(
    *, concurrency: int = 32, duration: float = 3.0, cpus: Sequence[int] | None = None
) -> dict[str, Any]:
    """Start a constant server (on ``cpus``), measure :func:`ceiling` against it, stop it."""
    with tempfile.TemporaryDirectory(prefix="idis-ceiling-") as home:
        server = ReferenceServer("constant", Path(home), cpus)
        try:
            server.start(20.0, attempts=2)
            port = server.port
            return run(
                lambda stop: ceiling(port, concurrency=concurrency, duration=duration, stop=stop)
            )
        finally:
            server.stop()


def random_seed() -> int:
    return random.SystemRandom().randrange(1 << 32)
