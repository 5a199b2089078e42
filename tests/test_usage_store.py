"""The national statistics' tables on SQLite and PostgreSQL (registry/stores/usage.py):
concurrent flushes add up, figures are absolute per day, a recount sets the total, and the top
level's reports replace rather than add."""

from __future__ import annotations

import asyncio

import pytest

from registry.stores.sql import SqlStore
from registry.stores.usage import DayFigures, SqlNational, SqlUsage
from registry.usage import Delta
from resolver.values import Data, HandleValue, Record

DAYS = ["2026-12-05", "2026-12-06", "2026-12-07"]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(
        request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param])
    )


def _record(handle: str) -> Record:
    return Record(handle, (HandleValue(1, "URL", Data("string", "https://example.com")),))


def test_flushes_add_up_and_figures_are_absolute(url: str) -> None:
    async def run() -> list[DayFigures]:
        usage = SqlUsage(url)
        try:
            # Workers flushing at once: every delta lands.
            await asyncio.gather(
                *(
                    usage.add(
                        [
                            Delta("88.100", "2026-12-06", 1, 0, 10),
                            Delta("88.101", "2026-12-06", resolved=1),
                        ]
                    )
                    for _ in range(5)
                )
            )
            await usage.add([Delta("88.100", "2026-12-07", 2, 1, 3)])
            await usage.add([Delta("88.100", "2026-12-04", 4, 0, 0)])
            return await usage.figures(["88.100", "88.101"], DAYS)
        finally:
            await usage.close()

    figures = asyncio.run(run())
    assert figures == [
        DayFigures("88.100", "2026-12-05", 0, 0, 0, 4),
        DayFigures("88.100", "2026-12-06", 5, 0, 50, 9),
        DayFigures("88.100", "2026-12-07", 2, 1, 3, 10),
        DayFigures("88.101", "2026-12-05", 0, 0, 0, 0),
        DayFigures("88.101", "2026-12-06", 0, 0, 5, 0),
        DayFigures("88.101", "2026-12-07", 0, 0, 0, 0),
    ]


def test_a_recount_makes_the_total_what_lives_under_the_prefix(url: str) -> None:
    async def run() -> tuple[list[str], int, list[DayFigures]]:
        store, usage = SqlStore(url), SqlUsage(url)
        try:
            for n in range(7):  # as an import writes them: not counted
                assert await store.put(f"88.100/I{n}", _record(f"88.100/i{n}"), None)
            assert await store.put("88.1000/X", _record("88.1000/x"), None)  # another prefix
            await usage.add([Delta("88.100", "2026-12-06", registered=3)])
            unbased = await usage.unbased(["88.100", "88.101"])
            count = await usage.recount("88.100")
            await usage.add([Delta("88.100", "2026-12-07", registered=1)])
            return unbased, count, await usage.figures(["88.100"], DAYS)
        finally:
            await usage.close()
            await store.close()

    unbased, count, figures = asyncio.run(run())
    assert unbased == ["88.100", "88.101"]
    assert count == 7
    assert [f.identifiers for f in figures] == [4, 7, 8]


def test_reports_replace_what_was_reported(url: str) -> None:
    async def run() -> tuple[list[DayFigures], list[DayFigures]]:
        national = SqlNational(url)
        try:
            first = [
                DayFigures("88.100", "2026-12-01", 1, 0, 1, 100),
                DayFigures("88.100", "2026-12-06", 5, 0, 9, 105),
            ]
            await national.store("a", first)
            await national.store("a", first)
            await national.store("a", [DayFigures("88.100", "2026-12-06", 6, 0, 12, 106)])
            rows, carried = await national.since("2026-12-05")
            return [r.figures for r in rows], [r.figures for r in carried]
        finally:
            await national.close()

    rows, carried = asyncio.run(run())
    assert rows == [DayFigures("88.100", "2026-12-06", 6, 0, 12, 106)]
    assert carried == [DayFigures("88.100", "2026-12-01", 1, 0, 1, 100)]


def test_a_flush_of_many_prefixes_fits_the_bind_parameter_limits(url: str) -> None:
    """A worker may flush up to MAX_PREFIXES prefixes at once (5 parameters each)."""
    from registry.usage import MAX_PREFIXES

    async def run() -> int:
        usage = SqlUsage(url)
        try:
            deltas = [Delta(f"88.{n}", "2026-12-07", resolved=1) for n in range(MAX_PREFIXES)]
            await usage.add(deltas)
            await usage.add(deltas)
            figures = await usage.figures([f"88.{n}" for n in range(0, MAX_PREFIXES, 7)], DAYS)
            return sum(f.resolved for f in figures)
        finally:
            await usage.close()

    assert asyncio.run(run()) == 2 * len(range(0, MAX_PREFIXES, 7))


def test_concurrent_recounts_of_one_prefix_all_succeed(url: str) -> None:
    """A join's recount and the first report's recount meet on the baseline row: on
    PostgreSQL the loser's REPEATABLE READ transaction fails to serialize and is retried."""

    async def run() -> tuple[list[int], list[DayFigures]]:
        store, usage = SqlStore(url), SqlUsage(url, pool_size=8)
        try:
            for n in range(3):
                assert await store.put(f"88.100/R{n}", _record(f"88.100/r{n}"), None)
            counts = await asyncio.gather(*(usage.recount("88.100") for _ in range(6)))
            return list(counts), await usage.figures(["88.100"], DAYS)
        finally:
            await usage.close()
            await store.close()

    counts, figures = asyncio.run(run())
    assert counts == [3] * 6
    assert [f.identifiers for f in figures] == [3, 3, 3]
