"""The one place that builds a node: real adapters from settings, wired into a role.

Nothing here runs at import time; :func:`build_node` is called by the server's lifespan and by
CLI commands, and :meth:`Node.close` releases what it opened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nodes.generation_board import GenerationBoard
from nodes.redis_cache import RedisCache
from nodes.settings import Settings
from registry.authentication import Authenticator
from registry.authorization import Fetch
from registry.invalidation import Invalidator
from registry.service import Registrar
from registry.stores.sql import SqlStore
from resolver import chain
from resolver.answers import TtlPolicy
from resolver.cache import MemoryCache
from resolver.homes import Homes
from resolver.ports import Generations, RecordStore, SharedCache
from resolver.values import Record


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

    async def close(self) -> None:
        await self.store.close()
        if self.shared is not None:
            await self.shared.close()
        if isinstance(self.generations, GenerationBoard):
            self.generations.close()


def build_store(settings: Settings) -> RecordStore:
    return SqlStore(settings.database_url)


def build_generations(settings: Settings) -> Generations:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return GenerationBoard(settings.data_dir / "generations.board")


def build_node(settings: Settings) -> Node:
    """An authoritative node: memory cache, coalescing, optional Redis, then the registry."""
    store = build_store(settings)
    generations = build_generations(settings)
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
    resolve = chain.build(layers, chain.StoreLookup(store, homes, policy))
    invalidator = Invalidator(generations, shared)

    async def fetch(key: str) -> Record | None:
        return (await resolve(key, False)).record

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
        registrar=Registrar(store, homes, invalidator, fetch),
        authenticator=Authenticator(fetch),
        fetch=fetch,
    )
