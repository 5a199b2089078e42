"""The load-testing kit's logic: synthetic identifiers, the resolution mix (Zipf skew, unknown
share), report arithmetic (percentiles, rates), the plan's sums, the HTTP client's parsing, and
small real runs of ``idis loadtest register`` / ``resolve`` against an ``idis serve`` process.

No test asserts a speed: only counts, shapes and arithmetic.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from loadtests import drive
from loadtests.client import Connection, ProtocolViolation, _dechunk
from loadtests.harness import Figure, judge
from loadtests.mix import FixedMix, ResolveMix, SequenceMix, Zipf
from loadtests.plan import Inputs, Measured, inputs_from_reports, make_plan
from loadtests.report import table_rows
from loadtests.shapes import UNKNOWN_BASE, Population, code
from loadtests.stats import Recorder, median, pct_key, percentile, rate, summarise_latencies
from nodes.processes import run_cli
from resolver.codecs.json_api import parse_values
from resolver.identifiers import Handle, fold

sys.path.insert(0, str(Path(__file__).parent / "e2e"))
from nodeproc import REPO, NodeProcess, start_node

# --- synthetic identifiers ------------------------------------------------------------------


def test_population_is_deterministic_and_unique() -> None:
    a, b = Population(), Population()
    assert [a.record(i) for i in range(50)] == [b.record(i) for i in range(50)]
    assert Population(seed=2).handle(5) != a.handle(5)
    keys = {fold(a.handle(i)) for i in range(30_000)}
    assert len(keys) == 30_000


def test_codes_are_a_bijection() -> None:
    codes = {code(i) for i in range(100_000)}
    assert len(codes) == 100_000
    assert all(len(c) == 7 for c in list(codes)[:100])
    assert code(UNKNOWN_BASE) not in codes


def test_population_shapes_are_realistic_and_valid() -> None:
    population = Population()
    lengths = []
    for i in range(3000):
        text = population.handle(i)
        handle = Handle.parse(text)
        assert handle.prefix in population.prefixes
        assert handle.prefix.startswith("88.1")
        lengths.append(len(handle.suffix))
        values = population.values(i)
        assert 3 <= len(values) <= 8
        assert values[0]["type"] == "URL" and values[1]["index"] == 1001
        parsed = parse_values(values, 0)
        assert len(parsed) == len(values)
    assert min(lengths) >= 8 and max(lengths) <= 48
    assert 15 <= sum(lengths) / len(lengths) <= 35


def test_enterprise_sizes_are_skewed() -> None:
    population = Population()
    counts = Counter(population.prefix_of(i) for i in range(40_000))
    shares = [counts[p] / 40_000 for p in population.prefixes]
    weights = [1 / (k + 1) ** 0.8 for k in range(len(shares))]
    for share, weight in zip(shares, weights, strict=True):
        assert share == pytest.approx(weight / sum(weights), abs=0.01)


def test_unknown_identifiers_are_never_registered_ones() -> None:
    population = Population()
    known = {fold(population.handle(i)) for i in range(20_000)}
    assert not any(fold(population.unknown(k)) in known for k in range(20_000))


def test_batches_cover_every_index_once_with_one_prefix_each() -> None:
    population = Population()
    seen: list[int] = []
    for group in drive.batches(population, 100, 5000, 300):
        assert 1 <= len(group) <= 300
        assert len({population.prefix_of(i) for i in group}) == 1
        seen.extend(group)
    assert sorted(seen) == list(range(100, 5100))


# --- the resolution mix ---------------------------------------------------------------------


@pytest.mark.parametrize("s", [0.8, 1.0, 1.1, 1.6])
def test_zipf_follows_its_distribution(s: float) -> None:
    n, draws = 40, 100_000
    zipf = Zipf(n, s, random.Random(1))
    counts = Counter(zipf.sample() for _ in range(draws))
    assert set(counts) <= set(range(1, n + 1))
    # Chi-square over the 40 ranks: far below what a wrong distribution gives.
    chi2 = sum((counts[k] - draws * zipf.pmf(k)) ** 2 / (draws * zipf.pmf(k)) for k in counts)
    assert chi2 < 90  # 39 degrees of freedom: p < 1e-5 above about 80
    assert counts[1] / counts[2] == pytest.approx(2**s, rel=0.08)


def test_zipf_skew_concentrates_on_the_top_ranks() -> None:
    zipf = Zipf(100_000, 1.1, random.Random(2))
    draws = [zipf.sample() for _ in range(50_000)]
    top = sum(1 for k in draws if k <= 1000) / len(draws)
    # 1% of the identifiers get most of the requests (the exact share is 0.73 for s=1.1).
    exact = sum(k**-1.1 for k in range(1, 1001)) / sum(k**-1.1 for k in range(1, 100_001))
    assert top == pytest.approx(exact, abs=0.02)


def test_zipf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Zipf(0, 1.0)
    with pytest.raises(ValueError):
        Zipf(10, 0.0)


def test_mix_unknown_share_and_known_range() -> None:
    population = Population()
    mix = ResolveMix(population, 1000, 5000, zipf_s=1.1, unknown_share=0.2, seed=3)
    known_paths = {
        f"/api/handles/{population.handle(i)}".replace(":", "%3A") for i in range(1000, 6000)
    }
    draws = [mix.draw() for _ in range(20_000)]
    unknown = [path for known, path in draws if not known]
    assert len(unknown) / len(draws) == pytest.approx(0.2, abs=0.015)
    assert len(set(unknown)) == len(unknown)  # each unknown identifier is new
    for known, path in draws[:3000]:
        assert (path.decode() in known_paths) == known


def test_mix_ranks_are_a_permutation_of_the_registered_indexes() -> None:
    mix = ResolveMix(Population(), 10, 997, seed=1)
    indexes = {mix.index_of_rank(r) for r in range(1, 998)}
    assert indexes == set(range(10, 1007))


def test_mix_with_no_unknown_share_never_draws_unknown() -> None:
    mix = ResolveMix(Population(), 0, 100, unknown_share=0.0, seed=1)
    assert all(mix.draw()[0] for _ in range(2000))


def test_sequence_and_fixed_mixes() -> None:
    seq = SequenceMix([3, 1, 2], lambda i: f"/x/{i}")
    assert [seq.draw(), seq.draw(), seq.draw(), seq.draw()] == [
        (True, b"/x/3"),
        (True, b"/x/1"),
        (True, b"/x/2"),
        None,
    ]
    assert seq.exhausted
    assert FixedMix("/healthz").draw() == (True, b"/healthz")


# --- report arithmetic ----------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    data = list(range(1, 101))
    assert percentile(data, 50) == 50
    assert percentile(data, 90) == 90
    assert percentile(data, 99) == 99
    assert percentile(data, 99.9) == 100
    assert percentile(data, 100) == 100
    thousand = list(range(1, 1001))
    assert percentile(thousand, 99.9) == 999
    assert percentile([7], 50) == 7
    assert percentile([], 50) == 0.0
    with pytest.raises(ValueError):
        percentile(data, 0)
    assert [pct_key(p) for p in (50, 90, 99, 99.9)] == ["p50", "p90", "p99", "p999"]


def test_latency_summary_and_rates() -> None:
    samples = [1000 * k for k in range(1, 201)]  # 1..200 ms in microseconds
    s = summarise_latencies(samples, 4.0)
    assert s["count"] == 200
    assert s["per_s"] == 50.0
    assert s["p50_ms"] == 100.0 and s["p90_ms"] == 180.0 and s["p99_ms"] == 198.0
    assert s["p999_ms"] == 200.0 and s["max_ms"] == 200.0
    assert s["mean_ms"] == pytest.approx(100.5)
    assert rate(10, 0) == 0.0 and rate(10, 4) == 2.5
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5 and median([]) == 0.0


def test_recorder_by_outcome_and_timeline() -> None:
    recorder = Recorder(started=100.0)
    for n in range(30):
        recorder.add("found", 1000 + n, now=100.0 + n / 10)
    for _ in range(10):
        recorder.add("not found", 5000, now=102.5)
    summary = recorder.summary(3.0)
    assert summary["found"]["count"] == 30 and summary["not found"]["count"] == 10
    assert summary["all"]["count"] == 40
    assert summary["all"]["per_s"] == pytest.approx(40 / 3, abs=0.1)
    assert recorder.timeline == [10, 10, 20]
    assert recorder.count == 40


def test_suite_judges_ratios_against_targets() -> None:
    assert judge(1.2, (">=", 1.0, "x")) is True
    assert judge(0.9, (">=", 1.0, "x")) is False
    assert judge(2.0, ("<=", 3.0, "x")) is True
    assert judge(2.0, ("<=", 3.0, "x"), errors=1) is False
    assert judge(None, (">=", 1.0, "x")) is False
    assert judge(0.1, None) is None
    # An information figure with failed requests was not measured: it fails the run.
    assert judge(0.1, None, errors=3) is False
    figure = Figure("k", "a figure", 1500.0, "req/s", 1000.0, "bare", 1.5, ">= 1", "issue 2", True)
    figure.other_load = 0.5
    row = table_rows({"figures": [figure.__dict__]})[0]
    assert row[:6] == [
        "a figure",
        "1,500 req/s",
        "1,000 req/s (bare)",
        "1.50x",
        ">= 1 (issue 2)",
        "PASS",
    ]
    assert row[-1] == "0.50"


def test_suite_runs_the_selected_steps_in_order_and_notes_what_it_skips(tmp_path: Path) -> None:
    # Steps that bring their own (seeded=False): no scratch database is made.
    from loadtests.harness import Settings, Step, Suite

    ran: list[str] = []

    def measured(suite: Suite) -> None:
        ran.append("measured")
        suite.add("measured", "a figure", 2.0, "req/s", baseline=1.0, target=(">=", 1.5, "t"))

    def broken(suite: Suite) -> None:
        ran.append("broken")
        raise RuntimeError("boom")

    def reader(suite: Suite) -> None:
        ran.append("reader")

    steps = (
        Step("broken", broken, seeded=False),
        Step("measured", measured, seeded=False),
        Step("reader", reader, seeded=False, needs="writer", why="it reads what writer wrote"),
        Step("writer", reader, seeded=False),
    )
    settings = Settings(only=("measured", "reader", "broken"), generator="python")
    report = Suite(settings, tmp_path, steps).run()
    assert ran == ["broken", "measured"]
    assert [f["key"] for f in report["figures"]] == ["broken", "measured"]
    failed, row = report["figures"]
    assert failed["passed"] is False and failed["error"] == "RuntimeError: boom"
    assert row["ratio"] == 2.0 and row["passed"] is True
    assert report["passed"] is False
    assert report["notes"] == ["reader: run with writer (it reads what writer wrote)"]
    assert set(report["timings"]) == {"broken", "measured"}
    assert report["settings"]["only"] == ("measured", "reader", "broken")


def test_suite_steps_are_the_names_idis_bench_takes() -> None:
    from loadtests.suite import STEPS, SUITE

    assert set(STEPS) == {
        *("http", "native", "dns", "hostile", "logins", "quotas", "observe", "register"),
        *("templates", "mix", "storage", "scale10x", "crosshost", "import", "recursive"),
        *("failover", "search"),
    }
    assert len(STEPS) == len(set(STEPS))
    # The steps on the suite's database come first: it is dropped before the others run.
    seeded = [step.seeded for step in SUITE]
    assert seeded == sorted(seeded, reverse=True)


# --- the plan -------------------------------------------------------------------------------


def test_plan_arithmetic() -> None:
    inputs = Inputs(
        register_rate=Measured(10_000.0, ("r",)),
        resolve_rate=Measured(5_000.0, ("q",)),
        bytes_per_id=Measured(500.0, ("b",)),
    )
    plan = make_plan(
        inputs,
        target_ids=2e9,
        daily=150e6,
        peak_factor=10,
        disk_per_node=1e12,
        max_fill=0.5,
        max_utilisation=0.5,
    )
    # storage: 2e9 x 500 B = 1e12 B; 0.5e12 usable per node -> 2 nodes
    assert plan["storage_total_bytes"] == 1e12
    assert plan["nodes_for"]["storage"] == 2
    # resolution: 150e6 / 86400 = 1736.1/s, x10 = 17361/s; 2500/s usable -> ceil(6.94) = 7
    assert plan["average_per_s"] == pytest.approx(1736.11, abs=0.01)
    assert plan["peak_per_s"] == pytest.approx(17361.1, abs=0.1)
    assert plan["nodes_for"]["resolution"] == 7
    assert plan["secondary_nodes"] == 7
    assert plan["storage_per_node_bytes"] == pytest.approx(1e12 / 7)
    assert plan["capacity_per_s"] == 35_000
    assert plan["capacity_per_day"] == 35_000 * 86_400
    # registration: 2e9 / 1e4 = 2e5 s on one node, / 7 in parallel
    assert plan["register_seconds_one_node"] == 200_000
    assert plan["register_seconds_all_nodes"] == pytest.approx(200_000 / 7)
    assert plan["missing"] == []
    text = "\n".join(plan["lines"])
    assert "ceil(17,361.1 / 2,500.0) = 7" in text
    assert "2,000,000,000 ids x 500.0 B = 1.00 TB" in text


def test_plan_says_what_is_missing() -> None:
    plan = make_plan(Inputs(resolve_rate=Measured(1e6, ("q",))))
    assert set(plan["missing"]) == {"bytes per identifier", "registration rate"}
    assert plan["secondary_nodes"] == 1
    with pytest.raises(ValueError):
        make_plan(Inputs(), peak_factor=0.5)


def test_plan_inputs_from_reports_take_medians() -> None:
    reports = [
        ("a.json", {"kind": "register", "identifiers_per_s": 100.0, "errors": {}}),
        ("b.json", {"kind": "register", "identifiers_per_s": 300.0, "errors": {}}),
        ("c.json", {"kind": "register", "identifiers_per_s": 200.0, "errors": {}}),
        ("d.json", {"kind": "resolve", "ok_per_s": 4000.0, "generator": {"saturated": True}}),
        (
            "e.json",
            {
                "kind": "bench",
                "figures": [
                    {"key": "storage", "value": 600.0},
                    {"key": "mix", "value": 6000.0},
                    {"key": "uncached", "value": 3000.0},
                    {"key": "import", "value": 90_000.0},
                ],
            },
        ),
        ("f.json", {"kind": "scale", "steps": [{"rows": 10, "bytes_per_id": 400.0}]}),
        ("g.json", {"something": "else"}),
    ]
    inputs = inputs_from_reports(reports)
    assert inputs.register_rate is not None and inputs.register_rate.value == 200.0
    # The bench's uncached rate (not its mix) beside the resolve report's: median of 4000, 3000.
    assert inputs.resolve_rate is not None and inputs.resolve_rate.value == 3500.0
    # The scale report's storage wins over the bench's; no import at scale: the bench's.
    assert inputs.bytes_per_id is not None and inputs.bytes_per_id.value == 400.0
    assert inputs.import_rate is not None and inputs.import_rate.value == 90_000.0
    assert any("Zipf mix" in n for n in inputs.notes)
    assert any("saturated" in n for n in inputs.notes)
    assert any("g.json" in n for n in inputs.notes)


# --- the HTTP client ------------------------------------------------------------------------


def test_dechunk() -> None:
    data = b"HEAD\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\nNEXT"
    assert _dechunk(data, 8) == (b"Wikipedia", len(data) - 4)
    assert _dechunk(data[:20], 8) is None
    with pytest.raises(ProtocolViolation):
        _dechunk(b"zz\r\n", 0)


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


async def _answer(conn: Connection, pieces: list[bytes]) -> tuple[int, bytes]:
    task = asyncio.ensure_future(conn.request(b"GET / HTTP/1.1\r\n\r\n"))
    await asyncio.sleep(0)
    for piece in pieces:
        conn.data_received(piece)
    return await task


async def test_client_reads_responses_split_anywhere() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 11\r\n\r\n"
        b'{"ok":true}'
    )
    for cut in range(1, len(raw)):
        conn = Connection()
        conn.connection_made(_Transport())
        assert await _answer(conn, [raw[:cut], raw[cut:]]) == (200, b'{"ok":true}')
    conn = Connection()
    conn.connection_made(_Transport())
    chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert await _answer(conn, [chunked]) == (404, b"abc")
    # Keep-alive: the next answer on the same connection.
    assert await _answer(conn, [raw]) == (200, b'{"ok":true}')


async def test_client_refuses_what_it_cannot_read() -> None:
    conn = Connection()
    transport = _Transport()
    conn.connection_made(transport)
    with pytest.raises(ProtocolViolation):
        await _answer(conn, [b"SSH-2.0-OpenSSH\r\n\r\n"])
    assert transport.closed and conn.closed


async def test_client_closes_on_connection_close() -> None:
    conn = Connection()
    transport = _Transport()
    conn.connection_made(transport)
    raw = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert await _answer(conn, [raw]) == (503, b"")
    assert conn.closed and transport.closed


async def test_watchdog_expires_a_request() -> None:
    conn = Connection()
    conn.connection_made(_Transport())
    task = asyncio.ensure_future(conn.request(b"GET / HTTP/1.1\r\n\r\n"))
    await asyncio.sleep(0)
    assert conn.expire(time.monotonic() + 5, 1.0)
    with pytest.raises(TimeoutError):
        await task


# --- real runs against idis serve -----------------------------------------------------------

PREFIXES = ("88.100.1", "88.101.27")
SECRET = "loadtest-secret-0123456789"


async def _pg_admin(server: str, statement: str) -> None:
    conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def node(
    postgres: str, pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    """A node on a fresh PostgreSQL database, both prefixes homed with the same secret."""
    name = f"idis_loadtest_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(postgres, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    workdir = tmp_path_factory.mktemp("loadtest-node")
    started = start_node(
        workdir, database_url=f"{postgres}/{name}", prefix=PREFIXES[0], secret=SECRET
    )
    try:
        run_cli(
            started.env, "prefix", "init", PREFIXES[1], "--secret-file", str(workdir / "secret")
        )
        yield started
    finally:
        started.stop()
        asyncio.run(_pg_admin(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _idis(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIS_")}
    return subprocess.run(
        [sys.executable, "-m", "nodes.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _prefix_args() -> list[str]:
    return [arg for p in PREFIXES for arg in ("--prefix", p)]


@pytest.fixture(scope="module")
def registered(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("loadtest") / "register.json"
    secret = node.data_dir.parent / "secret"
    done = _idis(
        "loadtest", "register", "--target", node.base_url, "--count", "400",
        "--secret-file", str(secret), *_prefix_args(), "--batch-size", "150",
        "--concurrency", "3", "--json", str(out), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identifiers/s" in done.stdout and "p99" in done.stdout
    report: dict[str, Any] = json.loads(out.read_text())
    report["_path"] = str(out)
    return report


def test_register_creates_every_identifier(node: NodeProcess, registered: dict[str, Any]) -> None:
    assert registered["kind"] == "register"
    assert registered["registered"] == 400 and registered["by_status"] == {"created": 400}
    assert registered["errors"] == {} and registered["stopped_by"] == "count"
    assert registered["batches"]["count"] >= 3  # at most 150 per call, per prefix
    assert registered["batches"]["p50_ms"] <= registered["batches"]["p99_ms"]
    assert registered["generator"]["cpu_share"] >= 0
    population = Population(PREFIXES)
    with httpx.Client(base_url=node.base_url, timeout=10) as client:
        for i in (0, 137, 399):
            answer = client.get(f"/api/handles/{population.handle(i)}").json()
            assert answer["responseCode"] == 1
            sent = {v["index"]: v["data"]["value"] for v in population.values(i)}
            got = {v["index"]: v["data"]["value"] for v in answer["values"] if v["index"] in sent}
            assert got == sent


def test_register_again_is_idempotent(node: NodeProcess, registered: dict[str, Any]) -> None:
    report = drive.run(
        lambda stop: drive.register(
            node.base_url,
            Population(PREFIXES),
            {p: drive.Credentials(drive.admin_identity(p), SECRET) for p in PREFIXES},
            count=400,
            batch_size=400,
            stop=stop,
        )
    )
    assert report["by_status"] == {"unchanged": 400} and report["errors"] == {}


def test_register_counts_refusals_by_code(node: NodeProcess) -> None:
    report = drive.run(
        lambda stop: drive.register(
            node.base_url,
            Population(PREFIXES, seed=99),
            {p: drive.Credentials(drive.admin_identity(p), "wrong") for p in PREFIXES},
            count=50,
            batch_size=50,
            stop=stop,
        )
    )
    assert report["registered"] == 0
    assert sum(report["errors"].values()) == 50
    assert set(report["errors"]) <= {"HTTP 401", "HTTP 403"}


def test_resolve_reports_by_outcome(
    node: NodeProcess, registered: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "resolve.json"
    done = _idis(
        "loadtest", "resolve", "--target", node.base_url, "--duration", "2",
        "--concurrency", "4", "--from", registered["_path"], "--unknown-share", "0.2",
        "--zipf", "1.1", "--ceiling-seconds", "1", "--json", str(out), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    by = report["by_outcome"]
    assert set(by) == {"found", "not found", "all"}
    assert report["anomalies"] == {}
    assert by["all"]["count"] == by["found"]["count"] + by["not found"]["count"]
    assert report["requests"] == by["all"]["count"] > 0
    assert report["per_s"] == pytest.approx(report["requests"] / report["elapsed_s"], rel=0.01)
    for s in by.values():
        assert s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["p999_ms"] <= s["max_ms"]
    if report["requests"] >= 300:
        share = by["not found"]["count"] / report["requests"]
        assert 0.2 - 4 * math.sqrt(0.16 / report["requests"]) < share
        assert share < 0.2 + 4 * math.sqrt(0.16 / report["requests"])
    assert report["generator_ceiling"]["per_s"] > 0
    assert report["mix"]["count"] == 400 and report["stopped_by"] == "time"
    assert "p99.9 ms" in done.stdout


def test_resolve_stops_cleanly_on_ctrl_c(
    node: NodeProcess, registered: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "partial.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIS_")}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "nodes.cli", "loadtest", "resolve", "--target",
            node.base_url, "--duration", "60", "--concurrency", "2", "--from",
            registered["_path"], "--ceiling-seconds", "0", "--json", str(out), "--no-progress",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        started = proc.stdout.readline()  # printed just before the run (bounded: it starts)
        assert "Ctrl-C" in started, started + (proc.stderr.read() if proc.stderr else "")
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    report = json.loads(out.read_text())
    assert report["stopped_by"] == "interrupt"
    assert report["elapsed_s"] < 30
    assert report["requests"] > 0


def test_ceiling_against_a_constant_server() -> None:
    report = drive.measure_ceiling(concurrency=4, duration=1.0)
    assert report["kind"] == "ceiling" and report["per_s"] > 0
    assert report["by_outcome"]["found"]["count"] == report["requests"]
    assert "cpu_share" in report["generator"]
