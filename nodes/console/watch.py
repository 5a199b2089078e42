"""What the console shows that is not the node's own counters, gathered in the background.

A :class:`Watch` runs in every worker, as a task of the application's lifespan, and looks every
``IDIS_CONSOLE__REFRESH`` seconds (default 2) at:

- the national tier, while ``IDIS_NATIONAL__PATRONI`` names its Patroni REST APIs: members,
  roles, states, lag, the leader, and the leader changes it saw (:attr:`Watch.takeovers`, the
  last :data:`TAKEOVERS_KEPT`, with their times).  This look runs whether anyone watches or
  not, so that a takeover is on record when an operator opens the console later; it costs one
  small HTTP GET per worker per refresh.  Each worker keeps its own record; all of them look at
  the same Patroni at the same pace, so they agree within a refresh.
- while someone has asked for the console in the last :data:`WATCHED_FOR` seconds only: this
  node's readiness (the ``/readyz`` verdict, which asks the database), the ``/readyz`` of the
  tier's other sites (``IDIS_CONSOLE__SITES``), of this node's upstreams (top-level nodes, the
  mirror's source), and of the sites its prefix records delegate to (at most
  :data:`MAX_PROBES` a look); and every :data:`DELEGATIONS_EVERY` seconds the prefix records
  themselves, read from the store a page at a time.

``GET /api/console`` so answers from memory: a poll costs no database round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx

from nodes.http.health import readiness
from nodes.national import patroni
from resolver.identifiers import PREFIX_HANDLE_PREFIX
from resolver.sites import sites_of

log = logging.getLogger(__name__)

TAKEOVERS_KEPT = 20
WATCHED_FOR = 30.0
"""Seconds after the last console request during which the watched-only looks go on."""
MAX_PROBES = 64
"""Peers probed at most in one look (the tier's sites and upstreams first)."""
MAX_DELEGATIONS = 1000
"""Prefix records read at most for the list of delegated prefixes (one page)."""
DELEGATIONS_EVERY = 30.0
PROBE_TIMEOUT = 1.0
HEALTH_TIMEOUT = 3.0
"""Seconds this node's own readiness may take (the database down takes its timeout)."""


def iso(moment: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


class Watch:
    """The looks of one worker (see the module docstring); ``node`` is a
    :class:`nodes.bootstrap.Node`.  Everything public is a plain JSON-ready value."""

    def __init__(self, node: Any) -> None:
        self.node = node
        settings = node.settings
        self.refresh: float = settings.console.refresh
        self._patroni: list[str] = list(settings.national.patroni)
        upstreams = [url.rstrip("/") for url in settings.federation.top_level]
        if settings.mirror.source:
            upstreams.append(settings.mirror.source.rstrip("/"))
        self.upstream_urls = upstreams
        self.site_urls: list[str] = list(settings.console.sites)
        self._own = (settings.site_url or "").rstrip("/")
        self.health: dict[str, Any] | None = None
        self.tier: dict[str, Any] | None = None
        self.takeovers: deque[dict[str, Any]] = deque(maxlen=TAKEOVERS_KEPT)
        self.probes: dict[str, dict[str, Any]] = {}
        self.delegations: list[dict[str, Any]] | None = None
        self.homed: list[str] | None = None
        self._leader: str | None = None
        self._seen: dict[str, dict[str, Any]] = {}
        """Every tier member seen so far, as last seen (one that vanished stays, as lost)."""
        self._watched_until = 0.0
        self._delegations_at = 0.0
        self._generation: int | None = None
        self._client = httpx.AsyncClient(timeout=PROBE_TIMEOUT)
        self._task: asyncio.Task[None] | None = None

    # --- asked by the endpoint ----------------------------------------------------------

    async def watched(self) -> None:
        """Note a console request; the first one (or one after a pause) looks at once, so
        that the page has something to show on its first poll."""
        idle = time.monotonic() > self._watched_until
        self._watched_until = time.monotonic() + WATCHED_FOR
        if idle or self.health is None:
            await self._look_watched()

    # --- the loop -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self._look_tier()
                if time.monotonic() < self._watched_until:
                    await self._look_watched()
            except Exception:  # a look that failed must not end the watch
                log.exception("the console's look failed")
            await asyncio.sleep(self.refresh)

    async def _look_watched(self) -> None:
        try:
            ready, database = await asyncio.wait_for(readiness(self.node), HEALTH_TIMEOUT)
        except TimeoutError:
            ready, database = False, {"reachable": False, "error": "no answer in time"}
        except Exception as error:  # a member down mid-connection: /readyz would say 503
            ready, database = False, {"reachable": False, "error": type(error).__name__}
        self.health = {"ready": ready, "database": database, "checked": iso(time.time())}
        await self._look_delegations()
        wanted = self.site_urls + self.upstream_urls
        wanted += [url for d in self.delegations or [] for url in d["urls"]]
        wanted = [url for url in dict.fromkeys(wanted) if url != self._own][:MAX_PROBES]
        results = await asyncio.gather(*(self._probe(url) for url in wanted))
        self.probes = dict(zip(wanted, results, strict=True))

    # --- the national tier --------------------------------------------------------------

    async def _cluster(self) -> list[patroni.MemberInfo] | None:
        last: Exception | None = None
        for url in self._patroni:
            try:
                answer = await self._client.get(f"{url.rstrip('/')}/cluster")
                answer.raise_for_status()
                members = patroni.members_of(answer.json())
            except (httpx.HTTPError, ValueError) as error:
                last = error
                continue
            # The API that answered goes first next time: a dead site costs one miss only.
            self._patroni.remove(url)
            self._patroni.insert(0, url)
            return members
        self.tier = {**(self.tier or {}), "error": f"no Patroni REST API answered: {last}"}
        return None

    async def _look_tier(self) -> None:
        if not self._patroni:
            return
        members = await self._cluster()
        if members is None:
            return
        now = time.time()
        present = set()
        for member in members:
            present.add(member.name)
            self._seen[member.name] = {
                "name": member.name,
                "role": member.role,
                "state": member.state,
                "lag": member.lag,
                "lastSeen": iso(now),
            }
        for name, seen in self._seen.items():
            if name not in present:
                seen.update(role="lost", state="lost", lag=None)
        lead = patroni.leader(members)
        leader = lead.name if lead is not None else None
        if leader is not None and leader != self._leader:
            if self._leader is not None:
                self.takeovers.appendleft({"at": iso(now), "from": self._leader, "to": leader})
                log.info("national tier: %s leads now, after %s", leader, self._leader)
            self._leader = leader
        self.tier = {
            "leader": leader,
            "members": sorted(self._seen.values(), key=lambda m: m["name"]),
            "takeovers": list(self.takeovers),
            "checked": iso(now),
            "error": None,
        }

    # --- peers and delegations ----------------------------------------------------------

    async def _probe(self, url: str) -> dict[str, Any]:
        """``url``'s ``/readyz``: its state (ready, unavailable, down), name, role, member."""
        started = time.monotonic()
        found: dict[str, Any] = {"url": url, "checked": iso(time.time())}
        try:
            answer = await self._client.get(f"{url}/readyz")
            body = answer.json()
        except (httpx.HTTPError, ValueError) as error:
            # A site that went down keeps the name it had, so that it is shown as that site.
            known = {k: v for k, v in self.probes.get(url, {}).items() if k in ("name", "role")}
            return {**found, **known, "state": "down", "error": type(error).__name__}
        found["latencyMs"] = round((time.monotonic() - started) * 1000, 1)
        if not isinstance(body, dict):
            return {**found, "state": "down", "error": "not a /readyz answer"}
        database = body.get("database")
        if not isinstance(database, dict):
            database = {}
        return {
            **found,
            "state": "ready" if answer.status_code == 200 else "unavailable",
            "name": str(body.get("name", "")),
            "role": str(body.get("role", "")),
            "member": database.get("member"),
            "lag": database.get("lag"),
        }

    async def _look_delegations(self) -> None:
        """The prefix records that name a site elsewhere: the nodes this one delegates to."""
        if self.node.settings.role == "recursive":
            return
        # Read again when a prefix record was written here (its generation moved: see
        # resolver/prefix_records.py), and every DELEGATIONS_EVERY seconds for other hosts'.
        generation = self.node.generations.current(PREFIX_HANDLE_PREFIX)
        if time.monotonic() < self._delegations_at and generation == self._generation:
            return
        self._delegations_at = time.monotonic() + DELEGATIONS_EVERY
        self._generation = generation
        try:
            self.homed = await self.node.registrar.homed_prefixes()
            records = await self.node.store.records_under(PREFIX_HANDLE_PREFIX, MAX_DELEGATIONS)
        except Exception as error:  # the database down: keep the last list
            log.warning("the console could not read the prefix records: %r", error)
            return
        found = []
        for key, record in records.items():
            urls = [url.rstrip("/") for site in sites_of(record.values) for url in site.urls]
            urls = [url for url in dict.fromkeys(urls) if url != self._own]
            if urls:
                found.append({"prefix": key[len(PREFIX_HANDLE_PREFIX) + 1 :], "urls": urls})
        self.delegations = found


@contextlib.asynccontextmanager
async def watching(node: Any, app: Any) -> AsyncIterator[None]:
    """Run a :class:`Watch` of ``node`` as ``app.state.console`` while the block runs (nothing
    when the console is off)."""
    if not node.settings.console.enabled:
        yield
        return
    watch = Watch(node)
    app.state.console = watch
    watch.start()
    try:
        yield
    finally:
        await watch.stop()
