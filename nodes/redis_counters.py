"""Quota counters in Redis (registry/quotas.py): shared by every worker and host of a node.

Each ``(subject, period)`` is one integer key, ``INCRBY`` in one pipeline per flush; keys of a
day expire two days later, so nothing has to clean them up.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from registry.quotas import Key

EXPIRE_SECONDS = 2 * 86400


class RedisCounters:
    def __init__(self, url: str, *, prefix: str, timeout: float = 0.1) -> None:
        self._redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._prefix = prefix

    async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
        keys = list(deltas)
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject, period in keys:
                name = f"{self._prefix}{period}:{subject}"
                pipe.incrby(name, deltas[(subject, period)])
                pipe.expire(name, EXPIRE_SECONDS)
            answers = await pipe.execute()
        return {key: int(answers[2 * n]) for n, key in enumerate(keys)}

    async def close(self) -> None:
        await self._redis.aclose()
