"""The one place that builds a node: real adapters from settings, wired into a role.

A role is a literal list of resolution layers plus its stores (CoreDNS's ``plugin.cfg``):

- authoritative roles (top-level, dr, secondary, enterprise):
  memory → coalesce → [redis] → registry (with the delegations it records);
- recursive: memory → coalesce → [redis] → stale → walk the hierarchy.

Nothing here runs at import time; :func:`build_node` is called by the server's worker factory
and by CLI commands, and :meth:`Node.close` releases what it opened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nodes.federation import TopLevelClient
from nodes.generation_board import GenerationBoard
from nodes.handle.site import load_public_key, native_port
from nodes.metrics import Metrics, totals
from nodes.peer_client import HttpPeerClient
from nodes.redis_cache import RedisCache
from nodes.redis_counters import RedisCounters
from nodes.settings import Settings
from nodes.throttle import Throttle, parse_limits
from registry import secrets
from registry.authentication import Authenticator
from registry.authorization import Fetch
from registry.enterprise import EnterprisePrefixes
from registry.invalidation import Invalidator
from registry.quotas import Counters, QuotaLimits, Quotas
from registry.service import Registrar
from registry.stores.applications import SqlApplications
from registry.stores.counters import SqlCounters
from registry.stores.sql import SqlStore
from registry.stores.tokens import SqlTokens
from registry.tokens import Tokens
from registry.usage import Usage
from resolver import chain
from resolver.answers import Outcome, TtlPolicy
from resolver.cache import MemoryCache
from resolver.homes import Homes
from resolver.ports import Generations, RecordStore, SharedCache
from resolver.prefix_records import PrefixRecords
from resolver.sites import Site
from resolver.values import Record
from resolver.walk import StaleLayer, Walker


@dataclass
class Node:
    settings: Settings
    store: RecordStore
    shared: SharedCache | None
    generations: Generations
    cache: MemoryCache
    coalescer: chain.CoalesceLayer
    resolve: chain.Resolve
    homes: Homes
    invalidator: Invalidator
    registrar: Registrar
    authenticator: Authenticator
    fetch: Fetch
    """Reads a record through the node's caches (for authentication and authorization)."""
    walker: Walker | None
    """Resolves through the hierarchy: the recursive role's chain end, or on behalf of clients
    asking an authoritative node that allows recursion."""
    peers: HttpPeerClient | None
    throttle: Throttle
    """Rate limits on failed authentications and anonymous applications (nodes/throttle.py)."""
    tokens: Tokens
    """Scoped API tokens (registry/tokens.py), accepted as ``Authorization: Bearer``."""
    quotas: Quotas | None
    """Daily resolution, registration and prefix quotas (registry/quotas.py); None: none set."""
    metrics: Metrics
    """The counters ``/metrics`` and ``/api/stats`` show, summed over the workers."""
    usage: Usage | None = None
    """This process's counts for the national statistics (registry/usage.py); None: off."""

    def stats(self) -> dict[str, Any]:
        """``/api/stats``: the node's counters summed over its workers, from the same snapshots
        as ``/metrics`` (at most :data:`nodes.metrics.FLUSH_INTERVAL` old for other workers)."""
        sums = totals(self.metrics.snapshots())

        def total(name: str) -> int:
            return int(sum(sums.get(name, {}).values()))

        early = sums.get("idis_walk_early_requests", {})
        throttle = {
            kind: {
                "counted": int(sums.get("idis_throttle_counted", {}).get((kind,), 0)),
                "refused": int(sums.get("idis_throttle_refused", {}).get((kind,), 0)),
            }
            for kind in self.throttle.stats()
        }
        return {
            "name": self.settings.name,
            "role": self.settings.role,
            "workers": total("idis_workers"),
            "cache_entries": int(sums.get("idis_cache_entries", {}).get(("memory",), 0)),
            "walks": total("idis_walks"),
            "upstream_requests": total("idis_upstream_requests"),
            "early_used": int(early.get(("used",), 0)),
            "early_settled": int(early.get(("settled",), 0)),
            "early_dropped": int(early.get(("dropped",), 0)),
            "requests": total("idis_requests"),
            "authentication_failures": total("idis_authentication_failures"),
            "throttle": throttle,
            "quota_refused": {
                code: int(n) for (code,), n in sums.get("idis_quota_refusals", {}).items()
            },
            **_later_stats(sums),
        }

    async def close(self) -> None:
        await self.store.close()
        await self.throttle.close()
        await self.tokens.close()
        if self.quotas is not None:
            await self.quotas.close()
        if self.shared is not None:
            await self.shared.close()
        if self.peers is not None:
            await self.peers.close()
        if isinstance(self.generations, GenerationBoard):
            self.generations.close()


def _later_stats(sums: dict[str, dict[tuple[str, ...], float]]) -> dict[str, Any]:
    """The ``/api/stats`` fields of lags, the database member, imports and batches: each the
    ``/metrics`` sample of the same name (absent when it is)."""

    def by_label(name: str) -> dict[str, int]:
        return {labels[0]: int(n) for labels, n in sums.get(name, {}).items()}

    found: dict[str, Any] = {
        "batch_items": by_label("idis_batch_items"),
        "import_records": by_label("idis_import_records"),
    }
    for name in (
        "idis_change_feed_lag_seconds",
        "idis_mirror_lag_seconds",
        "idis_replication_lag_seconds",
        "idis_database_reachable",
        "idis_database_leader",
        "idis_leader_changes",
        "idis_import_running",
    ):
        value = sums.get(name, {}).get(())
        if value is not None:
            found[name.removeprefix("idis_")] = round(value, 3)
    return found


NATIONAL_ROLES = ("top-level", "dr")
"""Roles of the national tier's sites, which hold the prefix registry."""


def build_store(settings: Settings, origin: int | None = None) -> SqlStore:
    """The registry; ``origin`` is the host its writes are logged as coming from (the
    :attr:`GenerationBoard.identity` of the board the writer invalidates)."""
    return SqlStore(
        settings.database_url,
        origin=origin,
        read_url=settings.database_read_url,
        connect_timeout=settings.database_timeout,
        read_timeout=settings.database_timeout,
        write_timeout=settings.database_write_timeout,
    )


def build_generations(settings: Settings) -> GenerationBoard:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return GenerationBoard(settings.data_dir / "generations.board")


def build_throttle(settings: Settings) -> Throttle:
    """The node's rate limits, shared through its Redis when it has one."""
    limits = settings.throttle
    return Throttle(
        {
            "identity": parse_limits(limits.identity),
            "source": parse_limits(limits.source),
            "apply-source": parse_limits(limits.apply_source),
            "apply-prefix": parse_limits(limits.apply_prefix),
            "session-source": parse_limits(limits.session_source),
        },
        redis_url=settings.redis_url,
        namespace=f"idis:{settings.name}",
        timeout=settings.cache.redis_timeout,
    )


def build_quotas(settings: Settings, usage: Usage | None = None) -> Quotas | None:
    """The node's quotas, or None when every limit is off and there is no ``usage`` to count
    resolutions for: resolutions counted in Redis when the node has one, registrations always
    in the database (durable)."""
    quota = settings.quota
    limits = QuotaLimits(
        resolutions_per_prefix=quota.resolutions_per_prefix,
        resolutions_per_identity=quota.resolutions_per_identity,
        registrations_per_prefix=quota.registrations_per_prefix,
        registrations_per_identity=quota.registrations_per_identity,
        prefixes_per_prefix=quota.prefixes_per_prefix,
        prefixes_per_identity=quota.prefixes_per_identity,
        flush_seconds=quota.flush_seconds,
    )
    if not limits.any and usage is None:
        return None
    standing = SqlCounters(settings.database_url)
    daily: Counters = standing
    if settings.redis_url:
        prefix = f"idis:{settings.name}:quota:"
        # Off the hot path (a background flush), so a generous timeout: a pipeline that timed
        # out after Redis applied it is counted again, refusing early.
        timeout = max(1.0, settings.cache.redis_timeout)
        daily = RedisCounters(settings.redis_url, prefix=prefix, timeout=timeout)
    return Quotas(limits, daily, standing, usage=usage)


def build_node(settings: Settings) -> Node:
    secrets.use_key_file(settings.secret_key_path)
    generations = build_generations(settings)
    store = build_store(settings, generations.identity)
    shared: SharedCache | None = None
    if settings.redis_url:
        shared = RedisCache(
            settings.redis_url,
            prefix=f"idis:{settings.name}:",
            timeout=settings.cache.redis_timeout,
        )
    policy = TtlPolicy(max_ttl=settings.cache.max_ttl, negative_ttl=settings.cache.negative_ttl)
    homes = Homes(store, generations)
    cache = MemoryCache(generations, max_entries=settings.cache.max_entries, clock=time.time)
    coalescer = chain.CoalesceLayer()
    layers: list[chain.Layer] = [chain.MemoryLayer(cache, generations), coalescer]
    if shared is not None:
        layers.append(chain.SharedLayer(shared, generations))

    federation = settings.federation
    recursive = settings.role == "recursive"
    walker = peers = None
    if recursive or federation.allow_recursion:
        peers = HttpPeerClient(timeout=federation.upstream_timeout)
        roots = [Site((url.rstrip("/"),), "top-level") for url in federation.top_level]
        walker = Walker(peers, roots, policy, early=federation.early_requests)
    terminal: chain.Resolve
    if walker is not None and recursive:
        layers.append(StaleLayer(federation.stale_ttl))
        terminal = walker
    else:
        # The prefix registry's holders keep it in memory (resolver/prefix_records.py).
        limit = settings.cache.prefix_records
        prefixes = None
        if settings.role in NATIONAL_ROLES and limit:
            prefixes = PrefixRecords(store, generations, limit)
        terminal = chain.StoreLookup(store, homes, policy, prefixes=prefixes)
    resolve = chain.build(layers, terminal)
    invalidator = Invalidator(generations, shared)

    throttle = build_throttle(settings)
    # A recursive node homes nothing: it has no usage of its own to count.
    usage = Usage() if settings.stats.enabled and not recursive else None
    quotas = build_quotas(settings, usage)

    async def fetch(key: str) -> Record | None:
        answer = await resolve(key, False)
        return answer.record if answer.outcome is Outcome.FOUND else None

    # A site's own member may lag: what a write changes is read where it is written.
    registrar = Registrar(
        store.writer_view(), homes, invalidator, fetch, quotas=quotas, usage=usage
    )
    tokens = Tokens(SqlTokens(settings.database_url), fetch)
    authenticator = Authenticator(
        fetch, reseal=registrar.reseal, throttle=throttle, bearer=tokens.authenticate
    )
    metrics = Metrics(enabled=settings.metrics)
    observe(metrics, layers, coalescer, walker, throttle, authenticator, quotas)
    metrics.gauge(lambda: [("idis_cache_entries", ("memory",), len(cache))])

    return Node(
        settings=settings,
        store=store,
        shared=shared,
        generations=generations,
        cache=cache,
        coalescer=coalescer,
        resolve=resolve,
        homes=homes,
        invalidator=invalidator,
        registrar=registrar,
        authenticator=authenticator,
        fetch=fetch,
        walker=walker,
        peers=peers,
        throttle=throttle,
        tokens=tokens,
        quotas=quotas,
        metrics=metrics,
        usage=usage,
    )


def observe(
    metrics: Metrics,
    layers: list[chain.Layer],
    coalescer: chain.CoalesceLayer,
    walker: Walker | None,
    throttle: Throttle,
    authenticator: Authenticator,
    quotas: Quotas | None,
) -> None:
    """Let ``metrics`` read the counters the chain, the walker, the throttle, the
    authenticator and the quotas keep as plain attributes (their hot paths carry no metrics
    code)."""
    caches = [layer for layer in layers if isinstance(layer, chain.MemoryLayer | chain.SharedLayer)]

    def counters() -> list[tuple[str, tuple[str, ...], float]]:
        found: list[tuple[str, tuple[str, ...], float]] = [
            ("idis_walks", (), coalescer.walks),
            ("idis_authentication_failures", (), authenticator.failures),
        ]
        for layer in caches:
            name = "memory" if isinstance(layer, chain.MemoryLayer) else "redis"
            found.append(("idis_cache_hits", (name,), layer.hits))
            found.append(("idis_cache_misses", (name,), layer.misses))
        for kind, counts in throttle.stats().items():
            found.append(("idis_throttle_counted", (kind,), counts["counted"]))
            found.append(("idis_throttle_refused", (kind,), counts["refused"]))
        if quotas is not None:
            for code, refused in quotas.stats().items():
                found.append(("idis_quota_refusals", (code,), refused))
        if walker is not None:
            found.append(("idis_upstream_requests", (), walker.upstream_requests))
            found.append(("idis_upstream_failures", (), walker.upstream_failures))
            found.append(("idis_walk_early_requests", ("used",), walker.early_used))
            found.append(("idis_walk_early_requests", ("settled",), walker.early_settled))
            found.append(("idis_walk_early_requests", ("dropped",), walker.early_dropped))
        return found

    metrics.probe(counters)


def build_enterprise_prefixes(node: Node) -> EnterprisePrefixes:
    """The enterprise prefix workflow of ``node`` (registry/enterprise.py); the caller closes it."""
    settings = node.settings
    top_level = TopLevelClient(
        settings.federation.top_level, settings.federation.holder_secret_file
    )
    return EnterprisePrefixes(
        SqlApplications(settings.database_url),
        node.store,
        node.invalidator,
        node.fetch,
        top_level,
        settings.site_url,
        max_pending=settings.throttle.pending_applications,
        native_port=native_port(settings),
        public_key=load_public_key(settings),
        quotas=node.quotas,
    )
