"""``idis bench``: the performance suite, every figure beside its baseline, in one run.

Starts what it needs on 127.0.0.1 (a scratch PostgreSQL database on the local server, created
and dropped here; a node, ``python -m nodes.cli serve``; the reference servers of
:mod:`loadtests.loadgen`; the federation of :mod:`loadtests.bench_recursive`) and measures:

================  =====================================  ================================  ========
key               figure                                 baseline (same run)               target
================  =====================================  ================================  ========
*step http* (:mod:`loadtests.steps_http`)
ceiling_wrk,      the load generators' own ceilings      (constant uvloop server;          info
ceiling_python                                           python: wrk's)
bare              bare FastAPI route GET /healthz        (the HTTP baseline)               info
cached            HTTP resolution, cached identifier     bare route                        >= 1.0
uncached          HTTP resolution, uncached identifiers  bare route                        >= 0.5
asgi              raw ASGI app, constant bytes, under    (information: the HTTP ceiling)   info
                  uvicorn run as the node runs it
cached_asgi       HTTP resolution, cached identifier     raw ASGI app (same server)        >= 0.9
asgi_same         the raw ASGI app sending the cached    raw ASGI app, constant bytes      info
                  answer's bytes and headers
cached_same       HTTP resolution, cached identifier     asgi_same: the app's own work     info
gs1               GS1 Digital Link 307 redirect, cached  cached HTTP resolution            >= 0.8
uncached_pg       HTTP resolution, uncached              raw asyncpg primary-key lookups   info
*step native* (:mod:`loadtests.bench_native`)
native_udp        native resolution over UDP, cached     raw uvloop UDP echo, same bytes   >= 0.5
native_tcp        native resolution over TCP, cached     cached REST resolution            >= 0.8
native_uncached   native resolution, uncached            uncached REST resolution          info
*steps hostile, logins* (:mod:`loadtests.steps_http`, :mod:`loadtests.bench_attacked`)
hostile           cached resolution, 1,000 idle          the same without them             >= 0.8
                  connections and a slow-header client
                  attached
logins            cached resolution under failed logins  the same without them             >= 0.8
*step dns* (:mod:`loadtests.bench_dns`)
dns_cached        DNS NAPTR, cached names (dnsperf)      unbound, local-data, same names   >= 1.0
dns_floor         Python UDP echo, no work               the same unbound                  info
dns_uncached      DNS NAPTR, names never asked before    uncached REST on the same node    info
dns_cached_cpu    server CPU a cached query (us)         unbound's (ratio: unbound/idis)   info
*steps quotas, observe* (:mod:`loadtests.steps_http`)
quotas            cached resolution, daily resolution    the same node without quotas      >= 0.95
                  quotas on (never reached)
observe           cached resolution, metrics, usage      a node with them off              >= 0.95
                  counting and JSON logs on
observe_app       the same inside the app, CPU ns/call   the same app with them off        info
*steps register, templates, mix, storage, import* (:mod:`loadtests.steps_registry`)
register          batch registration (POST /api/batch)   plain COPY of the same rows       info
templates         batch registration, templated records  the same records untemplated      >= 0.8
                  (10 typed attributes, 2 searchable)
mix               Zipf mix with 5% unknown identifiers   bare route                        info
storage           PostgreSQL bytes per identifier        raw payload bytes (handle+values) info
import            ``idis import``                        plain COPY of the same rows       >= 0.8
*step scale10x* (:mod:`loadtests.steps_scale`)
scale10x_p50,     uncached lookup p50/p99 at 10x rows    the same at the base row count    p50
scale10x_p99                                                                               <= 1.5
scale10x_storage  bytes per identifier at 10x rows       the same at the base row count    info
*steps crosshost, recursive, failover* (:mod:`loadtests.steps_federation`)
crosshost         write-to-visible p99, another host     the same read on the writing host p99<=1s
recursive:*       recursive resolution, warm and cold    direct lookup at the secondary    0.9 / 3
takeover          writes back after the leader site is   Patroni's ttl (20 s: no takeover  <= 1.5
                  SIGKILLed (national tier, Patroni)     can be sooner)                    (30 s)
switchover        write pause of a planned switchover    longest write gap, quiet window   <= 5 s
lost              acknowledged writes lost (kill)        acknowledged writes               0
sync_cost         batch registration, synchronous DR     the same, synchronous mode off    info
                  copy (national tier, loopback)
sync_cost_20ms    the same, 20 ms round trip between     the same, synchronous mode off    info
                  the leader and its standbys
sync_one,         registering one handle alone (median   the same, synchronous mode off    info
sync_one_20ms     ms of 10), loopback / 20 ms
*step search* (:mod:`loadtests.steps_search`, :mod:`loadtests.bench_search`)
search_exact,     search p50: exact value, number range  primary-key lookup p50, same      <= 3
search_range      (templated records; 1M ids with        node, same size
                  --quick, 10M without)
================  =====================================  ================================  ========

Targets come from the issues (2: cached, uncached, import; 3: recursive; 10: takeover,
switchover, lost, crosshost; 11: native; 12: templates, quotas, search; 13: cached_asgi, gs1,
dns; 14: hostile, logins; 15: observe) except ``scale10x`` (lookups should stay flat as the
table grows: the suite's own expectation).  HTTP throughput uses ``wrk`` when it is installed,
else the Python generator of :mod:`loadtests.drive` (the report says which, per figure); latency
probes, registration and the Zipf mix always use the Python generator.  Both generators'
ceilings against a constant server are measured and reported in every run.

``--quick`` shrinks every run to fit in about a minute on a 2-core machine; the full suite
takes about ten minutes.  Reuses :mod:`loadtests.bench_http` (seeding, node processes, byte-for-
byte checks), :mod:`loadtests.loadgen` (wrk, CPU accounting, raw asyncpg),
:mod:`loadtests.bench_import` and :mod:`loadtests.bench_recursive` by calling their functions.

This module is only the list of steps (:data:`SUITE`) and the entry points.  The harness every
step runs in is :mod:`loadtests.harness`; the report, :mod:`loadtests.report`.  A new figure is
a function ``def name(suite: Suite) -> None`` in a module of its own (measure the figure and its
baseline, ``suite.add(...)`` the row) and one ``Step("name", module.name)`` line in
:data:`SUITE`, where its turn comes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtests import (
    bench_dns,
    bench_native,
    steps_federation,
    steps_http,
    steps_registry,
    steps_scale,
    steps_search,
)
from loadtests.harness import LOCAL_HOSTS, Settings, Step, Suite, full, quick
from loadtests.loadgen import GeneratorMissing, find_wrk
from loadtests.report import chart, print_report

SUITE: tuple[Step, ...] = (
    # On the suite's seeded database and node, in this order:
    Step("http", steps_http.http),
    Step("native", bench_native.run),
    Step("hostile", steps_http.hostile),
    Step("logins", steps_http.logins),
    Step("dns", bench_dns.run),
    Step("quotas", steps_http.quotas),
    Step("observe", steps_http.observe),
    Step("register", steps_registry.register),
    Step("templates", steps_registry.templates),
    Step("mix", steps_registry.mix, needs="register", why="it resolves what register created"),
    Step("storage", steps_registry.storage),
    Step("scale10x", steps_scale.scale10x),
    Step("crosshost", steps_federation.crosshost),
    # Then, the suite's database dropped, those that bring their own:
    Step("import", steps_registry.import_, seeded=False),
    Step("recursive", steps_federation.recursive, seeded=False),
    Step("failover", steps_federation.failover, seeded=False),
    Step("search", steps_search.search, seeded=False),
)
"""Every step of ``idis bench``, in the order they run (``--only`` takes their names)."""
STEPS = tuple(step.name for step in SUITE)


def run_suite(settings: Settings, steps: Sequence[Step] = SUITE) -> dict[str, Any]:
    """Run ``steps`` (those of ``settings.only``); the report (``report["figures"]``: one dict
    per table row)."""
    if urlsplit(settings.postgres).hostname not in LOCAL_HOSTS:
        raise ValueError("the benchmark's PostgreSQL must be on 127.0.0.1")
    workdir = Path(tempfile.mkdtemp(prefix="idis-suite-"))
    try:
        return Suite(settings, workdir, steps).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main_bench(args: argparse.Namespace) -> int:
    """``idis bench [--quick]``: run, print the table, write the JSON and the PNG."""
    settings = quick() if args.quick else full()
    only = tuple(x.strip() for x in args.only.split(",")) if args.only else STEPS
    unknown = set(only) - set(STEPS)
    if unknown:
        print(f"idis bench: unknown figures {sorted(unknown)}; known: {', '.join(STEPS)}")
        return 2
    settings = replace(
        settings, postgres=args.postgres, generator=args.generator, pin=args.pin, only=only
    )
    if settings.generator == "wrk":
        try:
            find_wrk()
        except GeneratorMissing as error:
            print(f"idis bench: {error}", file=sys.stderr)
            return 2
    report = run_suite(settings)
    print_report(report)
    json_path = Path(args.json or "bench.json")
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    png_path = Path(args.png or "bench.png")
    drawn = chart(report, png_path)
    print(
        f"\nreport: {json_path}"
        + (f"; chart: {png_path}" if drawn else " (no chart: pip install matplotlib)")
    )
    return 0 if report["passed"] else 1


def main_scale(args: argparse.Namespace) -> int:
    """``idis bench --scale``: see :mod:`loadtests.scale`."""
    from loadtests import scale

    return scale.main(args)
