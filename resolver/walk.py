"""Recursive resolution: walking the prefix hierarchy from the top-level sites.

To resolve ``P/S`` a recursive node needs the site serving ``P``.  It asks a top-level site
for the prefix record ``0.NA/P``; the answer is the record (whose ``HS_SITE`` values name the
site serving ``P``), or a prefix referral (303) to the site administering prefixes derived
from an ancestor of ``P``, where the question is asked again.  Then it asks the site for
``P/S``, following a service referral (302) if that site delegated ``P`` further.  Sites are
remembered per prefix for their records' TTLs (unknown prefixes briefly), servers are tried in
order until one answers, and every step is recorded in the answer's ``source``.

Delegations are remembered as a DNS resolver remembers zone cuts: a prefix referral names the
prefix record that delegates (``referral``: ``0.NA/Q``), and for its TTL a walk for any prefix
derived from ``Q`` starts at the sites it named instead of at a top-level site.  A walk that
started there and found none of them answering forgets the delegation and starts again at the
top, which may know a newer one.  A fresh walk (``auth=true``) uses neither remembered sites
nor delegations.

A walk is a chain of requests each waiting for the one before, so its latency is their sum.
One link is taken out: when a prefix referral (or a remembered delegation) names the site
administering ``P``'s parent, the question for ``P/S`` goes to that site together with the
question for ``0.NA/P`` (an early request).  Enterprise prefixes are usually hosted by that very
site, which then answered both at once; if ``0.NA/P`` names another site the early answer is
dropped and the walk goes on as it would have.  It asks nothing a walk would not ask, except
in that last case.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from resolver.answers import Answer, Outcome, TtlPolicy
from resolver.cache import Kept, keep, restore
from resolver.chain import Resolve
from resolver.errors import RecursionTooDeep, UpstreamUnavailable
from resolver.identifiers import PREFIX_HANDLE_PREFIX, fold, parent_prefixes, prefix_handle
from resolver.sites import Site, sites_of
from resolver.values import HandleValue, Record

MAX_REFERRALS = 8
MAX_REMEMBERED = 100_000
"""Prefix sites and delegations each kept by a walker; the oldest entry goes first."""


class PeerUnavailable(Exception):
    """The server did not answer (refused, timed out, or answered with a server error)."""


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    """What another node answered about one handle: a Handle response code and values."""

    code: int
    handle: str
    values: tuple[HandleValue, ...]
    referral: str = ""
    """In a referral (302, 303): the prefix record that delegates, ``0.NA/Q``."""


class PeerClient(Protocol):
    async def query(self, base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        """Resolve ``handle`` at the node at ``base_url``; raise :class:`PeerUnavailable`."""


@dataclass(slots=True)
class _Early:
    """A request for a handle sent before the walk knows that ``url`` serves its prefix."""

    url: str
    handle: str
    task: asyncio.Future[PeerAnswer]

    def cancel(self) -> None:
        if not self.task.done():
            self.task.cancel()


class _Remembered:
    """Site lists by prefix, each until its expiry; at most ``limit`` of them, oldest out first."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._entries: dict[str, tuple[float, list[Site]]] = {}

    def get(self, prefix: str, now: float) -> list[Site] | None:
        entry = self._entries.get(prefix)
        return entry[1] if entry is not None and entry[0] > now else None

    def put(self, prefix: str, expires: float, sites: list[Site]) -> None:
        entries = self._entries
        entries.pop(prefix, None)
        if len(entries) >= self._limit:
            del entries[next(iter(entries))]
        entries[prefix] = (expires, sites)

    def forget(self, prefix: str) -> None:
        self._entries.pop(prefix, None)


def _retrieve(task: asyncio.Future[PeerAnswer]) -> None:
    # An early request nobody awaits must not log "exception was never retrieved".
    if not task.cancelled():
        task.exception()


class Walker:
    """The end of a recursive chain (see the module docstring).

    ``early`` (default on) sends the question for a handle to the site a prefix referral
    names alongside the question for the prefix record.
    """

    def __init__(
        self,
        client: PeerClient,
        roots: Sequence[Site],
        policy: TtlPolicy,
        clock: Callable[[], float] = time.time,
        *,
        early: bool = True,
    ) -> None:
        self._client = client
        self._roots = list(roots)
        self._policy = policy
        self._clock = clock
        self._early = early
        self._sites = _Remembered()
        """Per prefix ``P``: the sites serving handles under ``P``."""
        self._delegations = _Remembered()
        """Per prefix ``Q``: the sites administering prefixes derived from ``Q``."""
        self.upstream_requests = 0
        self.early_used = 0
        """Early requests whose answer the walk used (each saved a link of the chain)."""
        self.early_dropped = 0
        """Early requests sent to a site that turned out not to serve the prefix."""

    async def __call__(self, key: str, fresh: bool) -> Answer:
        path: list[str] = []
        prefix, _, suffix = key.partition("/")
        if prefix == PREFIX_HANDLE_PREFIX:
            found = await self._prefix_record(suffix, fresh, path)
            record = found[0] if found else None
        else:
            early: list[_Early] = []
            try:
                sites = await self._sites_for(prefix, fresh, path, key, early)
                record = await self._handle(key, sites, fresh, path, early) if sites else None
            finally:
                for request in early:
                    request.cancel()
        outcome = Outcome.FOUND if record is not None else Outcome.NOT_FOUND
        expires = self._policy.expiry(record, self._clock())
        return Answer(key, outcome, record, expires, " -> ".join(path))

    async def _ask(
        self,
        sites: Sequence[Site],
        handle: str,
        fresh: bool,
        path: list[str],
        early: _Early | None = None,
    ) -> tuple[PeerAnswer, Site]:
        """The first answer of the servers of ``sites``, tried in order; ``early`` is the
        request already sent to the first of them."""
        for site in sites:
            for url in site.urls:
                try:
                    if early is not None and url == early.url:
                        task, early = early.task, None
                        answer = await task
                        self.early_used += 1
                    else:
                        self.upstream_requests += 1
                        answer = await self._client.query(url, handle, fresh=fresh)
                except PeerUnavailable:
                    path.append(f"{url} unreachable")
                    continue
                path.append(f"{url} {handle}:{answer.code}")
                return answer, site
        raise UpstreamUnavailable("no server of the responsible sites answered", handle=handle)

    def _send_early(self, sites: Sequence[Site], handle: str, fresh: bool) -> _Early:
        url = sites[0].urls[0]
        self.upstream_requests += 1
        task = asyncio.ensure_future(self._client.query(url, handle, fresh=fresh))
        task.add_done_callback(_retrieve)
        return _Early(url, handle, task)

    async def _prefix_record(
        self,
        prefix: str,
        fresh: bool,
        path: list[str],
        early_for: str | None = None,
        early: list[_Early] | None = None,
    ) -> tuple[Record, Site] | None:
        """The record ``0.NA/prefix`` and the site that answered it, or None if unknown.

        The walk starts at the closest remembered delegation (unless ``fresh``), else at the
        roots.  With ``early_for``, each site a delegation names is also sent the question for
        that handle at once; the request is appended to ``early`` (the caller cancels it if
        unused).
        """
        handle = prefix_handle(prefix)
        start = None if fresh else self._delegation(prefix)
        if start is not None:
            zone, sites = start
            path.append(f"{prefix_handle(zone)} delegation cached")
            self._ask_early(sites, early_for, early, fresh)
            try:
                return await self._follow(
                    handle, prefix, zone, sites, fresh, path, early_for, early
                )
            except UpstreamUnavailable:
                # The delegation may have moved: the top level knows.
                self._delegations.forget(zone)
        return await self._follow(handle, prefix, "", self._roots, fresh, path, early_for, early)

    async def _follow(
        self,
        handle: str,
        prefix: str,
        zone: str,
        sites: Sequence[Site],
        fresh: bool,
        path: list[str],
        early_for: str | None,
        early: list[_Early] | None,
    ) -> tuple[Record, Site] | None:
        """Ask ``sites`` for ``handle`` (the record of ``prefix``), following referrals.

        ``zone`` is the prefix whose delegation named ``sites`` ("" for the roots): a site may
        only delegate prefixes below the one it was delegated, and only such delegations are
        remembered (as DNS resolvers keep only in-bailiwick referrals), so that no site can
        take over prefixes it was never given.
        """
        for _ in range(MAX_REFERRALS):
            answer, site = await self._ask(sites, handle, fresh, path)
            if answer.code == 1:
                return Record(answer.handle, answer.values), site
            if answer.code in (Outcome.PREFIX_REFERRAL, Outcome.SERVICE_REFERRAL):
                derived = answer.code == Outcome.PREFIX_REFERRAL
                sites = sites_of(answer.values, derived=derived)
                if not sites:
                    raise UpstreamUnavailable(f"referral for {handle} names no usable site")
                if derived:
                    zone = self._remember_delegation(answer, prefix, zone, sites) or zone
                self._ask_early(sites, early_for, early, fresh)
                continue
            return None
        raise RecursionTooDeep(f"too many referrals resolving {handle}", handle=handle)

    def _delegation(self, prefix: str) -> tuple[str, list[Site]] | None:
        """The closest remembered delegation of a prefix ``prefix`` derives from."""
        now = self._clock()
        for parent in parent_prefixes(prefix)[1:]:
            sites = self._delegations.get(parent, now)
            if sites is not None:
                return parent, sites
        return None

    def _remember_delegation(
        self, answer: PeerAnswer, prefix: str, zone: str, sites: list[Site]
    ) -> str | None:
        """Remember the delegation a prefix referral states, if in bailiwick; its prefix."""
        holder, _, delegated = fold(answer.referral).partition("/")
        inside = not zone or delegated.startswith(zone + ".")
        if holder != PREFIX_HANDLE_PREFIX or not inside or not prefix.startswith(delegated + "."):
            return None
        expires = self._policy.expiry(Record(answer.referral, answer.values), self._clock())
        self._delegations.put(delegated, expires, sites)
        return delegated

    def _ask_early(
        self,
        sites: Sequence[Site],
        early_for: str | None,
        early: list[_Early] | None,
        fresh: bool,
    ) -> None:
        if early_for is not None and early is not None and self._early:
            for request in early:
                request.cancel()
            early[:] = [self._send_early(sites, early_for, fresh)]

    async def _sites_for(
        self,
        prefix: str,
        fresh: bool,
        path: list[str],
        key: str | None = None,
        early: list[_Early] | None = None,
    ) -> list[Site]:
        """The sites serving handles under ``prefix`` (empty if the prefix is unknown).

        ``key`` and ``early``: see :meth:`_prefix_record`.
        """
        now = self._clock()
        cached = None if fresh else self._sites.get(prefix, now)
        if cached is not None:
            path.append(f"{prefix_handle(prefix)} cached")
            return cached
        found = await self._prefix_record(prefix, fresh, path, key, early)
        if found is None:
            sites: list[Site] = []
            expires = now + self._policy.negative_ttl
        else:
            record, responder = found
            # A prefix record without HS_SITE is served by the node that holds it.
            sites = sites_of(record.values) or [responder]
            expires = self._policy.expiry(record, now)
        self._sites.put(prefix, expires, sites)
        return sites

    async def _handle(
        self,
        key: str,
        sites: Sequence[Site],
        fresh: bool,
        path: list[str],
        early: Sequence[_Early] = (),
    ) -> Record | None:
        # The early request stands for the first request of this loop if it went where that
        # one would go first; otherwise it asked a site that does not serve the prefix.
        first = next((e for e in early if e.handle == key and e.url == sites[0].urls[0]), None)
        if early and first is None:
            self.early_dropped += 1
            for request in early:
                request.cancel()
        for _ in range(MAX_REFERRALS):
            answer, _site = await self._ask(sites, key, fresh, path, first)
            first = None
            if answer.code in (1, 200):
                return Record(answer.handle, answer.values)
            if answer.code == Outcome.SERVICE_REFERRAL:
                sites = sites_of(answer.values)
                if not sites:
                    raise UpstreamUnavailable(f"referral for {key} names no usable site")
                continue
            return None
        raise RecursionTooDeep(f"too many referrals resolving {key}", handle=key)


class StaleLayer:
    """Serves the last good answer, for at most ``stale_for`` seconds past its expiry, when
    every upstream is down (the answer's source then starts with ``stale``)."""

    def __init__(
        self,
        stale_for: float,
        retry_after: float = 2.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stale_for = stale_for
        self._retry_after = retry_after
        self._max = max_entries
        self._clock = clock
        self._last: dict[str, Kept] = {}
        """The last good answer of each key, kept lean (see :mod:`resolver.cache`)."""

    async def resolve(self, key: str, fresh: bool, call_next: Resolve) -> Answer:
        try:
            answer = await call_next(key, fresh)
        except UpstreamUnavailable:
            now = self._clock()
            kept = self._last.get(key)
            last = None if kept is None else restore(key, kept)
            if last is None or last.expires + self._stale_for <= now:
                raise
            # Re-serve briefly, so that a dead upstream is retried now and then, not per query.
            expires = min(now + self._retry_after, last.expires + self._stale_for)
            return Answer(key, last.outcome, last.record, expires, f"stale ({last.source})")
        if answer.outcome in (Outcome.FOUND, Outcome.NOT_FOUND):
            if key not in self._last and len(self._last) >= self._max:
                del self._last[next(iter(self._last))]
            self._last[key] = keep(answer)
        return answer
