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
   loopback and again with a 20 ms round trip between the leader and its standbys (the
   members stream from each other through :class:`nodes.national.link.DelayLink`, whose
   delay is 0 otherwise; the round trip is measured, not assumed);
4. the leader site killed with SIGKILL (idis, Patroni, PostgreSQL): seconds from the kill to
   the first write acknowledged that was sent after it (its baseline: Patroni's ttl, the
   earliest a dead leader's lock can expire), and the acknowledged writes missing afterwards
   at any surviving site (reading past every cache).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx

from nodes.national import patroni
from nodes.national.binaries import SUPERUSER
from nodes.national.link import DelayLink
from nodes.national.tier import DATABASE, SMALL_SITES, NationalTier
from nodes.processes import HOST

TTL = 20.0
"""Patroni's leader lock ttl in the cluster (its floor): no takeover can be quicker."""
ONE_WAY = 0.010
"""The inter-city link's one-way delay: a 20 ms round trip between the leader and its
standbys (Beijing to Guiyang is about 1,700 km; fibre and routers make that ~20-30 ms)."""


def _settle(seconds: float) -> None:
    time.sleep(seconds)


def run(window: float = 6.0) -> dict[str, Any]:
    """Run the three measurements; their figures (seconds, counts) and what they rest on."""
    link = DelayLink()
    tier = NationalTier(SMALL_SITES, link=link)
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
        link.one_way = ONE_WAY
        try:
            out["sync_cost_20ms"] = sync_cost(tier)
        finally:
            link.one_way = 0.0

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


def _register(tier: NationalTier, site: str, batches: int, size: int, inflight: int) -> float:
    """Handles a second registered at ``site``: ``batches`` batches of ``size``, ``inflight``
    at a time."""
    run = uuid.uuid4().hex[:8]
    values = [{"index": 1, "type": "URL", "data": "https://example.com/sync"}]

    def one(client: httpx.Client, b: int) -> None:
        items = [
            {"handle": f"{tier.prefix}/SYNC-{run}-{b}-{i}", "values": values} for i in range(size)
        ]
        answer = client.post("/api/batch", json={"handles": items})
        answer.raise_for_status()
        if any(r["responseCode"] != 1 for r in answer.json()["results"]):
            raise RuntimeError(f"batch registration failed: {answer.text[:300]}")

    limits = httpx.Limits(max_connections=inflight)
    with (
        httpx.Client(
            base_url=tier.nodes[site].url, auth=tier.auth, timeout=120, limits=limits
        ) as client,
        ThreadPoolExecutor(inflight) as pool,
    ):
        started = time.perf_counter()
        list(pool.map(lambda b: one(client, b), range(batches)))
        return batches * size / (time.perf_counter() - started)


def _commit_ms(tier: NationalTier, site: str, count: int = 10) -> float:
    """Median milliseconds of registering one handle (a batch of one), one at a time."""
    run = uuid.uuid4().hex[:8]
    values = [{"index": 1, "type": "URL", "data": "https://example.com/sync"}]
    times = []
    with httpx.Client(base_url=tier.nodes[site].url, auth=tier.auth, timeout=60) as client:
        for n in range(count):
            item = {"handle": f"{tier.prefix}/ONE-{run}-{n}", "values": values}
            started = time.perf_counter()
            client.post("/api/batch", json={"handles": [item]}).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def link_rtt(tier: NationalTier, leader: str, samples: int = 20) -> dict[str, float]:
    """Median milliseconds of a ``SELECT 1`` round trip to the leader through the link's relay
    (the path its standbys stream on) and directly: the link's round trip is their difference."""

    async def median_ms(port: int) -> float:
        dsn = f"postgresql://{SUPERUSER}@{HOST}:{port}/{DATABASE}"
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                await conn.fetchval("SELECT 1")
                times.append((time.perf_counter() - started) * 1000)
            return statistics.median(times)
        finally:
            await conn.close()

    member = tier.cluster.members[leader]
    through = asyncio.run(median_ms(member.connect_port or member.pg_port))
    direct = asyncio.run(median_ms(member.pg_port))
    link = tier.cluster.link
    return {
        "through_ms": round(through, 2),
        "direct_ms": round(direct, 2),
        # the standbys' replication connections relayed to the leader (2: both stream via it)
        "streams_through_link": link.connections(member.pg_port) if link else 0,
    }


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


def sync_cost(
    tier: NationalTier, *, rounds: int = 4, batches: int = 12, size: int = 1000, inflight: int = 3
) -> dict[str, Any]:
    """Batch registration at the leader's site with the synchronous DR copy on and off, in
    ``rounds`` rounds taking turns going first (fresh identifiers each); the medians, the
    rounds and the link's measured round trip.  Synchronous mode is on again afterwards."""
    leader = tier.cluster.wait_streaming(60)
    rtt = link_rtt(tier, leader)
    _register(tier, leader, inflight, size, inflight)  # warm-up
    runs: dict[bool, list[float]] = {True: [], False: []}
    commit_ms: dict[bool, float] = {}
    try:
        for n in range(rounds):
            for on in (True, False) if n % 2 == 0 else (False, True):
                _set_synchronous(tier, leader, on)
                if n == 0:
                    commit_ms[on] = _commit_ms(tier, leader)
                runs[on].append(_register(tier, leader, batches, size, inflight))
    finally:
        _set_synchronous(tier, leader, True)
    return {
        "synchronous": statistics.median(runs[True]),
        "asynchronous": statistics.median(runs[False]),
        "rounds_sync": [round(r) for r in runs[True]],
        "rounds_async": [round(r) for r in runs[False]],
        # each round's sync/async from runs side by side: the machine's load drifts slower
        # than a round, so the median of these is steadier than a ratio of the medians
        "ratio_rounds": [round(a / b, 3) for a, b in zip(runs[True], runs[False], strict=True)],
        "batch": size,
        "inflight": inflight,
        "leader": leader,
        "rtt": rtt,
        "one_handle_ms": {"sync": commit_ms.get(True), "async": commit_ms.get(False)},
    }
