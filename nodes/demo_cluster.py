"""Who is in ``idis demo``'s federation: its members (each an ``idis serve`` process), the
one place that stops them, the enterprises it serves, and the state of one run."""

from __future__ import annotations

import atexit
import secrets
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from nodes.demo_output import StepFailed, Steps
from nodes.processes import (
    CliFailed,
    Process,
    ServeProcess,
    node_env,
    run_cli,
    signal_group,
    stop_all,
)

CLI_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
TOP_LEVEL_CITIES = ("Beijing", "Shanghai", "Guangzhou", "Wuhan", "Chongqing")
NATIONAL_PREFIX = "88"
READY_TIMEOUT = 30.0
"""Seconds every node gets to answer ``/healthz`` (the first start compiles bytecode)."""
HTTP_TIMEOUT = 10.0


class Member(ServeProcess):
    """One node of the demo federation: its name, role and settings, and (once started) its
    ``idis serve`` process."""

    def __init__(
        self, name: str, role: str, serves: str, env: Mapping[str, str], home: Path
    ) -> None:
        super().__init__(name, env, home)
        self.role = role
        self.serves = serves


class Cluster:
    """The processes of the demo, and the one place that stops them.

    :meth:`close` is idempotent and safe from any thread; it is also registered with
    :mod:`atexit`, so that no node outlives the demo even on an unexpected exit.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: dict[str, Member] = {}
        self._children: list[Process] = []
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def add(self, name: str, role: str, port: int, serves: str, extra: Mapping[str, str]) -> Member:
        home = self.root / name
        home.mkdir(parents=True)
        env = node_env(
            home / "data", port, name=name, log_level="warning", extra={"IDIS_ROLE": role, **extra}
        )
        member = Member(name, role, serves, env, home)
        self.members[name] = member
        return member

    def _started(self, child: Process) -> None:
        with self._lock:
            self._children.append(child)
            if self._closed:  # started as the demo shuts down: it goes at once
                signal_group(child, signal.SIGKILL)

    def cli(self, member: Member, *args: str) -> str:
        """Run ``idis ARGS`` with ``member``'s settings; its output. Raises :class:`StepFailed`
        with that output if it fails or takes longer than :data:`CLI_TIMEOUT`."""
        try:
            return run_cli(
                member.env, *args, cwd=member.home, timeout=CLI_TIMEOUT, started=self._started
            )
        except CliFailed as error:
            raise StepFailed(f"{member.name}: {error}") from error

    def launch(self, member: Member) -> None:
        """Start ``idis serve`` for ``member`` (readiness: :func:`wait_ready`)."""
        with self._lock:
            if self._closed:
                raise StepFailed("the demo is shutting down")
            member.launch()
            assert member.process is not None
            self._children.append(member.process)

    def stop(self, member: Member) -> None:
        """Stop ``member``'s node (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`)."""
        member.stop(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop every process the demo started (nodes and command-line runs)."""
        with self._lock:
            self._closed = True
            children, self._children = self._children, []
        stop_all(children, STOP_TIMEOUT)


@dataclass(frozen=True)
class Enterprise:
    """An enterprise prefix, the node serving it, and the identifiers the demo registers."""

    prefix: str
    host: str
    """The name of the member that serves the prefix's handles."""
    name: str
    label: str
    suffixes: tuple[str, ...]

    @property
    def parent(self) -> str:
        return self.prefix.rpartition(".")[0]

    @property
    def secondary(self) -> str:
        """The member name of the secondary node that allocates the prefix."""
        return f"secondary-{self.parent}"

    @property
    def self_hosted(self) -> bool:
        return self.host != self.secondary

    def location(self, suffix: str) -> str:
        return f"https://{self.label}.example/items/{suffix}"


ENTERPRISES = (
    Enterprise(
        "88.100.1",
        "secondary-88.100",
        "Acme Machinery",
        "acme-machinery",
        ("PUMP-0001", "VALVE-0002"),
    ),
    Enterprise(
        "88.101.5", "secondary-88.101", "Star Auto", "star-auto", ("VIN-LSV1234567", "PART-77")
    ),
    Enterprise(
        "88.100.7",
        "enterprise-88.100.7",
        "Delta Steel",
        "delta-steel",
        ("COIL-2024-001", "COIL-002"),
    ),
)


@dataclass
class Demo:
    """The state of one run: the cluster, the secrets, and what the steps found."""

    cluster: Cluster
    steps: Steps
    console: Console
    secrets: dict[str, str] = field(default_factory=dict)
    secret_paths: dict[str, str] = field(default_factory=dict)
    federation_secret: str = ""
    """The secret of the nodes' HTTP change feed (user ``federation``), which also opens every
    node's /api/stats."""
    workflow: bool = False
    """Whether enterprise prefixes were allocated through the application workflow."""
    serving: bool = False
    """Set once every step worked and the federation is left serving."""

    @property
    def members(self) -> dict[str, Member]:
        return self.cluster.members

    def member(self, name: str) -> Member:
        return self.cluster.members[name]

    def names(self) -> dict[str, str]:
        return {m.url: m.name for m in self.cluster.members.values()}

    def secret_file(self, name: str) -> str:
        """A file holding a new random secret called ``name`` (kept in :attr:`secrets`)."""
        secret = secrets.token_urlsafe(24)
        path = self.cluster.root / "secrets" / name.replace("/", "_")
        path.parent.mkdir(exist_ok=True)
        path.write_text(secret + "\n", encoding="utf-8")
        path.chmod(0o600)
        self.secrets[name] = secret
        self.secret_paths[name] = str(path)
        return str(path)
