"""Throttled authentication (nodes/throttle.py, registry/authentication.py): failures counted
per identity and per source, refused before the hash, shared through Redis, Redis down
falling back to memory, one log line per episode."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from nodes.http.replication_api import authenticate_peer
from nodes.processes import free_ports
from nodes.throttle import Throttle, parse_limits
from registry.authentication import Authenticator
from registry.secrets import seal_secret
from resolver.errors import AuthenticationFailed, HandleError, Throttled
from resolver.identifiers import fold
from resolver.values import SECRET_PERMISSIONS, Data, HandleValue, Record

SECRET = "right-secret-123"
ADMIN = "300%3A88.100.1/ADMIN"
LIMITS = {"identity": parse_limits("3/minute;5/hour"), "source": parse_limits("6/minute")}


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class Records:
    def __init__(self) -> None:
        hashed = seal_secret(SECRET)
        self.records = {
            fold(f"88.100.1/{name}"): Record(
                f"88.100.1/{name}",
                (
                    HandleValue(
                        300, "HS_SECKEY", Data("string", hashed), permissions=SECRET_PERMISSIONS
                    ),
                ),
            )
            for name in ("ADMIN", "OTHER", "THIRD")
        }

    async def fetch(self, key: str) -> Record | None:
        return self.records.get(key)


@pytest.fixture(scope="module")
def records() -> Records:
    return Records()


@pytest.fixture
async def throttle() -> AsyncIterator[Throttle]:
    throttle = Throttle(LIMITS)
    yield throttle
    await throttle.close()


async def test_failures_per_identity_are_refused_before_the_hash(
    records: Records, throttle: Throttle, verifications: list[str]
) -> None:
    auth = Authenticator(records.fetch, throttle=throttle)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            await auth.identify(basic(ADMIN, "wrong-guess"), "192.0.2.1")
    assert len(verifications) == 3
    # The identity is spent, whichever address, index or case the next guess comes with.
    for user, source in ((ADMIN, "192.0.2.2"), ("88.100.1%2Fadmin", "192.0.2.3")):
        with pytest.raises(Throttled) as refused:
            await auth.identify(basic(user, SECRET), source)
        assert 1 <= refused.value.retry_after <= 60
    assert len(verifications) == 3, "a throttled attempt must not be hashed"
    assert throttle.stats()["identity"] == {"counted": 3, "refused": 2}
    # Another identity is not affected.
    other = await auth.identify(basic("300%3A88.100.1/OTHER", SECRET), "192.0.2.2")
    assert other is not None and other.handle == "88.100.1/OTHER"


async def test_concurrent_guesses_hash_no_more_than_the_limit(
    records: Records, throttle: Throttle, verifications: list[str]
) -> None:
    auth = Authenticator(records.fetch, throttle=throttle)

    async def guess() -> str:
        try:
            await auth.identify(basic(ADMIN, "wrong-guess"), "192.0.2.1")
        except HandleError as error:
            return type(error).__name__
        return "passed"

    outcomes = await asyncio.gather(*(guess() for _ in range(20)))
    assert sorted(set(outcomes)) == ["AuthenticationFailed", "Throttled"]
    assert outcomes.count("AuthenticationFailed") == len(verifications) == 3


async def test_failures_per_source_are_refused(records: Records, throttle: Throttle) -> None:
    auth = Authenticator(records.fetch, throttle=throttle)
    users = ["300%3A88.100.1/OTHER", "300%3A88.100.1/THIRD", "300%3A88.100.1/NOSUCH"]
    for n in range(6):  # two failures each: no identity reaches its limit of 3
        with pytest.raises(AuthenticationFailed):
            await auth.identify(basic(users[n % 3], "wrong-guess"), "198.51.100.7")
    with pytest.raises(Throttled):
        await auth.identify(basic(ADMIN, SECRET), "198.51.100.7")
    assert await auth.identify(basic(ADMIN, SECRET), "198.51.100.8") is not None
    # Refused at its source, a guess does not count against the identity it named.
    for _ in range(10):
        with pytest.raises(Throttled):
            await auth.identify(basic(users[0], "wrong-guess"), "198.51.100.7")
    assert await auth.identify(basic(users[0], SECRET), "198.51.100.8") is not None


async def guess_until_throttled(auth: Authenticator, source: str, allowed: int) -> None:
    """``allowed`` wrong guesses for ADMIN from ``source`` are hashed and fail; the next one is
    throttled."""
    for _ in range(allowed):
        with pytest.raises(AuthenticationFailed):
            await auth.identify(basic(ADMIN, "wrong-guess"), source)
    with pytest.raises(Throttled):
        await auth.identify(basic(ADMIN, "wrong-guess"), source)


async def test_remembered_credentials_pass_an_identity_under_attack(
    records: Records, throttle: Throttle, verifications: list[str]
) -> None:
    auth = Authenticator(records.fetch, throttle=throttle)
    assert await auth.identify(basic(ADMIN, SECRET), "192.0.2.1") is not None
    # The success was hashed, so it counted as one of the identity's three.
    await guess_until_throttled(auth, "203.0.113.9", 2)
    hashed = len(verifications)
    assert await auth.identify(basic(ADMIN, SECRET), "192.0.2.1") is not None
    assert len(verifications) == hashed


async def test_one_log_line_per_episode(
    records: Records, throttle: Throttle, caplog: pytest.LogCaptureFixture
) -> None:
    auth = Authenticator(records.fetch, throttle=throttle)
    with caplog.at_level(logging.WARNING, logger="nodes.throttle"):
        for _ in range(3):
            with pytest.raises(AuthenticationFailed):
                await auth.identify(basic(ADMIN, "wrong-guess"), "192.0.2.1")
        for _ in range(20):
            with pytest.raises(Throttled):
                await auth.identify(basic(ADMIN, "wrong-guess"), "192.0.2.1")
    # Once refused, the identity is refused at once (uncounted, no store asked) until its
    # window moves on; its episode is logged once, not once per refusal.
    lines = [r.getMessage() for r in caplog.records if "throttled" in r.getMessage()]
    assert len(lines) == 1 and "identity 88.100.1/ADMIN" in lines[0], lines
    assert throttle.stats()["identity"]["refused"] == 20
    assert throttle.stats()["source"] == {"counted": 3, "refused": 0}


async def test_counts_are_shared_through_redis(records: Records, redis_url: str) -> None:
    namespace = f"idis-test-{uuid.uuid4().hex}"
    workers = [Throttle(LIMITS, redis_url=redis_url, namespace=namespace) for _ in range(2)]
    try:
        first, second = (Authenticator(records.fetch, throttle=t) for t in workers)
        for auth in (first, second, first):
            with pytest.raises(AuthenticationFailed):
                await auth.identify(basic(ADMIN, "wrong-guess"), "192.0.2.1")
        with pytest.raises(Throttled):  # the second worker saw the first one's failures
            await second.identify(basic(ADMIN, SECRET), "192.0.2.1")
    finally:
        for throttle in workers:
            await throttle.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{namespace}*"))
        assert keys, "the counts were not kept in Redis"
        client.delete(*keys)
        client.close()


async def test_redis_down_falls_back_to_memory(
    records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    throttle = Throttle(LIMITS, redis_url=f"redis://127.0.0.1:{port}/0", timeout=0.2)
    auth = Authenticator(records.fetch, throttle=throttle)
    try:
        with caplog.at_level(logging.WARNING, logger="nodes.throttle"):
            assert await auth.identify(basic(ADMIN, SECRET), "192.0.2.1") is not None
            await guess_until_throttled(auth, "192.0.2.1", 2)
    finally:
        await throttle.close()
    down = [r for r in caplog.records if "store unreachable" in r.getMessage()]
    assert len(down) == 1


async def test_federation_secret_is_throttled_per_source(throttle: Throttle) -> None:
    secret = "federation-secret-0123"
    for _ in range(6):
        with pytest.raises(AuthenticationFailed):
            await authenticate_peer(basic("federation", "guess"), secret, throttle, "192.0.2.5")
    with pytest.raises(Throttled):
        await authenticate_peer(basic("federation", secret), secret, throttle, "192.0.2.5")
    # Another peer, at another address, is not locked out.
    await authenticate_peer(basic("federation", secret), secret, throttle, "192.0.2.6")


def test_limits_settings_are_checked() -> None:
    assert [str(i) for i in parse_limits("10/minute;100/hour")] == [
        "10 per 1 minute",
        "100 per 1 hour",
    ]
    for bad in ("", "ten a minute", "10/fortnight"):
        with pytest.raises(ValueError):
            parse_limits(bad)
