"""The top level's side of the national statistics: taking reports, serving the figures.

``POST /api/national/reports`` (HTTP Basic as a prefix holder, ``300:0.NA/PREFIX``) takes a
node's absolute figures per prefix and UTC day::

    {"node": "secondary-a",
     "prefixes": [{"prefix": "88.100", "days": [{"day": "2026-12-06", "registered": 5,
                   "deleted": 0, "resolved": 17, "identifiers": 1205}]}]}

Every prefix must be administered by the caller: the caller administers the prefix record
``0.NA/Q`` of the prefix itself or of one it derives from (a holder reports its enterprise
prefixes too); otherwise the whole report is refused (403) and nothing is stored.  A report
replaces what was reported before for the same prefix and day, so repeats never add up.

``GET /api/national/stats?days=N`` (public: aggregates only) answers the figures as the
console reads them (the contract is fixed; fields may be added, never renamed)::

    {"target": {"identifiers": 2000000000, "resolutionsPerDay": 150000000},
     "totals": {"identifiers", "registeredToday", "resolvedToday", "asOf",
                "identifiersProgress", "resolutionsProgress"},
     "nodes": [{"prefix": "88.100", "node", "identifiers", "registeredToday",
                "resolvedToday", "lastReport", "prefixes": ["88.100", "88.100.1"]}],
     "days": [{"day": "YYYY-MM-DD", "registered", "resolved", "identifiers"}]}

``nodes`` groups by industry (secondary) prefix, the first two labels: 88.100.1 counts toward
88.100.  ``days`` runs over the last N UTC days (1 to 366, default 30), oldest first, every
day present; a prefix's identifier total carries over into days it did not report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from nodes.http.access import require_identity
from nodes.http.bodies import json_response, read_json
from nodes.http.openapi import operation, param, ref
from nodes.http.params import Query
from nodes.stats.reporter import report_days
from registry.authorization import Right, rights
from registry.stores.usage import DayFigures, Reported, SqlNational
from registry.usage import industry_of, utc_day
from resolver.errors import InsufficientPermissions, InvalidValue, ProtocolError
from resolver.identifiers import fold, parent_prefixes, prefix_handle
from resolver.values import Ref

TARGET_IDENTIFIERS = 2_000_000_000
TARGET_RESOLUTIONS_PER_DAY = 150_000_000
MAX_BODY = 4 * 1024 * 1024
MAX_PREFIXES = 1000
MAX_DAYS = 366
MAX_ROWS = 50_000
"""Prefix-days in one report (a reporter sends IDIS_STATS__REPORT_DAYS days per prefix)."""
DEFAULT_DAYS = 30
MAX_COUNT = 2**63 - 1
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PREFIX = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
HOLDER_RIGHTS = Right.MODIFY_VALUE | Right.ADD_VALUE
"""Rights over ``0.NA/Q`` that make an identity Q's holder (those that let it write its
sites there)."""


def _count(entry: dict[str, Any], name: str) -> int:
    value = entry.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise InvalidValue(f"{name} must be an integer from 0 to {MAX_COUNT}")
    return value


def _day(text: Any, latest: str) -> str:
    if not isinstance(text, str) or not _DAY.match(text):
        raise InvalidValue("day must be YYYY-MM-DD")
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise InvalidValue(f"{text} is no calendar day") from None
    if text > latest:
        raise InvalidValue(f"{text} is in the future")
    return text


def parse_report(body: Any, now: float) -> tuple[str, list[DayFigures]]:
    """The reporting node's name and its figures; :class:`InvalidValue` (202) for anything
    malformed (nothing is stored then)."""
    if not isinstance(body, dict) or not isinstance(body.get("prefixes"), list):
        raise InvalidValue('a report is {"node": NAME, "prefixes": [{"prefix", "days": [...]}]}')
    node = body.get("node")
    if not isinstance(node, str) or not 0 < len(node) <= 200:
        raise InvalidValue("node must name the reporting node (1 to 200 characters)")
    if len(body["prefixes"]) > MAX_PREFIXES:
        raise InvalidValue(f"a report covers at most {MAX_PREFIXES} prefixes")
    latest = utc_day(now + 86400)  # a reporter's clock a little ahead is no error
    figures: dict[tuple[str, str], DayFigures] = {}
    for entry in body["prefixes"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("days"), list):
            raise InvalidValue('each prefix is {"prefix": P, "days": [...]}')
        prefix = entry.get("prefix")
        if not isinstance(prefix, str) or not _PREFIX.match(prefix) or "/" in prefix:
            raise InvalidValue(f"{prefix!r} is not a prefix")
        if len(entry["days"]) > MAX_DAYS:
            raise InvalidValue(f"a report covers at most {MAX_DAYS} days per prefix")
        if len(figures) + len(entry["days"]) > MAX_ROWS:
            raise InvalidValue(f"a report covers at most {MAX_ROWS} prefix-days")
        for day in entry["days"]:
            if not isinstance(day, dict):
                raise InvalidValue("each day is an object")
            key = fold(prefix)
            figures[(key, _day(day.get("day"), latest))] = DayFigures(
                key,
                day["day"],
                _count(day, "registered"),
                _count(day, "deleted"),
                _count(day, "resolved"),
                _count(day, "identifiers"),
            )
    return node, list(figures.values())


async def administers(node: Any, identity: Ref, prefix: str) -> bool:
    """Whether ``identity`` holds ``prefix`` or a prefix it derives from, at this node."""
    for holder in parent_prefixes(prefix):
        record = await node.fetch(fold(prefix_handle(holder)))
        if record is not None and await rights(identity, record, node.fetch) & HOLDER_RIGHTS:
            return True
    return False


def _iso(at: datetime | float) -> str:
    moment = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarise(
    rows: Sequence[Reported], carried: Sequence[Reported], days: Sequence[str], now: float
) -> dict[str, Any]:
    """The ``GET /api/national/stats`` body (see the module docstring) from the rows of
    ``days`` and each prefix's latest row before them."""
    today = utc_day(now)
    by_prefix: dict[str, dict[str, Reported]] = {}
    for row in rows:
        by_prefix.setdefault(row.figures.prefix, {})[row.figures.day] = row
    before = {row.figures.prefix: row for row in carried}
    # Per day: registered, resolved, identifiers.
    per_day: dict[str, list[int]] = {day: [0, 0, 0] for day in days}
    latest: dict[str, Reported] = {}
    for prefix in sorted({*by_prefix, *before}):
        current = before.get(prefix)
        for day in days:
            found = by_prefix.get(prefix, {}).get(day)
            if found is not None:
                per_day[day][0] += found.figures.registered
                per_day[day][1] += found.figures.resolved
                current = found
            if current is not None:
                per_day[day][2] += current.figures.identifiers
        if current is not None:
            latest[prefix] = current
    groups: dict[str, dict[str, Any]] = {}
    for prefix, row in sorted(latest.items()):
        group = groups.setdefault(
            industry_of(prefix),
            {
                "prefix": industry_of(prefix),
                "node": row.node,
                "identifiers": 0,
                "registeredToday": 0,
                "resolvedToday": 0,
                "lastReport": row.reported_at,
                "prefixes": [],
            },
        )
        group["prefixes"].append(prefix)
        group["identifiers"] += row.figures.identifiers
        if row.figures.day == today:
            group["registeredToday"] += row.figures.registered
            group["resolvedToday"] += row.figures.resolved
        if row.reported_at > group["lastReport"] or industry_of(prefix) == prefix:
            group["node"] = row.node
        group["lastReport"] = max(group["lastReport"], row.reported_at)
    nodes = []
    for group in groups.values():
        nodes.append({**group, "lastReport": _iso(group["lastReport"])})
    identifiers = sum(g["identifiers"] for g in nodes)
    resolved_today = sum(g["resolvedToday"] for g in nodes)
    return {
        "target": {
            "identifiers": TARGET_IDENTIFIERS,
            "resolutionsPerDay": TARGET_RESOLUTIONS_PER_DAY,
        },
        "totals": {
            "identifiers": identifiers,
            "registeredToday": sum(g["registeredToday"] for g in nodes),
            "resolvedToday": resolved_today,
            "asOf": _iso(now),
            "identifiersProgress": identifiers / TARGET_IDENTIFIERS,
            "resolutionsProgress": resolved_today / TARGET_RESOLUTIONS_PER_DAY,
        },
        "nodes": nodes,
        "days": [
            {"day": day, "registered": r, "resolved": v, "identifiers": i}
            for day, (r, v, i) in per_day.items()
        ],
    }


def national_router(node: Any, store: SqlNational) -> APIRouter:
    """The national statistics routes of a top-level (or DR) node."""
    router = APIRouter(prefix="/api/national")

    @router.post(
        "/reports",
        openapi_extra=operation(
            "Take a node's absolute usage figures per prefix and UTC day (prefix holders; "
            "a repeated report replaces, never adds)",
            body=ref("Object"),
            ok=(200, ref("Object")),
            failures=(400, 401, 403),
            auth=True,
        ),
    )
    async def take_report(request: Request) -> Response:
        identity = await require_identity(node, request, "a report needs a prefix holder")
        name, figures = parse_report(await read_json(request, MAX_BODY), time.time())
        for prefix in sorted({f.prefix for f in figures}):
            if not await administers(node, identity, prefix):
                raise InsufficientPermissions(f"{identity} does not administer {prefix}")
        await store.store(name, figures)
        return json_response({"responseCode": 1, "node": name, "stored": len(figures)})

    @router.get(
        "/stats",
        openapi_extra=operation(
            "The national statistics: identifiers and resolutions per industry node and per "
            "UTC day, against the national targets",
            params=[param("days", {"type": "integer", "minimum": 1, "maximum": MAX_DAYS})],
            ok=(200, ref("Object")),
            failures=(400,),
            auth=False,
        ),
    )
    async def national_stats(request: Request) -> Response:
        count = Query(request.scope["query_string"]).int("days", DEFAULT_DAYS)
        if not 1 <= count <= MAX_DAYS:
            raise ProtocolError(f"days from 1 to {MAX_DAYS}")
        now = time.time()
        days = report_days(now, count)
        rows, carried = await store.since(days[0])
        return json_response(summarise(rows, carried, days, now))

    return router
