"""Real ``idis serve`` processes for end-to-end tests.

:func:`start_node` homes a prefix with ``idis prefix init`` and starts ``idis serve`` on a free
loopback port, both as subprocesses of ``sys.executable`` with an environment of their own, and
returns once the node answers ``GET /healthz`` (and, with several workers, once every worker has
started).  :meth:`NodeProcess.stop` ends the process group it started.  Several nodes may run at
once; :data:`RUNNING` lists the live ones, so a failing test can show their logs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
PREFIX = "88.100.1"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 3
_WORKER_READY = "Application startup complete."

RUNNING: list[NodeProcess] = []
"""Nodes started and not yet stopped, oldest first."""


class NodeStartError(RuntimeError):
    """The node did not come up; the message carries its log."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the caller may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def basic_auth(identity: str, secret: str) -> httpx.BasicAuth:
    """HTTP Basic credentials as Handle clients send them: the identity percent-encoded."""
    return httpx.BasicAuth(identity.replace(":", "%3A", 1), secret)


@dataclass
class NodeProcess:
    """One running ``idis serve`` process (with its workers)."""

    base_url: str
    identity: str
    secret: str
    prefix: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    workers: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    stopped: bool = False

    @property
    def auth(self) -> httpx.BasicAuth:
        """The prefix administrator's credentials."""
        return basic_auth(self.identity, self.secret)

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client on this node (the caller closes it)."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.base_url, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        """What the node wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after :data:`STOP_TIMEOUT`; the exit code."""
        self.stopped = True
        if self in RUNNING:
            RUNNING.remove(self)
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
                sys.stderr.write(f"idis node {self.base_url} ignored SIGTERM; killed\n")
        # Workers of a multi-worker node live in the same group; make sure none outlives it.
        _signal_group(self.process, signal.SIGKILL)
        return self.process.returncode


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    # The node was started in a session of its own, so its group id is its pid: this reaches
    # exactly the processes this module started and nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def node_env(
    data_dir: Path,
    port: int,
    *,
    database_url: str | None,
    redis_url: str | None,
    workers: int,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The environment of a node: the caller's, without any IDIS_ setting of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIS_")}
    env.update(
        IDIS_DATA_DIR=str(data_dir),
        IDIS_HTTP=f"127.0.0.1:{port}",
        IDIS_WORKERS=str(workers),
        # A name of its own keeps this node's Redis keys apart from every other node's.
        IDIS_NAME=f"e2e-{uuid.uuid4().hex[:12]}",
        IDIS_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["IDIS_DATABASE_URL"] = database_url
    if redis_url:
        env["IDIS_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def run_cli(env: Mapping[str, str], *args: str, timeout: float = 60.0) -> str:
    """Run ``idis ARGS`` as a subprocess; its stdout. Raises with its output if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "nodes.cli", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise NodeStartError(
            f"idis {' '.join(args)} exited with {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done.stdout


def start_node(
    workdir: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    workers: int = 1,
    prefix: str = PREFIX,
    secret: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    init: bool = True,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> NodeProcess:
    """Home ``prefix`` and start ``idis serve``; the running node.

    ``database_url`` None means the embedded default (SQLite in the data directory).  Files go
    under ``workdir`` (created if missing).  ``init=False`` skips ``idis prefix init``, for a
    node sharing a database already set up (pass that node's ``secret`` then).  Raises
    :class:`NodeStartError` with the node's log if it does not answer within
    ``startup_timeout`` seconds.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    secret = secret or f"e2e-{uuid.uuid4().hex}"
    secret_file = workdir / "secret"
    secret_file.write_text(secret + "\n", encoding="utf-8")
    extra = dict(extra_env or {})

    env = node_env(
        data_dir,
        free_port(),
        database_url=database_url,
        redis_url=redis_url,
        workers=workers,
        extra=extra,
    )
    identity = f"300:{prefix}/ADMIN"
    if init:
        out = run_cli(env, "prefix", "init", prefix, "--secret-file", str(secret_file))
        if identity not in out:
            raise NodeStartError(f"idis prefix init did not report {identity}:\n{out}")

    last_error: NodeStartError | None = None
    for attempt in range(PORT_ATTEMPTS):
        if attempt:  # the port went to someone else between probing and binding: take another
            env = {**env, "IDIS_HTTP": f"127.0.0.1:{free_port()}"}
        node = _launch(workdir, env, identity, secret, prefix, workers, extra, attempt)
        try:
            _wait_ready(node, startup_timeout)
        except NodeStartError as error:
            node.stop()
            last_error = error
            if "address already in use" in node.log().lower():
                continue
            raise
        return node
    assert last_error is not None
    raise last_error


def _launch(
    workdir: Path,
    env: dict[str, str],
    identity: str,
    secret: str,
    prefix: str,
    workers: int,
    extra: dict[str, str],
    attempt: int,
) -> NodeProcess:
    log_path = workdir / f"serve-{attempt}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nodes.cli", "serve"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node = NodeProcess(
        base_url=f"http://{env['IDIS_HTTP']}",
        identity=identity,
        secret=secret,
        prefix=prefix,
        data_dir=Path(env["IDIS_DATA_DIR"]),
        env=env,
        process=process,
        log_path=log_path,
        workers=workers,
        extra=extra,
    )
    RUNNING.append(node)
    return node


def _all_up(node: NodeProcess) -> bool:
    log = node.log()
    bound = f"running on {node.base_url} " in log  # this process holds the port
    return bound and log.count(_WORKER_READY) >= node.workers


def _wait_ready(node: NodeProcess, timeout: float) -> None:
    """Poll ``/healthz`` (bounded) until it answers and every worker reports startup."""
    deadline = time.monotonic() + timeout
    healthy = False
    # uvicorn reports binding and each worker's startup at level info; at quieter levels the
    # answer from /healthz must do (and might then come from whoever else took the port).
    counts_workers = node.env.get("IDIS_LOG_LEVEL", "info") in ("info", "debug")
    with httpx.Client(base_url=node.base_url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not node.alive():
                raise NodeStartError(
                    f"idis serve exited with {node.process.returncode} before answering\n"
                    f"--- log\n{node.log()}"
                )
            if not healthy:
                try:
                    healthy = client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    healthy = False
            if healthy and (not counts_workers or _all_up(node)):
                return
            time.sleep(0.05)
    raise NodeStartError(
        f"idis serve did not become ready within {timeout:g}s at {node.base_url}\n"
        f"--- log\n{node.log()}"
    )
