"""The national tier running on this machine: the Patroni cluster of
:mod:`nodes.national.cluster` and an ``idis serve`` per site, each reading from its own member
and writing to whichever member leads.  Shared by ``idis demo``, ``idis bench`` and the tests.

:meth:`NationalTier.start` creates the registry's database, migrates it, homes ``prefix`` (its
administrator ``300:PREFIX/ADMIN`` with :attr:`NationalTier.secret`) and starts every site's
idis; :meth:`NationalTier.kill_site` SIGKILLs a whole site (idis, Patroni, PostgreSQL),
:meth:`NationalTier.restart_site` brings it back as a standby; :meth:`NationalTier.stop` stops
everything and removes its folder, whatever state it is in, any number of times.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from nodes.federation import basic_auth
from nodes.national.cluster import NationalCluster
from nodes.national.drill import Drill
from nodes.national.link import DelayLink
from nodes.processes import (
    HOST,
    ServeProcess,
    free_ports,
    node_env,
    run_cli,
    signal_group,
    stop_all,
    wait_ready,
)

DATABASE = "idis"
NATIONAL_SITES = {
    "beijing": False,
    "shanghai": False,
    "guangzhou": False,
    "wuhan": False,
    "chongqing": False,
    "nanjing": True,
    "guiyang": True,
}
"""The five top-level sites and the two DR sites (True) of the notice."""
SMALL_SITES = {"beijing": False, "nanjing": True, "guiyang": True}
"""The smallest tier that shows everything: a leader and both DR sites."""


class NationalTier:
    """``sites`` maps each site's name to whether it is a DR site; the first leads at first."""

    def __init__(
        self,
        sites: Mapping[str, bool] = SMALL_SITES,
        *,
        prefix: str = "88.100.1",
        write_timeout: float = 8.0,
        extra_env: Mapping[str, str] | None = None,
        link: DelayLink | None = None,
    ) -> None:
        self.sites = dict(sites)
        self.prefix = prefix
        self.secret = secrets.token_urlsafe(18)
        self.cluster = NationalCluster(self.sites, link=link)
        assert self.cluster.root is not None
        self.root: Path = self.cluster.root
        self.nodes: dict[str, ServeProcess] = {}
        ports = dict(zip(self.sites, free_ports(len(self.sites)), strict=True))
        urls = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
        apis = {name: member.api_url for name, member in self.cluster.members.items()}
        for name, dr in self.sites.items():
            port = ports[name]
            home = self.root / f"idis-{name}"
            env = node_env(
                home / "data",
                port,
                name=name,
                extra={
                    "IDIS_DATABASE_URL": self.cluster.write_url(DATABASE),
                    "IDIS_DATABASE_READ_URL": self.cluster.read_url(name, DATABASE),
                    "IDIS_ROLE": "dr" if dr else "top-level",
                    "IDIS_DATABASE_WRITE_TIMEOUT": f"{write_timeout:g}",
                    "IDIS_MIGRATE_ON_START": "false",
                    # One registry, one sealing key: a secret sealed at one site opens at all.
                    "IDIS_SECRET_KEY_FILE": str(self.root / "secret.key"),
                    # The console shows the tier: Patroni's view (the site's own member asked
                    # first) and the other sites' idis.
                    "IDIS_NATIONAL__PATRONI": json.dumps(
                        [apis[name], *(url for other, url in apis.items() if other != name)]
                    ),
                    "IDIS_CONSOLE__SITES": json.dumps([u for o, u in urls.items() if o != name]),
                    **(extra_env or {}),
                },
            )
            self.nodes[name] = ServeProcess(name, env, home)

    @property
    def identity(self) -> str:
        return f"300:{self.prefix}/ADMIN"

    @property
    def auth(self) -> httpx.BasicAuth:
        return basic_auth(self.identity, self.secret)

    def start(self, timeout: float = 120.0) -> None:
        from registry import migrate

        try:
            self.cluster.start(timeout)
            asyncio.run(self.cluster.create_database(DATABASE))
            migrate.upgrade(self.cluster.write_url(DATABASE))
            first = next(iter(self.nodes.values()))
            secret_file = self.root / "admin.secret"
            secret_file.write_text(self.secret + "\n", encoding="utf-8")
            run_cli(first.env, "prefix", "init", self.prefix, "--secret-file", str(secret_file))
            for node in self.nodes.values():
                node.launch()
            wait_ready(list(self.nodes.values()), 60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_all([n.process for n in self.nodes.values() if n.process is not None])
        self.cluster.stop()

    def leader(self) -> str | None:
        return self.cluster.leader()

    def pids(self, name: str) -> list[int]:
        """Every process of the site: its idis, its Patroni, its PostgreSQL postmaster."""
        node = self.nodes[name]
        own = [node.pid] if node.alive() else []
        return own + self.cluster.members[name].pids()

    def kill_site(self, name: str) -> float:
        """SIGKILL the site's idis, Patroni and PostgreSQL together; the moment it was done."""
        moment = time.monotonic()
        node = self.nodes[name]
        if node.process is not None:
            signal_group(node.process, signal.SIGKILL)
        self.cluster.members[name].kill()
        if node.process is not None:
            node.process.wait(10)
        return moment

    def restart_site(self, name: str, timeout: float = 90.0) -> None:
        """Start the site's Patroni (it rejoins as a standby, rewound if need be) and idis."""
        self.cluster.start_member(name)
        self.cluster.wait_streaming(timeout)
        self.nodes[name].start(60)

    def drill(self, writers: list[str], readers: list[str]) -> Drill:
        urls = {name: node.url for name, node in self.nodes.items()}
        return Drill(
            {n: urls[n] for n in writers}, {n: urls[n] for n in readers}, self.auth, self.prefix
        )

    def missing(self, site: str, handles: list[str], timeout: float = 20.0) -> list[str]:
        """Handles not found at ``site`` (reading past every cache, ``?auth=true``) once
        ``timeout`` has passed: an asynchronous standby may lag a moment."""
        deadline = time.monotonic() + timeout
        pending = list(handles)
        with httpx.Client(base_url=self.nodes[site].url, timeout=10) as client:
            while pending:
                pending = [
                    h
                    for h in pending
                    if client.get(f"/api/handles/{h}?auth=true").status_code != 200
                ]
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        return pending
