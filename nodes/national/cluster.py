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
primary_start_timeout 0, pg_rewind and replication slots.  Given a
:class:`nodes.national.link.DelayLink`, each member's ``connect_address`` (where the others
stream from it) is its relay on that link, which emulates the round trip between cities.

Contracts: :meth:`NationalCluster.start` returns once a leader runs and every member streams,
or raises :class:`ClusterFailed` (with the logs' tails) after its timeout; every wait is
bounded; :meth:`NationalCluster.stop` stops everything it started, whatever state it is in,
and may be called any number of times.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from nodes.national.binaries import (
    SUPERUSER,
    ClusterFailed,
    find_binaries,
    hand_over,
    signal_process,
    spawn,
    tail,
)
from nodes.national.link import DelayLink
from nodes.processes import HOST, free_ports, pid_alive

_POLL = 0.2


@dataclass
class Member:
    """One site's PostgreSQL under Patroni."""

    name: str
    dr: bool
    pg_port: int
    api_port: int
    home: Path
    connect_port: int = 0
    """The port the other members reach this one on (its link's relay); ``pg_port`` if 0."""
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
        if postmaster is not None and pid_alive(postmaster):
            pids.append(postmaster)
        return pids

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL Patroni and PostgreSQL at once, as a site lost for good would be."""
        for pid in self.pids():
            signal_process(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM Patroni (it stops PostgreSQL), then SIGKILL what is left after ``timeout``."""
        if self.process is not None and self.process.poll() is None:
            signal_process(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()


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
    link: DelayLink | None = None
    """The emulated inter-city link: members stream from each other through it."""

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
            if self.link is not None:
                member.connect_port = self.link.relay(member.pg_port)
            self.members[name] = member
            self._write_config(member)
            hand_over(home)

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
        self.etcd = spawn(
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
        member.process = spawn(
            [str(self.binaries.patroni), str(member.home / "patroni.yml")],
            member.log_path,
            as_owner=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every member (all at once: SIGTERM, SIGKILL after ``timeout``), then etcd and
        the link's relays, then remove the folder.  Idempotent."""
        running = [m for m in self.members.values() if m.alive()]
        for member in running:
            assert member.process is not None
            signal_process(member.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in running:
            member.stop(max(0.1, deadline - time.monotonic()))
        for member in self.members.values():
            member.kill()
        if self.etcd is not None:
            signal_process(self.etcd.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.etcd.wait(10)
            signal_process(self.etcd.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.etcd.wait(10)
        if self.link is not None:
            self.link.stop()
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
            f"--- {m.name} ({'up' if m.alive() else 'down'})\n{tail(m.log_path)}"
            for m in self.members.values()
        ]
        logs.append(f"--- etcd\n{tail(self.root / 'etcd.log')}")
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
                "connect_address": f"{HOST}:{member.connect_port or member.pg_port}",
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
        hand_over(path)
