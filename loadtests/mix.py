"""What a resolution load asks for: Zipf-like popularity and a share of unknown identifiers.

:class:`Zipf` draws ranks 1..n with probability proportional to ``1 / k ** s`` by
rejection-inversion (W. Hörmann and G. Derflinger, "Rejection-inversion to generate variates
from monotone discrete distributions", ACM TOMACS 6(3), 1996; the algorithm of Apache Commons
RNG's ``RejectionInversionZipfSampler``): exact, O(1) per draw, no table, for any n.

:class:`ResolveMix` turns draws into identifiers of a :class:`~loadtests.shapes.Population`:
rank 1 is the most popular identifier; ranks are scattered over the registered indexes by a
fixed permutation, so popularity does not follow registration order.  With probability
``unknown_share`` a draw is instead an identifier that was never registered, each one new
(a resolver's negative cache does not help it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loadtests.shapes import Population, api_path


class Mix(Protocol):
    """What a resolve run asks for next."""

    def draw(self) -> tuple[bool, bytes] | None:
        """``(known, path)`` of the next request, or None when there is nothing left to ask."""
        ...

    def describe(self) -> dict[str, Any]:
        """How the report names this mix."""
        ...


def _helper1(x: float) -> float:
    """log(1 + x) / x, continuous at 0."""
    return math.log1p(x) / x if abs(x) > 1e-8 else 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))


def _helper2(x: float) -> float:
    """(exp(x) - 1) / x, continuous at 0."""
    if abs(x) > 1e-8:
        return math.expm1(x) / x
    return 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))


class Zipf:
    """Ranks 1..n, P(k) proportional to k ** -s (s > 0)."""

    def __init__(self, n: int, s: float, rnd: random.Random | None = None) -> None:
        if n < 1:
            raise ValueError("a Zipf distribution needs n >= 1")
        if not s > 0:
            raise ValueError("the Zipf exponent must be > 0")
        self.n = n
        self.s = s
        self.rnd = rnd or random.Random()
        self._h_x1 = self._hint(1.5) - 1.0
        self._h_n = self._hint(n + 0.5)
        self._cut = 2.0 - self._hint_inv(self._hint(2.5) - self._h(2.0))

    def _h(self, x: float) -> float:
        return math.exp(-self.s * math.log(x))

    def _hint(self, x: float) -> float:
        log_x = math.log(x)
        return _helper2((1.0 - self.s) * log_x) * log_x

    def _hint_inv(self, x: float) -> float:
        t = max(-1.0, x * (1.0 - self.s))
        return math.exp(_helper1(t) * x)

    def sample(self) -> int:
        """One rank, 1 (most popular) to n."""
        rnd = self.rnd.random
        while True:
            u = self._h_n + rnd() * (self._h_x1 - self._h_n)
            x = self._hint_inv(u)
            k = int(x + 0.5)
            if k < 1:
                k = 1
            elif k > self.n:
                k = self.n
            if k - x <= self._cut or u >= self._hint(k + 0.5) - self._h(k):
                return k

    def pmf(self, k: int) -> float:
        """The exact probability of rank ``k`` (sums 1..n; for tests and reports)."""
        norm = sum(j**-self.s for j in range(1, self.n + 1))
        return float(k**-self.s / norm)


def _coprime_step(n: int) -> int:
    """A multiplier coprime with ``n`` near 0.618 n: ``r -> r * step % n`` permutes 0..n-1."""
    step = max(1, int(n * 0.6180339887)) | 1
    while math.gcd(step, n) != 1:
        step += 2
    return step


@dataclass
class ResolveMix:
    """Draws the identifiers a resolution load asks for.

    ``known`` identifiers are the population's indexes ``start .. start + count - 1`` (what a
    register run created); ``unknown_share`` of draws are never-registered identifiers.
    """

    population: Population
    start: int
    count: int
    zipf_s: float = 1.1
    unknown_share: float = 0.05
    seed: int | None = None
    hot_cache: int = 20_000
    """Paths of ranks up to this are kept once computed (the popular ones recur)."""
    rnd: random.Random = field(init=False)
    zipf: Zipf = field(init=False)
    _step: int = field(init=False)
    _unknown_next: int = field(init=False)
    _paths: dict[int, bytes] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("a resolution mix needs at least one registered identifier")
        if not 0.0 <= self.unknown_share <= 1.0:
            raise ValueError("the unknown share must be within 0..1")
        self.rnd = random.Random(self.seed)
        self.zipf = Zipf(self.count, self.zipf_s, self.rnd)
        self._step = _coprime_step(self.count)
        # Each process starts its unknown identifiers somewhere else, so that runs do not
        # repeat each other's (a node's negative cache would answer them).
        self._unknown_next = self.rnd.randrange(1 << 33)

    def index_of_rank(self, rank: int) -> int:
        """The population index of popularity rank ``rank`` (1-based)."""
        return self.start + (rank - 1) * self._step % self.count

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "zipf",
            "population": self.population.describe(),
            "start": self.start,
            "count": self.count,
            "zipf": self.zipf_s,
            "unknown_share": self.unknown_share,
        }

    def draw(self) -> tuple[bool, bytes]:
        """``(known, path)``: the next request's resolution path."""
        if self.unknown_share and self.rnd.random() < self.unknown_share:
            k = self._unknown_next
            self._unknown_next += 1
            return False, api_path(self.population.unknown(k)).encode()
        rank = self.zipf.sample()
        path = self._paths.get(rank)
        if path is None:
            path = api_path(self.population.handle(self.index_of_rank(rank))).encode()
            if rank <= self.hot_cache:
                self._paths[rank] = path
        return True, path


@dataclass
class FixedMix:
    """The same path every time (a cached identifier, or a bare route)."""

    path: str
    known: bool = True
    _raw: bytes = field(init=False)

    def __post_init__(self) -> None:
        self._raw = self.path.encode()

    def draw(self) -> tuple[bool, bytes]:
        return self.known, self._raw

    def describe(self) -> dict[str, Any]:
        return {"kind": "fixed", "path": self.path}


@dataclass
class SequenceMix:
    """Each of ``ids`` once, in order, as ``path_of(id)``; then nothing (the run ends).

    For figures where no identifier may be asked twice (true cache misses).
    """

    ids: Sequence[int]
    path_of: Callable[[int], str]
    known: bool = True
    position: int = 0

    def draw(self) -> tuple[bool, bytes] | None:
        if self.position >= len(self.ids):
            return None
        i = self.ids[self.position]
        self.position += 1
        return self.known, self.path_of(i).encode()

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.ids)

    def describe(self) -> dict[str, Any]:
        return {"kind": "sequence", "ids": len(self.ids), "used": self.position}
