"""A lone PostgreSQL server (no Patroni) on a free loopback port in a folder of its own: a
single node's database that a test can stop and start again (never the shared one on 5432)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from nodes.national.binaries import (
    SUPERUSER,
    ClusterFailed,
    find_binaries,
    hand_over,
    signal_process,
    spawn,
    tail,
)
from nodes.processes import HOST, free_ports

_POLL = 0.2


class PostgresServer:
    """A lone PostgreSQL server (no Patroni) in a folder of its own, on a free loopback port:
    a single node's database that a test may stop and start again."""

    def __init__(self, root: Path | None = None) -> None:
        self.binaries = find_binaries()
        self.root = root or Path(tempfile.mkdtemp(prefix="idis-postgres-"))
        self.root.chmod(0o755)
        self.port = free_ports(1)[0]
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        hand_over(self.root)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster on first use, start the server, return once it accepts."""
        if not self.data_dir.exists():
            init = spawn(
                [
                    str(self.binaries.pg_bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                self.root / "initdb.log",
                as_owner=True,
            )
            if init.wait(timeout) != 0:
                raise ClusterFailed(f"initdb failed:\n{tail(self.root / 'initdb.log')}")
        self.process = spawn(
            [
                str(self.binaries.pg_bin / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                "shared_buffers=32MB",
            ],
            self.log_path,
            as_owner=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClusterFailed(f"postgres exited:\n{tail(self.log_path)}")
            probe = [
                str(self.binaries.pg_bin / "pg_isready"),
                "-q",
                "-h",
                HOST,
                "-p",
                str(self.port),
            ]
            if subprocess.run(probe, check=False, timeout=10).returncode == 0:
                return
            time.sleep(_POLL)
        raise ClusterFailed(f"postgres not ready within {timeout:g}s:\n{tail(self.log_path)}")

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown; SIGKILL with ``kill`` or after ``timeout``)."""
        if self.process is None:
            return
        if self.process.poll() is None and not kill:
            signal_process(self.process.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        signal_process(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)

    def remove(self) -> None:
        """Stop the server and delete its folder.  Idempotent."""
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)
