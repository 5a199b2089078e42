"""The national tier's failover, measured: what a planned switchover and the loss of the leader
site cost the writers, and whether an acknowledged write was lost.

One run of :class:`nodes.national.tier.NationalTier` (etcd, Patroni, a leader and both DR
sites, idis per site) under the write+resolve drill of :mod:`nodes.national.drill`:

1. a quiet window: the longest gap between acknowledged writes with nothing happening (the
   baseline of the switchover's pause);
2. a planned switchover (to a synchronous standby): the longest gap between acknowledged writes
   around it, and the writes that failed;
3. the leader site killed with SIGKILL (idis, Patroni, PostgreSQL): seconds from the kill to
   the first write acknowledged that was sent after it (its baseline: Patroni's ttl, the
   earliest a dead leader's lock can expire), and the acknowledged writes missing afterwards
   at any surviving site (reading past every cache).
"""

from __future__ import annotations

import time
from typing import Any

from nodes.national.tier import SMALL_SITES, NationalTier

TTL = 20.0
"""Patroni's leader lock ttl in the cluster (its floor): no takeover can be quicker."""


def _settle(seconds: float) -> None:
    time.sleep(seconds)


def run(window: float = 6.0) -> dict[str, Any]:
    """Run the three measurements; their figures (seconds, counts) and what they rest on."""
    tier = NationalTier(SMALL_SITES)
    out: dict[str, Any] = {}
    try:
        started = time.monotonic()
        tier.start()
        out["start_seconds"] = round(time.monotonic() - started, 1)
        sites = list(SMALL_SITES)

        drill = tier.drill(sites, sites)
        drill.start()
        _settle(2)
        quiet_from = time.monotonic()
        _settle(window)
        out["quiet_pause"] = drill.longest_pause(quiet_from, time.monotonic())
        before = tier.leader()
        switch_from = time.monotonic()
        tier.cluster.switchover()
        switch_to = time.monotonic()
        _settle(3)
        drill.stop()
        out["switchover"] = {
            "from": before,
            "to": tier.cluster.wait_leader(30),
            "call_seconds": round(switch_to - switch_from, 2),
            "pause": drill.longest_pause(switch_from, switch_to + 2),
            "failed_writes": len(drill.failed_writes()),
            "bad": drill.bad[:5],
            "writes": len(drill.writes),
        }

        leader = tier.cluster.wait_streaming(60)
        survivors = [s for s in sites if s != leader]
        drill = tier.drill(sites, sites)
        drill.start()
        _settle(3)
        drill.drop(leader)
        killed = tier.kill_site(leader)
        deadline = killed + 60
        while drill.first_ack_after(killed) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        _settle(2)
        drill.stop()
        acked = [w.handle for w in drill.acknowledged()]
        lost = sorted({h for site in survivors for h in tier.missing(site, acked)})
        out["takeover"] = {
            "leader": leader,
            "seconds": drill.first_ack_after(killed),
            "acknowledged": len(acked),
            "acknowledged_before_kill": sum(1 for w in drill.acknowledged() if w.sent < killed),
            "lost": len(lost),
            "bad": drill.bad[:5],
            "new_leader": tier.leader(),
        }
        rejoin_from = time.monotonic()
        tier.restart_site(leader)
        out["rejoin_seconds"] = round(time.monotonic() - rejoin_from, 1)
    finally:
        tier.stop()
    return out
