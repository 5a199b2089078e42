"""The national tier's failover, measured: what a planned switchover and the loss of the leader
site cost the writers, and whether an acknowledged write was lost.

One run of :class:`nodes.national.tier.NationalTier` (etcd, Patroni, a leader and both DR
sites, idis per site) under the write+resolve drill of :mod:`nodes.national.drill`:

1. a quiet window: the longest gap between acknowledged writes with nothing happening (the
   baseline of the switchover's pause);
2. a planned switchover (to a synchronous standby): the longest gap between acknowledged writes
   around it, and the writes that failed;
3. the cost of the synchronous DR copy: batch registration (``POST /api/batch``) at the
   leader's site with Patroni's synchronous mode (strict) against the same with it off, on
   loopback (the 20 ms round trip between cities is not emulated here);
4. the leader site killed with SIGKILL (idis, Patroni, PostgreSQL): seconds from the kill to
   the first write acknowledged that was sent after it (its baseline: Patroni's ttl, the
   earliest a dead leader's lock can expire), and the acknowledged writes missing afterwards
   at any surviving site (reading past every cache).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx

from nodes.national import patroni
from nodes.national.tier import DATABASE, SMALL_SITES, NationalTier

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

        out["sync_cost"] = sync_cost(tier)

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


def _register(tier: NationalTier, site: str, batches: int, size: int) -> float:
    """Handles a second registered at ``site`` in ``batches`` batches of ``size``."""
    run = uuid.uuid4().hex[:8]
    values = [{"index": 1, "type": "URL", "data": "https://example.com/sync"}]
    with httpx.Client(base_url=tier.nodes[site].url, auth=tier.auth, timeout=120) as client:
        started = time.perf_counter()
        for b in range(batches):
            items = [
                {"handle": f"{tier.prefix}/SYNC-{run}-{b}-{i}", "values": values}
                for i in range(size)
            ]
            answer = client.post("/api/batch", json={"handles": items})
            answer.raise_for_status()
            if any(r["responseCode"] != 1 for r in answer.json()["results"]):
                raise RuntimeError(f"batch registration failed: {answer.text[:300]}")
        return batches * size / (time.perf_counter() - started)


def _synchronous_standbys(tier: NationalTier, leader: str) -> str:
    async def read() -> str:
        dsn = tier.cluster.members[leader].dsn(DATABASE)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return str(await conn.fetchval("SHOW synchronous_standby_names"))
        finally:
            await conn.close()

    return asyncio.run(read())


def _set_synchronous(tier: NationalTier, leader: str, on: bool) -> None:
    patroni.patch_config(
        tier.cluster.api_urls, {"synchronous_mode": on, "synchronous_mode_strict": on}
    )
    deadline = time.monotonic() + 30
    while bool(_synchronous_standbys(tier, leader)) != on:
        if time.monotonic() > deadline:
            raise RuntimeError(f"synchronous mode {'on' if on else 'off'} not applied in 30 s")
        time.sleep(0.2)


def sync_cost(tier: NationalTier, batches: int = 4, size: int = 1000) -> dict[str, Any]:
    """Batch registration at the leader's site, synchronous DR copy on, then off, then on."""
    leader = tier.cluster.wait_streaming(60)
    _register(tier, leader, 1, size)  # warm-up
    synchronous = _register(tier, leader, batches, size)
    try:
        _set_synchronous(tier, leader, False)
        asynchronous = _register(tier, leader, batches, size)
    finally:
        _set_synchronous(tier, leader, True)
    return {"synchronous": synchronous, "asynchronous": asynchronous, "batch": size}
