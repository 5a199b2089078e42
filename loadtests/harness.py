"""The harness of ``idis bench``: settings, the table's rows and how they are judged, and the
:class:`Suite` every step runs in (its scratch database, its node, its load generators).

A step is a function ``def name(suite: Suite) -> None`` that measures a figure and its same-run
baseline and adds them with :meth:`Suite.add`; :mod:`loadtests.suite` lists the steps in the
order they run.  A failing step becomes an ERROR row, not the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtests import bench_http
from loadtests.generators import Load
from loadtests.loadgen import GeneratorMissing, ReferenceServer, find_wrk
from loadtests.report import machine
from loadtests.scratch_db import home_prefixes, seed_range, sql, storage_of
from loadtests.shapes import Population
from loadtests.stats import median
from nodes.processes import ServeProcess

PREFIX = bench_http.PREFIX
SUFFIX_FORMAT = bench_http.SUFFIX_FORMAT
LOCAL_HOSTS = ("127.0.0.1", "localhost")

# (operator, bound, where the target comes from)
Target = tuple[str, float, str]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one suite run (``quick()`` and ``full()`` are the two presets)."""

    mode: str = "full"
    duration: float = 6.0
    warmup: float = 2.0
    rounds: int = 3
    concurrency: int = 32
    rows: int = 600_000
    """Identifiers seeded for the HTTP figures (88.100.1/SN%08d), and the base of scale10x."""
    http_share: float = 0.85
    """Of ``rows``, what the HTTP figures may request (every uncached request a new one); the
    rest is kept for the latency probe of scale10x."""
    register_count: int = 100_000
    register_batch: int = 1000
    register_concurrency: int = 4
    template_count: int = 20_000
    """Identifiers of each templates run (10 typed attributes each)."""
    probe_seconds: float = 5.0
    probe_concurrency: int = 4
    import_rows: int = 200_000
    import_repeat: int = 5
    crosshost_writes: int = 50
    recursive: dict[str, Any] = field(default_factory=dict)
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    generator: str = "auto"
    pin: bool = True
    only: tuple[str, ...] = ()
    """The steps to run, by name; empty: every step of the suite."""


def full() -> Settings:
    return Settings()


def quick() -> Settings:
    return Settings(
        mode="quick",
        duration=1.0,
        warmup=0.0,
        rounds=1,
        rows=40_000,
        http_share=0.7,
        register_count=8_000,
        template_count=4_000,
        probe_seconds=1.0,
        import_rows=50_000,
        import_repeat=1,
        crosshost_writes=15,
        recursive={
            "duration": 1.0,
            "warmup": 0.0,
            "rounds": 1,
            "rows": 2000,
            "cold": 100,
            "cold_seconds": 8.0,
        },
    )


# --- the table ------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table."""

    key: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: str = ""
    target_source: str = ""
    passed: bool | None = None
    generator: str = ""
    errors: int = 0
    rounds: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    other_load: float | None = None
    """Cores taken by other work on the machine during the run (other processes and busy time
    charged to none): high values mean the figure was measured under contention."""


def cpu_per_request(runs: Sequence[dict[str, Any]]) -> float | None:
    """Median microseconds of server CPU per answer over ``runs`` (wrk or Python results)."""
    per = [
        r["cpu"]["server"] / r["rate"] * 1e6
        for r in runs
        if r.get("rate") and r.get("cpu", {}).get("server") is not None
    ]
    return round(median(per), 1) if per else None


def judge(ratio: float | None, target: Target | None, errors: int = 0) -> bool | None:
    """Whether ``ratio`` meets ``target`` without errors; None when there is no target and
    no errors.  A figure with errors (failed requests, wrong bodies) was not measured as it
    says, target or not: it fails (issue 15: an unmeasured figure is a failed one)."""
    if target is None:
        return False if errors else None
    op, bound, _ = target
    if ratio is None:
        return False
    ok = ratio >= bound if op == ">=" else ratio <= bound
    return ok and errors == 0


@dataclass(frozen=True)
class Step:
    """One step of the suite, by the name ``--only`` knows it."""

    name: str
    run: Callable[[Suite], None]
    seeded: bool = True
    """Runs on the suite's seeded database and node (set up before the first such step, torn
    down after the last); otherwise it brings what it needs and runs after the teardown."""
    needs: str = ""
    """Another step this one reads the results of: it runs only when that one is selected."""
    why: str = ""
    """Why it needs that step (the note of the report when it does not run)."""


class Suite:
    """One run of ``steps`` (those of ``settings.only``) in ``workdir``: what the steps share.

    Steps read ``s`` (the settings), ``dsn`` (the seeded scratch database), ``plan`` (which
    seeded identifiers the HTTP figures request) and ``probe_ids`` (the rest), ``secret`` (of
    every homed prefix's admin), ``server_cpus`` / ``gen_cpus``, ``load`` (HTTP throughput) and
    ``wrk``; they get the node with ``node or start_node()``, start others with
    :meth:`launch_node` (stopped at the end of the seeded steps) and write ``add`` (rows),
    ``raw`` (the JSON report's detail) and ``notes``.
    """

    def __init__(self, settings: Settings, workdir: Path, steps: Sequence[Step]) -> None:
        self.s = settings
        self.steps = tuple(steps)
        self.only = settings.only or tuple(step.name for step in self.steps)
        self.workdir = workdir
        pg = urlsplit(settings.postgres)
        where = f"postgresql://{pg.username or 'postgres'}@{pg.hostname}:{pg.port or 5432}"
        self.admin_dsn = where + "/postgres"
        self.dbname = f"idis_suite_{os.getpid()}_{secrets.token_hex(3)}"
        self.dsn = f"{where}/{self.dbname}"
        self.server_cpus, self.gen_cpus = bench_http.cpu_plan(1, settings.pin)
        self.population = Population()
        self.secret = secrets.token_urlsafe(18)
        self.servers: list[ServeProcess] = []
        self.node: ServeProcess | None = None
        self.now = int(time.time())
        self.created = False
        self.wrk = self._has_wrk()
        kind = "wrk" if self.wrk and settings.generator != "python" else "python"
        self.load = Load(kind, settings.concurrency, self.gen_cpus)
        self.figures: list[Figure] = []
        self.raw: dict[str, Any] = {}
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        http_rows = int(settings.rows * settings.http_share)
        self.plan = bench_http.plan_ids(http_rows, settings.rounds)
        self.probe_ids = range(http_rows, settings.rows)

    def _has_wrk(self) -> bool:
        try:
            find_wrk()
        except GeneratorMissing:
            if self.s.generator == "wrk":
                raise
            return False
        return True

    # -- the table --

    def add(
        self,
        key: str,
        figure: str,
        value: float | None,
        unit: str,
        *,
        baseline: float | None = None,
        baseline_label: str = "",
        ratio: float | None = None,
        target: Target | None = None,
        generator: str = "",
        errors: int = 0,
        rounds: Sequence[float] = (),
        detail: dict[str, Any] | None = None,
        cpu: dict[str, float] | None = None,
    ) -> Figure:
        if ratio is None and value is not None and baseline:
            ratio = value / baseline
        fig = Figure(
            key=key,
            figure=figure,
            value=None if value is None else round(value, 3),
            unit=unit,
            baseline=None if baseline is None else round(baseline, 3),
            baseline_label=baseline_label,
            ratio=None if ratio is None else round(ratio, 3),
            target=f"{target[0]} {target[1]:g}" if target else "",
            target_source=target[2] if target else "",
            passed=judge(ratio, target, errors),
            generator=generator,
            errors=errors,
            rounds=[round(r, 3) for r in rounds],
            detail=detail or {},
            other_load=(
                round(cpu.get("other_procs", 0.0) + cpu.get("unattributed", 0.0), 2)
                if cpu
                else None
            ),
        )
        self.figures.append(fig)
        return fig

    def step(self, name: str, run: Callable[[], None]) -> None:
        """Run one part of the suite; a failure becomes an ERROR row, not the end of the run."""
        if name not in self.only:
            return
        started = time.monotonic()
        say(f"[{name}]")
        try:
            run()
        except KeyboardInterrupt:
            raise
        except Exception as error:
            say(traceback.format_exc())
            fig = self.add(name, f"{name}: could not be measured", None, "")
            fig.error = f"{type(error).__name__}: {error}"
            fig.passed = False
        finally:
            self.timings[name] = round(time.monotonic() - started, 1)

    # -- set-up --

    def prepare(self) -> None:
        from registry.migrate import upgrade

        say(f"database {self.dbname}: create, migrate, home prefixes, seed {self.s.rows:,} ids")
        asyncio.run(bench_http._create_database(self.admin_dsn, self.dbname))
        self.created = True
        upgrade(self.dsn)
        prefixes = list(dict.fromkeys([PREFIX, *self.population.prefixes]))
        home_prefixes(self.dsn, self.workdir / "data", prefixes, self.secret)
        started = time.monotonic()
        # bench_http's rows (its build_record), written server-side: see seed_range.
        self.raw["seeded_by"] = asyncio.run(seed_range(self.dsn, 0, self.s.rows, self.now))
        sql(self.dsn, "VACUUM ANALYZE handles")
        self.raw["seed_seconds"] = round(time.monotonic() - started, 2)
        # The base of scale10x's storage figure: only rows of bench_http's shape so far.
        self.raw["storage_seeded"] = storage_of(self.dsn)

    def start_node(self) -> ServeProcess:
        node = self.launch_node(self.dsn, self.workdir / "data", "node")
        self.node = node
        port = node.port
        problems = bench_http.check_samples(port, list(self.plan.sample)[:50], self.now)
        if problems:
            raise RuntimeError("wrong answers before the runs:\n  " + "\n  ".join(problems))
        return node

    def start_constant(self) -> ReferenceServer:
        server = ReferenceServer("constant", self.workdir / "constant", self.server_cpus)
        return bench_http.start_listed(server, self.servers)

    def launch_node(self, dsn: str, data_dir: Path, name: str) -> ServeProcess:
        """A node of its own on ``dsn``, stopped with the suite's servers."""
        node = bench_http.bench_node(
            name, dsn, data_dir, self.workdir / name, cpus=self.server_cpus
        )
        return bench_http.start_listed(node, self.servers)

    # -- the whole run --

    def run(self) -> dict[str, Any]:
        """Run the seeded steps in order on one database and node, tear those down, run the
        others; the report."""
        started = time.monotonic()
        seeded = [step for step in self.steps if step.seeded]
        try:
            if any(step.name in self.only for step in seeded):
                self.prepare()
            self._run_steps(seeded)
        finally:
            for server in reversed(self.servers):
                server.stop()
            self.servers.clear()
            if self.created:
                with contextlib.suppress(Exception):
                    asyncio.run(bench_http._drop_database(self.admin_dsn, self.dbname))
        self._run_steps([step for step in self.steps if not step.seeded])
        return self.report(time.monotonic() - started)

    def _run_steps(self, steps: Sequence[Step]) -> None:
        for step in steps:
            if step.name not in self.only:
                continue
            if step.needs and step.needs not in self.only:
                self.notes.append(f"{step.name}: run with {step.needs} ({step.why})")
                continue
            self.step(step.name, partial(step.run, self))

    def report(self, seconds: float) -> dict[str, Any]:
        judged = [f.passed for f in self.figures if f.passed is not None]
        return {
            "kind": "bench",
            "mode": self.s.mode,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now)),
            "seconds": round(seconds, 1),
            "machine": machine(),
            "http_generator": self.load.kind,
            "wrk_installed": self.wrk,
            "settings": asdict(replace(self.s, only=self.only)),
            "figures": [asdict(f) for f in self.figures],
            "passed": bool(judged) and all(judged),
            "timings": self.timings,
            "notes": self.notes,
            "raw": self.raw,
        }
