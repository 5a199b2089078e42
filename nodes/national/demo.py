"""The national tier's part of ``idis demo``: one registry under Patroni and etcd, an idis per
site, and (with ``--once``) the leader site killed under load while the DR site takes over.

With ``--once`` it runs the smallest tier that shows it all (a top-level site leading, both DR
sites), kills the leader site with SIGKILL during a write+resolve drill, and prints the measured
takeover time and the count of acknowledged writes lost; the killed site is restarted and
rejoins as a standby.  With ``--state FILE`` it runs the five top-level and two DR sites, writes
``{"sites": [{"name", "role", "http", "leader", "pids"}], "admin": {"identity", "secret"}}``
once everything is ready (``admin`` may create prefix records ``0.NA/88.*``), and keeps running
until interrupted.  Where etcd, Patroni or the PostgreSQL server binaries are missing, it says
which and how to get them, and returns without failing the rest of the demo.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from nodes.national.binaries import MissingBinaries, find_binaries
from nodes.national.tier import NATIONAL_SITES, SMALL_SITES, NationalTier

NATIONAL_PREFIX = "88"
TAKEOVER_LIMIT = 30.0


def state(tier: NationalTier) -> dict[str, Any]:
    """What ``--state FILE`` holds (see the module docstring)."""
    leader = tier.leader()
    return {
        "sites": [
            {
                "name": name,
                "role": "dr" if dr else "top-level",
                "http": tier.nodes[name].url,
                "leader": name == leader,
                "pids": tier.pids(name),
            }
            for name, dr in tier.sites.items()
        ],
        "admin": {"identity": tier.identity, "secret": tier.secret},
    }


def run_national(console: Console, *, once: bool, state_file: Path | None) -> int:
    """The national tier's part of the demo; the process exit code (0 when skipped)."""
    try:
        find_binaries()
    except MissingBinaries as missing:
        console.print(f"[yellow]national tier skipped[/]: {missing}")
        return 0
    sites = SMALL_SITES if once else NATIONAL_SITES
    console.print(
        f"[bold]national tier[/]: {len(sites)} sites, one registry (PostgreSQL under Patroni, "
        "etcd); DR sites synchronous"
    )
    started = time.monotonic()
    tier = NationalTier(sites, prefix=NATIONAL_PREFIX)
    try:
        tier.start()
        console.print(f"  ready in {time.monotonic() - started:.1f} s [dim]({tier.root})[/]")
        _show(console, tier)
        if once:
            return _takeover(console, tier)
        if state_file is not None:
            state_file.write_text(json.dumps(state(tier), indent=1) + "\n", encoding="utf-8")
            console.print(f"  state written to {state_file}")
        console.print("  serving until Ctrl-C")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        tier.stop()


def _show(console: Console, tier: NationalTier) -> None:
    roles = {m.name: m.role.replace("_", " ") for m in tier.cluster.state()}
    for name, dr in tier.sites.items():
        member = roles.get(name, "down")
        console.print(
            f"  {name:<10} {'dr' if dr else 'top-level':<9} {member:<13} {tier.nodes[name].url}"
        )


def _takeover(console: Console, tier: NationalTier) -> int:
    sites = list(tier.sites)
    leader = tier.cluster.wait_streaming(60)
    drill = tier.drill(sites, sites)
    drill.start()
    time.sleep(3)
    drill.drop(leader)
    killed = tier.kill_site(leader)
    console.print(f"  [bold]SIGKILL[/] {leader} (idis, Patroni, PostgreSQL) under load")
    deadline = killed + TAKEOVER_LIMIT + 30
    while drill.first_ack_after(killed) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    drill.stop()
    takeover = drill.first_ack_after(killed)
    survivors = [s for s in sites if s != leader]
    acked = [w.handle for w in drill.acknowledged()]
    lost = sorted({h for site in survivors for h in tier.missing(site, acked)})
    console.print(
        f"  {tier.leader()} took over: writes back after "
        + (f"{takeover:.1f} s" if takeover is not None else "[red]never[/]")
        + f"; acknowledged writes lost: {len(lost)} of {len(acked)}"
        + (f"; bad answers: {len(drill.bad)}" if drill.bad else "")
    )
    tier.restart_site(leader)
    console.print(f"  {leader} restarted: rejoined as a standby")
    _show(console, tier)
    ok = takeover is not None and takeover <= TAKEOVER_LIMIT and not lost and not drill.bad
    return 0 if ok else 1
