"""The national tier's registry on this machine: one etcd and a Patroni member per site.

Used by ``idis demo``, the end-to-end tests and the benchmarks.  Everything runs on loopback
ports chosen by :func:`nodes.processes.free_ports` (never etcd's 2379/2380) in a temporary
folder of its own, each process in a session of its own.  PostgreSQL refuses to run as root,
so when this runs as root, Patroni (and the PostgreSQL it starts) runs as the user
``postgres``, and the folder is made traversable by it.

Patroni runs as DESIGN.md section 5 measured: synchronous mode, strict (a write is
acknowledged only once a synchronous standby has it), one synchronous standby chosen among the
DR sites (the other sites carry Patroni's ``nosync`` tag, so they are asynchronous standbys that
never become leader), ttl 20 s (Patroni's floor), loop_wait 1 s, retry_timeout 5 s,
primary_start_timeout 0, pg_rewind and replication slots.

Contracts: :meth:`NationalCluster.start` returns once a leader runs and every member streams,
or raises :class:`ClusterFailed` (with the logs' tails) after its timeout; every wait is
bounded; :meth:`NationalCluster.stop` stops everything it started, whatever state it is in,
and may be called any number of times.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from nodes.national import patroni
from nodes.processes import HOST, free_ports

PATRONI_VENV = Path("/opt/idis-patroni")
"""Where scripts/test-deps.sh installs Patroni (else ``patroni`` on the PATH is used)."""
PG_BINS = Path("/usr/lib/postgresql")
"""Debian's PostgreSQL server binaries live in ``<version>/bin`` here; the newest is used."""
RUN_AS = "postgres"
"""The user Patroni and PostgreSQL run as when this runs as root."""
SUPERUSER = "postgres"
HOW_TO_INSTALL = "scripts/test-deps.sh installs them (make test runs it)"
_POLL = 0.2


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


def _owner() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, when this process is root; else None (run as is)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(RUN_AS)
    return entry.pw_uid, entry.pw_gid


def _spawn(argv: Sequence[str], log: Path, *, as_owner: bool, env: Mapping[str, str] | None = None):  # type: ignore[no-untyped-def]
    owner = _owner() if as_owner else None
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
            extra_groups=[] if owner else None,
            env=dict(env) if env is not None else None,
            cwd=log.parent,
        )


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])
    return ""


@dataclass
class Member:
    """One site's PostgreSQL under Patroni."""

    name: str
    dr: bool
    pg_port: int
    api_port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "patroni.log"

    def dsn(self, database: str) -> str:
        """A URL of this member alone (reads)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.pg_port}/{database}"

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return None

    def pids(self) -> list[int]:
        """Patroni's pid and its PostgreSQL postmaster's, those that run."""
        pids = []
        if self.process is not None and self.process.poll() is None:
            pids.append(self.process.pid)
        postmaster = self.postmaster_pid()
        if postmaster is not None and _alive(postmaster):
            pids.append(postmaster)
        return pids

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL Patroni and PostgreSQL at once, as a site lost for good would be."""
        for pid in self.pids():
            _kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM Patroni (it stops PostgreSQL), then SIGKILL what is left after ``timeout``."""
        if self.process is not None and self.process.poll() is None:
            _kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0; its state in /proc says it is gone.
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass
class NationalCluster:
    """etcd and one Patroni member per site; ``sites`` maps a site's name to whether it is a
    DR site (a synchronous standby candidate).  Nothing starts before :meth:`start`."""

    sites: Mapping[str, bool]
    root: Path | None = None
    scope: str = "idis-national"
    members: dict[str, Member] = field(default_factory=dict)
    etcd: subprocess.Popen[bytes] | None = None
    etcd_port: int = 0

    def __post_init__(self) -> None:
        self.binaries = find_binaries()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="idis-national-"))
        self.root.chmod(0o755)  # PostgreSQL's user must reach its folder inside
        ports = free_ports(2 + 2 * len(self.sites))
        self.etcd_port, self._etcd_peer = ports[0], ports[1]
        for n, (name, dr) in enumerate(self.sites.items()):
            home = self.root / name
            home.mkdir(mode=0o700, exist_ok=True)
            member = Member(name, dr, ports[2 + 2 * n], ports[3 + 2 * n], home)
            self.members[name] = member
            self._write_config(member)
            owner = _owner()
            if owner:
                os.chown(home, *owner)

    # --- addresses -----------------------------------------------------------------------

    def write_url(self, database: str) -> str:
        """A URL naming every member that reaches the leader wherever it is (libpq multi-host,
        ``target_session_attrs=read-write``): idis's ``IDIS_DATABASE_URL`` at every site."""
        hosts = ",".join(f"{HOST}:{m.pg_port}" for m in self.members.values())
        return f"postgresql://{SUPERUSER}@{hosts}/{database}?target_session_attrs=read-write"

    def read_url(self, site: str, database: str) -> str:
        """A URL of ``site``'s own member first, then the others: idis's
        ``IDIS_DATABASE_READ_URL`` there.  Reads stay local, and go elsewhere only while the
        local member is down (its restart in a switchover, say)."""
        ordered = [self.members[site]] + [m for m in self.members.values() if m.name != site]
        hosts = ",".join(f"{HOST}:{m.pg_port}" for m in ordered)
        return f"postgresql://{SUPERUSER}@{hosts}/{database}"

    @property
    def api_urls(self) -> list[str]:
        return [m.api_url for m in self.members.values()]

    # --- life ----------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start etcd and every member; return once a leader runs and all others stream.

        The first site named starts first, so it bootstraps the cluster and leads: a DR site
        leading would leave one synchronous candidate, and losing it would stop writes.
        """
        assert self.root is not None
        deadline = time.monotonic() + timeout
        try:
            self._start_etcd()
            first = next(iter(self.members))
            self.start_member(first)
            self.wait_leader(timeout)
            for member in self.members.values():
                self.start_member(member.name)
            self.wait_streaming(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def _start_etcd(self) -> None:
        assert self.root is not None
        client, peer = f"http://{HOST}:{self.etcd_port}", f"http://{HOST}:{self._etcd_peer}"
        self.etcd = _spawn(
            [
                str(self.binaries.etcd),
                "--name=idis",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=idis={peer}",
                "--initial-cluster-state=new",
                "--log-level=warn",
            ],
            self.root / "etcd.log",
            as_owner=False,
        )

    def start_member(self, name: str) -> None:
        """Start (or restart) one member's Patroni; it rejoins as a standby by itself."""
        member = self.members[name]
        if member.alive():
            return
        member.process = _spawn(
            [str(self.binaries.patroni), str(member.home / "patroni.yml")],
            member.log_path,
            as_owner=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every member (all at once: SIGTERM, SIGKILL after ``timeout``), then etcd,
        then remove the folder.  Idempotent."""
        running = [m for m in self.members.values() if m.alive()]
        for member in running:
            assert member.process is not None
            _kill(member.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in running:
            member.stop(max(0.1, deadline - time.monotonic()))
        for member in self.members.values():
            member.kill()
        if self.etcd is not None:
            _kill(self.etcd.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.etcd.wait(10)
            _kill(self.etcd.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.etcd.wait(10)
        if self.root is not None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    # --- state ---------------------------------------------------------------------------

    def state(self) -> list[patroni.MemberInfo]:
        live = [m.api_url for m in self.members.values() if m.alive()]
        return patroni.cluster(live, timeout=2.0)

    def leader(self) -> str | None:
        """The name of the running leader, if any (as Patroni reports it)."""
        with contextlib.suppress(patroni.PatroniError):
            found = patroni.leader(self.state())
            return found.name if found else None
        return None

    def wait_leader(self, timeout: float, *, other_than: str | None = None) -> str:
        """The leader's name once one runs (one other than ``other_than``, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.leader()
            if name is not None and name != other_than:
                return name
            time.sleep(_POLL)
        raise self._failed(f"no leader{f' other than {other_than}' if other_than else ''}", timeout)

    def wait_streaming(self, timeout: float, names: Sequence[str] | None = None) -> str:
        """Wait until a leader runs and every member named (default: all) streams from it
        (and a synchronous standby is chosen); the leader's name."""
        wanted = set(names or self.members)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(patroni.PatroniError):
                members = self.state()
                lead = patroni.leader(members)
                ok = {m.name for m in members if m.state == "streaming"}
                if lead is not None:
                    ok.add(lead.name)
                synchronous = any(m.role == "sync_standby" for m in members)
                if lead is not None and wanted <= ok and synchronous:
                    return lead.name
            time.sleep(_POLL)
        raise self._failed(f"members {sorted(wanted)} not all streaming", timeout)

    def switchover(self, candidate: str | None = None) -> tuple[str, str]:
        """A planned switchover (see :func:`nodes.national.patroni.switchover`)."""
        return patroni.switchover(
            [m.api_url for m in self.members.values() if m.alive()], candidate
        )

    async def create_database(self, name: str, timeout: float = 30.0) -> None:
        """Create database ``name`` on the leader (it replicates to every member)."""
        url = self.write_url("postgres")
        connection = await asyncpg.connect(url, timeout=timeout)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    def _failed(self, what: str, timeout: float) -> ClusterFailed:
        assert self.root is not None
        logs = [
            f"--- {m.name} ({'up' if m.alive() else 'down'})\n{_tail(m.log_path)}"
            for m in self.members.values()
        ]
        logs.append(f"--- etcd\n{_tail(self.root / 'etcd.log')}")
        return ClusterFailed(f"{what} within {timeout:g}s\n" + "\n".join(logs))

    # --- configuration -------------------------------------------------------------------

    def _write_config(self, member: Member) -> None:
        assert self.root is not None
        config = {
            "scope": self.scope,
            "namespace": "/idis/",
            "name": member.name,
            "log": {"level": "WARNING"},
            "restapi": {
                "listen": f"{HOST}:{member.api_port}",
                "connect_address": f"{HOST}:{member.api_port}",
            },
            "etcd3": {"hosts": [f"{HOST}:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": 20,
                    "loop_wait": 1,
                    "retry_timeout": 5,
                    "primary_start_timeout": 0,
                    "synchronous_mode": True,
                    "synchronous_mode_strict": True,
                    "synchronous_node_count": 1,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_log_hints": "on",
                            "max_connections": 200,
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "shared_buffers": "32MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
            },
            "postgresql": {
                "listen": f"{HOST}:{member.pg_port}",
                "connect_address": f"{HOST}:{member.pg_port}",
                "data_dir": str(member.data_dir),
                "bin_dir": str(self.binaries.pg_bin),
                "pgpass": str(member.home / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": "idis"},
                    "replication": {"username": "replicator", "password": "idis"},
                    "rewind": {"username": SUPERUSER, "password": "idis"},
                },
                "parameters": {"unix_socket_directories": str(member.home)},
                "pg_hba": [
                    "local all all trust",
                    f"host all all {HOST}/32 trust",
                    f"host replication replicator {HOST}/32 trust",
                ],
            },
            "tags": {"nosync": not member.dr},
        }
        path = member.home / "patroni.yml"
        # JSON is YAML: no YAML writer needed.
        path.write_text(json.dumps(config, indent=1), encoding="utf-8")
        owner = _owner()
        if owner:
            os.chown(path, *owner)


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
        owner = _owner()
        if owner:
            os.chown(self.root, *owner)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster on first use, start the server, return once it accepts."""
        if not self.data_dir.exists():
            init = _spawn(
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
                raise ClusterFailed(f"initdb failed:\n{_tail(self.root / 'initdb.log')}")
        self.process = _spawn(
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
                raise ClusterFailed(f"postgres exited:\n{_tail(self.log_path)}")
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
        raise ClusterFailed(f"postgres not ready within {timeout:g}s:\n{_tail(self.log_path)}")

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown; SIGKILL with ``kill`` or after ``timeout``)."""
        if self.process is None:
            return
        if self.process.poll() is None and not kill:
            _kill(self.process.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        _kill(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)

    def remove(self) -> None:
        """Stop the server and delete its folder.  Idempotent."""
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)
