"""What the national tier runs on this machine, and how its processes start: etcd, Patroni and
the PostgreSQL server binaries found (or named as missing), and children spawned in sessions of
their own, as the user ``postgres`` when this runs as root (PostgreSQL refuses to run as root),
their output appended to a log file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PATRONI_VENV = Path("/opt/idis-patroni")
"""Where scripts/test-deps.sh installs Patroni (else ``patroni`` on the PATH is used)."""
PG_BINS = Path("/usr/lib/postgresql")
"""Debian's PostgreSQL server binaries live in ``<version>/bin`` here; the newest is used."""
RUN_AS = "postgres"
"""The user Patroni and PostgreSQL run as when this runs as root."""
SUPERUSER = "postgres"
HOW_TO_INSTALL = "scripts/test-deps.sh installs them (make test runs it)"


class MissingBinaries(RuntimeError):
    """What the national tier needs and this machine lacks; the message names each."""


class ClusterFailed(RuntimeError):
    """The cluster did not reach the state waited for in time; the message ends with logs."""


@dataclass(frozen=True, slots=True)
class Binaries:
    etcd: Path
    patroni: Path
    pg_bin: Path


def find_binaries() -> Binaries:
    """Where etcd, Patroni and the PostgreSQL server binaries are; raises
    :class:`MissingBinaries` naming every one missing and how to get it."""
    etcd = shutil.which("etcd")
    venv_patroni = PATRONI_VENV / "bin" / "patroni"
    patroni_bin = str(venv_patroni) if os.access(venv_patroni, os.X_OK) else shutil.which("patroni")
    servers = sorted(
        (p.parent for p in PG_BINS.glob("*/bin/postgres") if p.parent.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    missing = []
    if etcd is None:
        missing.append("etcd (Debian package etcd-server)")
    if patroni_bin is None:
        missing.append(
            f"Patroni (pip install 'patroni[etcd3]' psycopg[binary] into a venv at {PATRONI_VENV})"
        )
    if not servers:
        missing.append(f"PostgreSQL server binaries in {PG_BINS}/VERSION/bin (Debian postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            missing.append(f"the user {RUN_AS} to run PostgreSQL as")
    if missing:
        raise MissingBinaries(
            "the national tier needs " + "; ".join(missing) + f": {HOW_TO_INSTALL}"
        )
    assert etcd is not None and patroni_bin is not None
    return Binaries(Path(etcd), Path(patroni_bin), servers[-1])


def owner() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, when this process is root; else None (run as is)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(RUN_AS)
    return entry.pw_uid, entry.pw_gid


def hand_over(path: Path) -> None:
    """Make ``path`` belong to the user PostgreSQL runs as (when this runs as root)."""
    ids = owner()
    if ids:
        os.chown(path, *ids)


def spawn(
    argv: Sequence[str], log: Path, *, as_owner: bool, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its output appended to ``log``, in the log's
    folder; as the user ``postgres`` if ``as_owner`` and this runs as root."""
    user = owner() if as_owner else None
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user[0] if user else None,
            group=user[1] if user else None,
            extra_groups=[] if user else None,
            env=dict(env) if env is not None else None,
            cwd=log.parent,
        )


def signal_process(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])
    return ""
