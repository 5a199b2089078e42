"""Recursive resolution beside a direct lookup at the authoritative node, in one run.

    python -m loadtests.bench_recursive [--duration S] [--concurrency C] [--rows N] [--json F]

Starts a minimal federation as real ``idis serve`` processes on 127.0.0.1, one worker each: a
top-level node homing ``88`` that allocated ``88.100``; a secondary node that joined as
``88.100`` and hosts the enterprise prefix ``88.100.1`` with ``--rows`` identifiers, plus one
identifier under each of many more enterprise prefixes ``88.100.N`` (homed there with ``idis
prefix init``'s records, so that the top level refers to the secondary for them), and under
``88.X.1`` for many industry prefixes ``88.X`` the top level delegates to it as it does
``88.100`` (for fully cold walks: each walk under an industry prefix no node was asked about);
a recursive node whose root is the top-level node, and a second one with early requests off.
The top-level and secondary nodes each have a scratch PostgreSQL database (127.0.0.1:5432, user
postgres), created here and dropped at the end.  All traffic goes to 127.0.0.1.

Warm figures, wrk at ``--concurrency`` connections for ``--duration`` seconds after a warm-up,
in ``--warm-slices`` runs of each taken in turn, every response checked byte for byte:

(a) direct: one identifier at the secondary, in its memory: req/s, p50/p99;
(b) recursive: the same identifier through the recursive node, in its memory: req/s as a
    ratio of (a), target >= 0.9.

Cold figures, one request at a time from one client that takes the figures in turn, ``--block``
requests of each (so that every figure and its baseline see the same machine, and each node
runs warm), each request a handle never requested before from any node, every answer checked:

(d) direct: an identifier at the secondary (a miss through its memory to PostgreSQL): p50/p99;
(c) recursive, known prefix site: an identifier through the recursive node, which remembers
    where 88.100.1 is served (one upstream request, a miss at the secondary): p50 as a ratio
    of (d), target <= 3;
(n) recursive, new enterprise prefix: an identifier under an enterprise prefix ``88.100.N``
    nobody was asked about, the recursive node remembering where 88.100's derived prefixes are
    administered (from an earlier walk, as a DNS resolver remembers a zone cut): the identifier
    asked ahead at the secondary, which holds 0.NA/88.100.N and answers for it (a miss there):
    p50 as a ratio of (d), target <= 3;
(e) recursive, fully cold: an identifier under an industry prefix ``88.X`` no node was asked
    about, so that the recursive node remembers nothing on its way (the walk: 0.NA/88.X.1 at the
    top level, its 303 referral to the secondary, the identifier asked ahead there; a miss at
    every node): p50 as a ratio of (d), target <= 3;
(e0) as (e), through the recursive node with ``IDIS_FEDERATION__EARLY_REQUESTS=false`` (it asks
    the secondary for 0.NA/88.X.1, then for the identifier): what asking ahead saves;
(f) the lookups of a fully cold walk asked directly: (f1) the top level's referral for
    0.NA/88.X.1 and (f3) the secondary's 88.X.1/S, summed (what a fully cold walk cannot go
    below), and (f2) the secondary's 0.NA/88.X.1, which (e0) asks too;
(w) a cached identifier at the secondary: the client's own floor.

Each cold figure also gets the CPU time each node and PostgreSQL spent on its requests
(``/proc/PID/schedstat`` read around every request), and the nodes' ``/api/stats`` counters must
show the upstream requests and store misses the plan says, or the run fails.  The exit status
is 0 when every target is met without errors.  See loadtests/README.md.

This module is the entry points; the work is in :mod:`loadtests.recursive_federation` (the
prefixes, identifiers, scratch databases and node processes), :mod:`loadtests.recursive_cold`
(what each cold figure asks and must cost, the CPU meter), :mod:`loadtests.recursive_runs` (the
options, the checks, the warm and cold runs) and :mod:`loadtests.recursive_report` (the figures
beside their baselines, judged, and the printed tables).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from loadtests.loadgen import GeneratorMissing, find_wrk
from loadtests.recursive_report import print_report, summarise
from loadtests.recursive_runs import Bench, Options

__all__ = ["Options", "main", "run_benchmark"]


def run_benchmark(**options: Any) -> dict[str, Any]:
    """Run the benchmark with the :class:`Options` given by name; the report.

    ``report["results"]`` lists each figure with its value, baseline, ratio and (where there
    is a target) whether it passed; ``report["passed"]`` is True when every target is met,
    without errors, and every cold pass's counters matched the plan.  Raises ValueError for bad
    options and :class:`loadtests.loadgen.GeneratorMissing` without wrk.
    """
    opts = Options(**options)
    opts.validate()
    find_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="idis-bench-recursive-"))
    try:
        report = Bench(opts, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return summarise(report)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(
        prog="python -m loadtests.bench_recursive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    add = top.add_argument
    add("--duration", type=float, default=d.duration, help="seconds of each warm figure")
    add("--warm-slices", type=int, default=d.warm_slices, help="warm runs per figure, in turn")
    add("--warmup", type=float, default=d.warmup, help="seconds of warm-up before each run")
    add("--rounds", type=int, default=d.rounds, help="rounds of every figure (medians)")
    add("--concurrency", type=int, default=d.concurrency, help="connections of warm runs")
    add("--rows", type=int, default=d.rows, help="identifiers under 88.100.1")
    add("--cold", type=int, default=d.cold, help="requests per cold figure per round")
    add("--cold-seconds", type=float, default=d.cold_seconds, help="bound on a cold pass")
    add("--block", type=int, default=d.block, help="cold requests of a figure in a row")
    add("--postgres", default=d.postgres, help="where scratch databases go (trust auth)")
    add("--no-pin", dest="pin", action="store_false", help="pin nothing in warm runs")
    add("--pin-cold", action="store_true", help="pin nodes and client in cold passes too")
    add("--profile", metavar="DIR", help="add a cold pass with py-spy on the recursive node")
    add("--json", help="also write the report here")
    args = top.parse_args(argv)
    options = {f.name: getattr(args, f.name) for f in fields(Options)}
    try:
        Options(**options).validate()
        find_wrk()
    except (ValueError, GeneratorMissing) as error:
        top.error(str(error))

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    report = run_benchmark(**options)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
