"""Counting usage per prefix and UTC day (registry/usage.py), and where it is counted: the
quotas' one count of every resolution, and the national figures' summary."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from nodes.stats.national import TARGET_IDENTIFIERS, parse_report, summarise
from nodes.stats.reporter import report_days, roots
from registry.quotas import Key, QuotaLimits, Quotas
from registry.stores.usage import DayFigures, Reported
from registry.usage import MAX_PREFIXES, Delta, Usage, industry_of, seconds_to_midnight, utc_day

MIDNIGHT = calendar.timegm((2026, 12, 7, 0, 0, 0))
"""2026-12-07T00:00:00Z."""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class NoCounters:
    async def add(self, deltas: Mapping[Key, int]) -> dict[Key, int]:
        raise AssertionError("no limit is set: nothing is shared")

    async def close(self) -> None:
        return None


def counting(usage: Usage) -> Callable[[str], bool]:
    """Where resolutions are counted: the quotas' admit, here without limits."""
    return Quotas(QuotaLimits(), NoCounters(), NoCounters(), usage=usage).admit


def test_counts_per_prefix_and_drains_to_zero() -> None:
    usage = Usage(Clock(MIDNIGHT - 3600))
    resolve = counting(usage)
    for key in ("88.100/A", "88.100/B", "88.100.1/C"):
        resolve(key)
    resolve("88.100/A")
    usage.registered("88.100/A")
    usage.registered("88.100/B")
    usage.deleted("88.100/B")
    assert usage.drain() == [
        Delta("88.100", "2026-12-06", registered=2, deleted=1, resolved=3),
        Delta("88.100.1", "2026-12-06", resolved=1),
    ]
    assert usage.drain() == []


def test_counts_of_prefixes_not_homed_are_dropped() -> None:
    usage = Usage(Clock(MIDNIGHT))
    resolve = counting(usage)
    resolve("88.100/A")
    resolve("99.999/MADE-UP")
    assert usage.drain({"88.100"}.__contains__) == [Delta("88.100", "2026-12-07", resolved=1)]


def test_day_rollover_counts_the_interval_on_the_day_it_began() -> None:
    """Days are UTC; the flusher ends an interval at midnight, so the counts taken before it
    land on the old day and those after on the new one."""
    clock = Clock(MIDNIGHT - 1)
    usage = Usage(clock)
    resolve = counting(usage)
    resolve("88.100/A")
    clock.now = MIDNIGHT + 0.01  # the flush at midnight
    assert usage.drain() == [Delta("88.100", "2026-12-06", resolved=1)]
    resolve("88.100/A")
    resolve("88.100/A")
    assert usage.drain() == [Delta("88.100", "2026-12-07", resolved=2)]
    assert utc_day(MIDNIGHT - 1) == "2026-12-06" and utc_day(MIDNIGHT) == "2026-12-07"
    assert seconds_to_midnight(MIDNIGHT - 5) == 5 and seconds_to_midnight(MIDNIGHT) == 86400


def test_distinct_prefixes_between_flushes_are_bounded() -> None:
    usage = Usage(Clock(MIDNIGHT))
    resolve = counting(usage)
    for n in range(MAX_PREFIXES + 50):
        resolve(f"88.{n}/X")
    resolve("88.0/X")  # one already counted goes on counting
    drained = usage.drain()
    assert len(drained) == MAX_PREFIXES
    assert drained[0] == Delta("88.0", "2026-12-07", resolved=2)


def test_a_failed_flush_is_restored() -> None:
    usage = Usage(Clock(MIDNIGHT))
    resolve = counting(usage)
    resolve("88.100/A")
    usage.registered("88.100/A", 3)
    deltas = usage.drain()
    usage.restore(deltas)
    resolve("88.100/B")
    assert usage.drain() == [Delta("88.100", "2026-12-07", registered=3, resolved=2)]


def test_quotas_count_every_admitted_resolution_and_not_refused_ones() -> None:
    async def run() -> list[Delta]:
        usage = Usage(Clock(MIDNIGHT))
        quotas = Quotas(QuotaLimits(), NoCounters(), NoCounters(), usage=usage)
        for key in ("88.100/A", "88.100/A", "88.101/B"):
            assert quotas.admit(key)
        await quotas.close()
        limited = Quotas(QuotaLimits(resolutions_per_prefix=1), NoCounters(), NoCounters())
        assert limited.admit("88.100/A") and not limited.admit("88.100/A")
        return usage.drain()

    assert asyncio.run(run()) == [
        Delta("88.100", "2026-12-07", resolved=2),
        Delta("88.101", "2026-12-07", resolved=1),
    ]


def test_industry_and_roots() -> None:
    assert industry_of("88.100.1") == "88.100" == industry_of("88.100")
    assert roots(["88.100", "88.100.1", "88.200"]) == {
        "88.100": ["88.100", "88.100.1"],
        "88.200": ["88.200"],
    }
    assert report_days(MIDNIGHT + 10, 3) == ["2026-12-05", "2026-12-06", "2026-12-07"]


def _row(prefix: str, day: str, node: str, *figures: int) -> Reported:
    at = datetime(2026, 12, 7, 1, tzinfo=UTC)
    return Reported(DayFigures(prefix, day, *figures), node, at)


def test_summary_groups_by_industry_and_carries_totals_over() -> None:
    days = ["2026-12-06", "2026-12-07"]
    rows = [
        _row("88.100", "2026-12-06", "a", 5, 0, 10, 105),
        _row("88.100", "2026-12-07", "a", 2, 1, 20, 106),
        _row("88.100.1", "2026-12-07", "a", 3, 0, 7, 3),
        _row("88.101", "2026-12-06", "b", 4, 0, 1, 4),
    ]
    carried = [_row("88.102", "2026-12-01", "c", 1, 0, 1, 50)]
    body = summarise(rows, carried, days, MIDNIGHT + 7200)
    assert body["target"] == {"identifiers": TARGET_IDENTIFIERS, "resolutionsPerDay": 150_000_000}
    nodes = {n["prefix"]: n for n in body["nodes"]}
    assert nodes["88.100"]["identifiers"] == 109
    assert nodes["88.100"]["resolvedToday"] == 27 and nodes["88.100"]["registeredToday"] == 5
    assert nodes["88.100"]["prefixes"] == ["88.100", "88.100.1"]
    assert nodes["88.101"]["identifiers"] == 4 and nodes["88.101"]["resolvedToday"] == 0
    assert nodes["88.102"]["identifiers"] == 50
    assert body["totals"]["identifiers"] == 163 and body["totals"]["resolvedToday"] == 27
    assert body["totals"]["asOf"] == "2026-12-07T02:00:00Z"
    assert body["days"] == [
        {"day": "2026-12-06", "registered": 9, "resolved": 11, "identifiers": 159},
        {"day": "2026-12-07", "registered": 5, "resolved": 27, "identifiers": 163},
    ]


def test_a_malformed_report_is_refused_whole() -> None:
    good = {"node": "a", "prefixes": [{"prefix": "88.100", "days": [{"day": "2026-12-07"}]}]}
    assert parse_report(good, MIDNIGHT)[1] == [DayFigures("88.100", "2026-12-07", 0, 0, 0, 0)]

    def one(**day: object) -> dict[str, object]:
        return {"node": "a", "prefixes": [{"prefix": "88.1", "days": [day]}]}

    bad: object
    for bad in (
        [],
        {"node": "a"},
        {"node": "", "prefixes": []},
        {"node": "a", "prefixes": [{"prefix": "88/1", "days": []}]},
        {"node": "a", "prefixes": [{"prefix": "88.100", "days": [{"day": "2026-13-01"}]}]},
        {"node": "a", "prefixes": [{"prefix": "88.100", "days": [{"day": "2027-01-01"}]}]},
        {
            "node": "a",
            "prefixes": [{"prefix": "88.1", "days": [{"day": "2026-12-07", "resolved": -1}]}],
        },
        {
            "node": "a",
            "prefixes": [{"prefix": "88.1", "days": [{"day": "2026-12-07", "resolved": True}]}],
        },
    ):
        try:
            parse_report(bad, MIDNIGHT)
        except Exception as error:
            assert getattr(error, "code", None) == 202, (bad, error)
        else:
            raise AssertionError(f"{bad} was taken")
