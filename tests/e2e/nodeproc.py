"""Real ``idis serve`` processes for end-to-end tests (built on :mod:`nodes.processes`).

:func:`start_node` homes a prefix with ``idis prefix init`` and starts ``idis serve`` on a free
loopback port, both as subprocesses of ``sys.executable`` with an environment of their own, and
returns once the node answers ``GET /healthz`` (and, with several workers, once every worker has
started).  :meth:`NodeProcess.stop` ends the process group it started.  Several nodes may run at
once; :data:`RUNNING` lists the live ones, so a failing test can show their logs.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx

from nodes.processes import ServeProcess, free_ports, node_env, run_cli, stop_all

REPO = Path(__file__).resolve().parents[2]
PREFIX = "88.100.1"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 3

RUNNING: list[NodeProcess] = []
"""Nodes started and not yet stopped, oldest first."""


def basic_auth(identity: str, secret: str) -> httpx.BasicAuth:
    """HTTP Basic credentials as Handle clients send them: the identity percent-encoded."""
    return httpx.BasicAuth(identity.replace(":", "%3A", 1), secret)


class NodeProcess(ServeProcess):
    """One ``idis serve`` process (with its workers) and its prefix's administrator."""

    def __init__(
        self, workdir: Path, env: Mapping[str, str], *, identity: str, secret: str, prefix: str
    ) -> None:
        super().__init__(env["IDIS_NAME"], env, workdir)
        self.identity = identity
        self.secret = secret
        self.prefix = prefix
        self.stopped = False

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def data_dir(self) -> Path:
        return Path(self.env["IDIS_DATA_DIR"])

    @property
    def auth(self) -> httpx.BasicAuth:
        """The prefix administrator's credentials."""
        return basic_auth(self.identity, self.secret)

    @property
    def operator_auth(self) -> httpx.BasicAuth:
        """Credentials that open ``/api/stats`` and ``/api/replication/status``: the federation
        secret if the node has one, else its prefix administrator's."""
        secret = self.env.get("IDIS_FEDERATION__SECRET")
        return httpx.BasicAuth("federation", secret) if secret else self.auth

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client on this node (the caller closes it)."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.base_url, **kwargs)  # type: ignore[arg-type]

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds; the exit code."""
        self.stopped = True
        if self in RUNNING:
            RUNNING.remove(self)
        if self.process is None:
            return None
        if stop_all([self.process], timeout):
            sys.stderr.write(f"idis node {self.base_url} ignored SIGTERM; killed\n")
        return self.process.returncode


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
    node sharing a database already set up (pass that node's ``secret`` then).  A port taken
    before the node binds it is replaced, up to :data:`PORT_ATTEMPTS` times.  Raises
    :class:`nodes.processes.NodeFailed` with the node's log if it does not answer within
    ``startup_timeout`` seconds, :class:`nodes.processes.CliFailed` if ``idis prefix init``
    fails.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    secret = secret or f"e2e-{uuid.uuid4().hex}"
    secret_file = workdir / "secret"
    secret_file.write_text(secret + "\n", encoding="utf-8")
    extra: dict[str, str] = {}
    if database_url:
        extra["IDIS_DATABASE_URL"] = database_url
    if redis_url:
        extra["IDIS_REDIS_URL"] = redis_url
    env = node_env(
        workdir / "data",
        free_ports(1)[0],
        # A name of its own keeps this node's Redis keys apart from every other node's.
        name=f"e2e-{uuid.uuid4().hex[:12]}",
        workers=workers,
        extra={**extra, **(extra_env or {})},
    )
    identity = f"300:{prefix}/ADMIN"
    if init:
        out = run_cli(env, "prefix", "init", prefix, "--secret-file", str(secret_file), cwd=REPO)
        if identity not in out:
            raise RuntimeError(f"idis prefix init did not report {identity}:\n{out}")

    node = NodeProcess(workdir, env, identity=identity, secret=secret, prefix=prefix)
    RUNNING.append(node)
    try:
        node.start(startup_timeout, attempts=PORT_ATTEMPTS)
    except BaseException:
        node.stop()
        raise
    return node


def stop_checked(node: NodeProcess) -> None:
    """Stop ``node``, then fail if its log holds a traceback: every bad request got an answer
    in its protocol's terms, none escaped as a crash."""
    log = node.log()
    node.stop()
    assert "Traceback" not in log, log
