"""The cold figures of :mod:`loadtests.bench_recursive`: what each asks of which node and what
it must cost upstream, and the CPU meter read around every cold request."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from loadtests.recursive_federation import (
    COLD_PREFIX_BASE,
    COLD_SUFFIX,
    INDUSTRY_BASE,
    NATIONAL,
    NODES,
    PREFIX,
    SECONDARY,
    SUFFIX_FORMAT,
    handle_text,
)

ENTERPRISE = f"/api/handles/{SECONDARY}."
INDUSTRY = f"/api/handles/{NATIONAL}."
INDUSTRY_HANDLE = f"{NATIONAL}.".encode()
RESULT = b'{"responseCode":1,"handle":"'


@dataclass(frozen=True)
class Cold:
    """A cold figure: where its requests go, what they ask, what each must cost upstream."""

    key: str
    label: str
    node: str
    span: str
    """The :class:`Plan` list its numbers come from ("" for a fixed path)."""
    path_format: str
    """The request path with ``%d`` for the number."""
    body_start: bytes
    expect: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per node, ``/api/stats`` counters per request (absent: zero)."""
    offset: int = 0
    """Added to the plan's numbers: :data:`COLD_PREFIX_BASE` for enterprise prefixes."""

    def path(self, number: int) -> bytes:
        if "%" not in self.path_format:
            return self.path_format.encode()
        return (self.path_format % (number + self.offset)).encode()


COLD_FIGURES = (
    Cold(
        "cached",
        "(w) direct, cached id",
        "secondary",
        "",
        "/api/handles/" + handle_text(0),
        RESULT + PREFIX.encode(),
    ),
    Cold(
        "direct_cold",
        "(d) direct, cold id",
        "secondary",
        "direct",
        f"/api/handles/{PREFIX}/{SUFFIX_FORMAT}",
        RESULT + PREFIX.encode(),
        {"secondary": {"walks": 1}},
    ),
    Cold(
        "recursive_cold",
        "(c) recursive, cold id, known prefix site",
        "recursive",
        "recursive",
        f"/api/handles/{PREFIX}/{SUFFIX_FORMAT}",
        RESULT + PREFIX.encode(),
        {"recursive": {"walks": 1, "upstream_requests": 1}, "secondary": {"walks": 1}},
    ),
    Cold(
        "new_prefix",
        "(n) recursive, new enterprise prefix",
        "recursive",
        "new_prefix",
        f"{ENTERPRISE}%d/{COLD_SUFFIX}",
        RESULT + SECONDARY.encode(),
        {
            "recursive": {"walks": 1, "upstream_requests": 1, "early_used": 1, "early_settled": 1},
            "secondary": {"walks": 1},
        },
        offset=COLD_PREFIX_BASE,
    ),
    Cold(
        "fully_cold",
        "(e) recursive, fully cold",
        "recursive",
        "fully_cold",
        f"{INDUSTRY}%d.1/{COLD_SUFFIX}",
        RESULT + INDUSTRY_HANDLE,
        {
            "recursive": {"walks": 1, "upstream_requests": 2, "early_used": 1, "early_settled": 1},
            "top-level": {"walks": 1},
            "secondary": {"walks": 1},
        },
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "fully_cold_seq",
        "(e0) recursive, fully cold, early requests off",
        "recursive-seq",
        "sequential",
        f"{INDUSTRY}%d.1/{COLD_SUFFIX}",
        RESULT + INDUSTRY_HANDLE,
        {
            "recursive-seq": {"walks": 1, "upstream_requests": 3},
            "top-level": {"walks": 1},
            "secondary": {"walks": 2},
        },
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "hop_top",
        "(f1) top level, 0.NA/P: referral",
        "top-level",
        "hops",
        f"/api/handles/0.NA/{NATIONAL}.%d.1",
        b'{"responseCode":303,"handle":"0.NA/' + INDUSTRY_HANDLE,
        {"top-level": {"walks": 1}},
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "hop_prefix",
        "(f2) secondary, 0.NA/P",
        "secondary",
        "hops",
        f"/api/handles/0.NA/{NATIONAL}.%d.1",
        RESULT + b"0.NA/" + INDUSTRY_HANDLE,
        {"secondary": {"walks": 1}},
        offset=INDUSTRY_BASE,
    ),
    Cold(
        "hop_handle",
        "(f3) secondary, P/S",
        "secondary",
        "hops",
        f"{INDUSTRY}%d.1/{COLD_SUFFIX}",
        RESULT + INDUSTRY_HANDLE,
        {"secondary": {"walks": 1}},
        offset=INDUSTRY_BASE,
    ),
)
HOPS = ("hop_top", "hop_handle")
"""The lookups a fully cold walk makes, asked directly: (f) is their sum."""
CPU_GROUPS = (*NODES, "postgres")


class SchedMeter:
    """CPU time of groups of processes in nanoseconds: the first field of ``/proc/PID/schedstat``
    (time on a CPU, exact, unlike the clock ticks of ``/proc/PID/stat``), read with ``pread``
    from files kept open, about a microsecond each.  The main thread of each process: the nodes
    serve from their event loop, PostgreSQL backends have one thread."""

    def __init__(self, groups: dict[str, Sequence[int]]) -> None:
        self._fds: dict[str, list[int]] = {}
        for name, pids in groups.items():
            fds = []
            for pid in pids:
                with suppress(OSError):
                    fds.append(os.open(f"/proc/{pid}/schedstat", os.O_RDONLY))
            self._fds[name] = fds

    def read(self) -> dict[str, int]:
        out = {}
        for name, fds in self._fds.items():
            total = 0
            for fd in fds:
                with suppress(OSError, ValueError):  # a process that ended counts no more
                    total += int(os.pread(fd, 128, 0).split(b" ", 1)[0])
            out[name] = total
        return out

    def close(self) -> None:
        for fds in self._fds.values():
            for fd in fds:
                os.close(fd)


async def backend_pids(admin_dsn: str, databases: Sequence[str]) -> list[int]:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])", list(databases)
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()
