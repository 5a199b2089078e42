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
It is shortened by asking ahead, as a DNS resolver asks each server the whole question: when a
prefix referral (or a remembered delegation) names the site administering ``P``'s parent, that
site is asked for ``P/S`` first.  It holds ``0.NA/P``, so it knows where ``P`` is served: when
it answers for ``P/S`` itself (found, not found under a prefix homed there, or a service
referral carrying ``0.NA/P``'s ``HS_SITE``), that answer stands, and ``P``'s sites are
remembered from it (the site that answered, or the sites of the referral) for the TTL of the
referral that named the site, as a DNS resolver keeps the name servers a referral gave.  So a
fully cold walk asks the top level for ``0.NA/P`` and the secondary for ``P/S``, and nothing
more.  Any other answer (not homed, a further prefix referral, no answer) leaves the walk to
``0.NA/P`` as if nothing had been asked ahead, except that its answer is not asked again and a
server that did not answer is not asked again in the same walk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


SPEAKS_FOR_PREFIX = (Outcome.FOUND, Outcome.NOT_FOUND, 200, Outcome.SERVICE_REFERRAL)
"""Answers for ``P/S`` from the site holding ``0.NA/P`` that settle a walk without that record:
found (200: found, without values of the requested types), not found (a site says so only for a
prefix homed there), or a service referral to ``P``'s sites (``0.NA/P``'s ``HS_SITE``)."""


@dataclass(slots=True)
class _Ahead:
    """A walk's question for its handle, asked ahead (see the module docstring), and what it
    learnt that the rest of the walk uses."""

    handle: str
    url: str = ""
    answer: PeerAnswer | None = None
    """The answer of ``url``, which did not settle the walk."""
    down: set[str] = field(default_factory=set)
    """Servers that did not answer; the walk does not ask them again."""

    def take(self, url: str, handle: str) -> PeerAnswer | None:
        """The answer to asking ``url`` for ``handle``, if it was asked ahead."""
        if self.answer is None or url != self.url or handle != self.handle:
            return None
        answer, self.answer = self.answer, None
        return answer


class _Settled(Exception):
    """The site asked ahead spoke for the handle: the prefix record's lookup ends there.

    ``sites`` serve the handle's prefix until ``expires``: the site that answered, or for a
    service referral the sites it names.
    """

    def __init__(self, answer: PeerAnswer, sites: list[Site], expires: float) -> None:
        super().__init__(answer.handle)
        self.answer = answer
        self.sites = sites
        self.expires = expires


class _Remembered:
    """Site lists by prefix, each until its expiry; at most ``limit`` of them, oldest out first."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._entries: dict[str, tuple[float, list[Site]]] = {}

    def get(self, prefix: str, now: float) -> tuple[float, list[Site]] | None:
        """The sites of ``prefix`` with their expiry, if remembered and not expired."""
        entry = self._entries.get(prefix)
        return entry if entry is not None and entry[0] > now else None

    def put(self, prefix: str, expires: float, sites: list[Site]) -> None:
        entries = self._entries
        entries.pop(prefix, None)
        if len(entries) >= self._limit:
            del entries[next(iter(entries))]
        entries[prefix] = (expires, sites)

    def forget(self, prefix: str) -> None:
        self._entries.pop(prefix, None)


class Walker:
    """The end of a recursive chain (see the module docstring).

    ``early`` (default on) asks ahead: the question for a handle goes first to the site a
    prefix referral names as administering its prefix's parent.
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
        self.upstream_failures = 0
        """Upstream requests that found their server unreachable."""
        self.early_used = 0
        """Answers asked ahead that the walk used (each saved at least one request)."""
        self.early_settled = 0
        """Walks the answer asked ahead settled without the prefix record."""
        self.early_dropped = 0
        """Answers asked ahead from a site that turned out not to serve the prefix."""

    async def __call__(self, key: str, fresh: bool) -> Answer:
        path: list[str] = []
        prefix, _, suffix = key.partition("/")
        if prefix == PREFIX_HANDLE_PREFIX:
            found = await self._prefix_record(suffix, fresh, path)
            record = found[0] if found else None
        else:
            remembered = None if fresh else self._sites.get(prefix, self._clock())
            if remembered is not None:
                path.append(f"{prefix_handle(prefix)} cached")
                record = await self._handle(key, remembered[1], fresh, path)
            else:
                record = await self._walk(key, prefix, fresh, path)
        outcome = Outcome.FOUND if record is not None else Outcome.NOT_FOUND
        expires = self._policy.expiry(record, self._clock())
        return Answer(key, outcome, record, expires, " -> ".join(path))

    async def _walk(self, key: str, prefix: str, fresh: bool, path: list[str]) -> Record | None:
        """``key``'s record, its prefix's sites looked up (asking ahead) and remembered."""
        ahead = _Ahead(key) if self._early else None
        try:
            found = await self._prefix_record(prefix, fresh, path, ahead)
        except _Settled as settled:
            self.early_settled += 1
            self._sites.put(prefix, settled.expires, settled.sites)
            answer = settled.answer
            if answer.code == Outcome.SERVICE_REFERRAL:
                return await self._handle(key, settled.sites, fresh, path)
            return Record(answer.handle, answer.values) if answer.code in (1, 200) else None
        now = self._clock()
        if found is None:
            self._sites.put(prefix, now + self._policy.negative_ttl, [])
            return None
        record, responder = found
        # A prefix record without HS_SITE is served by the node that holds it.
        sites = sites_of(record.values) or [responder]
        self._sites.put(prefix, self._policy.expiry(record, now), sites)
        if ahead is not None and ahead.answer is not None and ahead.url != sites[0].urls[0]:
            self.early_dropped += 1
        return await self._handle(key, sites, fresh, path, ahead)

    async def _ask(
        self,
        sites: Sequence[Site],
        handle: str,
        fresh: bool,
        path: list[str],
        ahead: _Ahead | None = None,
    ) -> tuple[PeerAnswer, Site]:
        """The first answer of the servers of ``sites``, tried in order; what was asked
        ``ahead`` is not asked again, and servers it found down are passed over."""
        for site in sites:
            for url in site.urls:
                answer = ahead.take(url, handle) if ahead is not None else None
                if answer is not None:
                    self.early_used += 1
                elif ahead is not None and url in ahead.down:
                    continue
                else:
                    try:
                        self.upstream_requests += 1
                        answer = await self._client.query(url, handle, fresh=fresh)
                    except PeerUnavailable:
                        self.upstream_failures += 1
                        path.append(f"{url} unreachable")
                        continue
                path.append(f"{url} {handle}:{answer.code}")
                return answer, site
        raise UpstreamUnavailable("no server of the responsible sites answered", handle=handle)

    async def _prefix_record(
        self, prefix: str, fresh: bool, path: list[str], ahead: _Ahead | None = None
    ) -> tuple[Record, Site] | None:
        """The record ``0.NA/prefix`` and the site that answered it, or None if unknown.

        The walk starts at the closest remembered delegation (unless ``fresh``), else at the
        roots.  Each site a delegation names is first asked ``ahead`` (if given), whose answer
        may end the lookup with :class:`_Settled`.
        """
        handle = prefix_handle(prefix)
        start = None if fresh else self._delegation(prefix)
        if start is not None:
            zone, expires, sites = start
            path.append(f"{prefix_handle(zone)} delegation cached")
            try:
                await self._ask_ahead(sites, expires, fresh, path, ahead)
                return await self._follow(handle, prefix, zone, sites, fresh, path, ahead)
            except UpstreamUnavailable:
                # The delegation may have moved: the top level knows.
                self._delegations.forget(zone)
        return await self._follow(handle, prefix, "", self._roots, fresh, path, ahead)

    async def _follow(
        self,
        handle: str,
        prefix: str,
        zone: str,
        sites: Sequence[Site],
        fresh: bool,
        path: list[str],
        ahead: _Ahead | None,
    ) -> tuple[Record, Site] | None:
        """Ask ``sites`` for ``handle`` (the record of ``prefix``), following referrals.

        ``zone`` is the prefix whose delegation named ``sites`` ("" for the roots): a site may
        only delegate prefixes below the one it was delegated, and only such delegations are
        remembered (as DNS resolvers keep only in-bailiwick referrals), so that no site can
        take over prefixes it was never given.
        """
        for _ in range(MAX_REFERRALS):
            answer, site = await self._ask(sites, handle, fresh, path, ahead)
            if answer.code == 1:
                return Record(answer.handle, answer.values), site
            if answer.code in (Outcome.PREFIX_REFERRAL, Outcome.SERVICE_REFERRAL):
                derived = answer.code == Outcome.PREFIX_REFERRAL
                sites = sites_of(answer.values, derived=derived)
                if not sites:
                    raise UpstreamUnavailable(f"referral for {handle} names no usable site")
                if derived:
                    zone = self._remember_delegation(answer, prefix, zone, sites) or zone
                expires = self._policy.expiry(Record(handle, answer.values), self._clock())
                await self._ask_ahead(sites, expires, fresh, path, ahead)
                continue
            return None
        raise RecursionTooDeep(f"too many referrals resolving {handle}", handle=handle)

    async def _ask_ahead(
        self,
        sites: Sequence[Site],
        expires: float,
        fresh: bool,
        path: list[str],
        ahead: _Ahead | None,
    ) -> None:
        """Ask the first server of ``sites`` (named until ``expires`` by a referral for the
        handle's prefix) for the handle ``ahead`` is for; raise :class:`_Settled` if it speaks
        for the prefix, else keep its answer for the rest of the walk."""
        url = sites[0].urls[0]
        if ahead is None or url in ahead.down:
            return
        try:
            self.upstream_requests += 1
            answer = await self._client.query(url, ahead.handle, fresh=fresh)
        except PeerUnavailable:
            self.upstream_failures += 1
            path.append(f"{url} unreachable")
            ahead.down.add(url)
            return
        if answer.code not in SPEAKS_FOR_PREFIX:
            ahead.url, ahead.answer = url, answer
            return
        path.append(f"{url} {ahead.handle}:{answer.code}")
        self.early_used += 1
        if answer.code != Outcome.SERVICE_REFERRAL:
            raise _Settled(answer, [sites[0]], expires)
        served_by = sites_of(answer.values)
        if not served_by:
            raise UpstreamUnavailable(f"referral for {ahead.handle} names no usable site")
        referral = Record(answer.handle, answer.values)
        raise _Settled(answer, served_by, self._policy.expiry(referral, self._clock()))

    def _delegation(self, prefix: str) -> tuple[str, float, list[Site]] | None:
        """The closest remembered delegation of a prefix ``prefix`` derives from, with its
        expiry."""
        now = self._clock()
        for parent in parent_prefixes(prefix)[1:]:
            entry = self._delegations.get(parent, now)
            if entry is not None:
                return parent, *entry
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

    async def _handle(
        self,
        key: str,
        sites: Sequence[Site],
        fresh: bool,
        path: list[str],
        ahead: _Ahead | None = None,
    ) -> Record | None:
        """``key``'s record from ``sites``, following service referrals; what was asked
        ``ahead`` is not asked again."""
        for _ in range(MAX_REFERRALS):
            answer, _site = await self._ask(sites, key, fresh, path, ahead)
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
