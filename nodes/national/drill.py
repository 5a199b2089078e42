"""A failover drill's load: writes and resolutions against the national tier's sites, every
answer recorded, so that what a takeover cost can be counted afterwards.

Each site named as a writer gets a thread creating new handles ``PREFIX/DRILL-<site>-<n>`` one
after another (``PUT``, at most ``rate`` a second); each site named as a reader gets a thread
resolving handles acknowledged at least ``settle`` seconds earlier (anywhere).  A site can be
dropped from the load before it is killed (:meth:`Drill.drop`).  Everything is bounded: each
request by ``timeout`` seconds, the whole drill by :meth:`Drill.stop` (its threads end within a
request's timeout).  Only loopback URLs are expected.

What is counted: every acknowledged write (200/201) with its time, every answer by kind, site
and status, every "bad" answer (an HTTP 5xx other than 503, a 503 without ``Retry-After``, a
failed resolution), and for each write the times it was sent and answered.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True, slots=True)
class Write:
    handle: str
    site: str
    sent: float
    answered: float
    status: int
    """HTTP status, or 0 when no answer came (connection refused, timeout)."""
    message: str = ""
    """What a failed write was told."""


@dataclass
class Drill:
    writers: Mapping[str, str]
    """Site name → base URL of its idis, for the sites that write."""
    readers: Mapping[str, str]
    """Site name → base URL, for the sites that resolve."""
    auth: httpx.Auth
    prefix: str
    rate: float = 20.0
    timeout: float = 30.0
    settle: float = 1.0
    writes: list[Write] = field(default_factory=list)
    answers: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._run = uuid.uuid4().hex[:8]  # handles of this drill only: every write creates
        self._stop = threading.Event()
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- control -------------------------------------------------------------------------

    def start(self) -> None:
        for site, url in self.writers.items():
            self._spawn(self._write_loop, site, url)
        for site, url in self.readers.items():
            self._spawn(self._read_loop, site, url)

    def drop(self, site: str) -> None:
        """Send nothing more to ``site`` (about to be killed); answers under way still count."""
        self._dropped.add(site)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _spawn(self, loop: Callable[[str, str], None], site: str, url: str) -> None:
        def run() -> None:
            try:
                loop(site, url)
            except Exception as error:  # counted, so that a broken drill cannot pass
                with self._lock:
                    self.bad.append(f"drill thread at {site} failed: {error!r}")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- what happened ---------------------------------------------------------------------

    def acknowledged(self) -> list[Write]:
        with self._lock:
            return [w for w in self.writes if w.status in (200, 201)]

    def failed_writes(self) -> list[Write]:
        with self._lock:
            return [w for w in self.writes if w.status not in (200, 201)]

    def first_ack_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first write acknowledged that was sent after it."""
        times = [w.answered for w in self.acknowledged() if w.sent >= moment]
        return min(times) - moment if times else None

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time between write acknowledgements within ``[start, end]``."""
        times = sorted(w.answered for w in self.acknowledged() if start <= w.answered <= end)
        marks = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(marks))

    # --- loops -----------------------------------------------------------------------------

    def _write_loop(self, site: str, url: str) -> None:
        values = [{"index": 1, "type": "URL", "data": "https://example.com/drill"}]
        n = 0
        with httpx.Client(base_url=url, auth=self.auth, timeout=self.timeout) as client:
            while not self._stop.is_set() and site not in self._dropped:
                n += 1
                handle = f"{self.prefix}/DRILL-{self._run}-{site}-{n}"
                sent = time.monotonic()
                status, retry_after, message = 0, None, ""
                try:
                    answer = client.put(f"/api/handles/{handle}", json={"values": values})
                    status, retry_after = answer.status_code, answer.headers.get("retry-after")
                    message = "" if status < 300 else answer.text[:200]
                except httpx.TransportError as error:
                    message = repr(error)
                answered = time.monotonic()
                with self._lock:
                    self.writes.append(Write(handle, site, sent, answered, status, message))
                    self.answers["write", site, status] += 1
                    self._judge("write", site, handle, status, retry_after)
                self._stop.wait(max(0.0, 1.0 / self.rate - (answered - sent)))

    def _read_loop(self, site: str, url: str) -> None:
        chooser = random.Random(site)
        with httpx.Client(base_url=url, timeout=self.timeout) as client:
            while not self._stop.is_set() and site not in self._dropped:
                settled = time.monotonic() - self.settle
                with self._lock:
                    ready = [
                        w.handle
                        for w in self.writes
                        if w.status in (200, 201) and w.answered < settled
                    ]
                if not ready:
                    self._stop.wait(0.05)
                    continue
                handle = chooser.choice(ready)
                status, retry_after, ok = 0, None, False
                with contextlib.suppress(httpx.TransportError):
                    answer = client.get(f"/api/handles/{handle}")
                    status, retry_after = answer.status_code, answer.headers.get("retry-after")
                    ok = status == 200 and answer.json().get("handle") == handle
                if site in self._dropped:
                    return  # killed under it: not a surviving site's failure
                with self._lock:
                    self.answers["resolve", site, status] += 1
                    self._judge("resolve", site, handle, status, retry_after)
                    if not ok:
                        self.bad.append(f"resolve {handle} at {site}: HTTP {status}")
                self._stop.wait(1.0 / self.rate)

    def _judge(
        self, kind: str, site: str, handle: str, status: int, retry_after: str | None
    ) -> None:
        if site in self._dropped:
            return
        if status >= 500 and status != 503:
            self.bad.append(f"{kind} {handle} at {site}: HTTP {status}")
        if status == 503 and not retry_after:
            self.bad.append(f"{kind} {handle} at {site}: 503 without Retry-After")
