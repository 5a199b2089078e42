"""``idis demo``: a whole federation on this machine, built step by step and queried.

:func:`run_demo` starts, each as an ``idis serve`` process of its own on a loopback port the
operating system picks, with a temporary data directory of its own (the embedded default:
SQLite, in-process cache; no PostgreSQL or Redis), except that the top-level nodes share their
registry:

- the five top-level nodes Beijing, Shanghai, Guangzhou, Wuhan and Chongqing, the sites of the
  national tier: like the real one (one PostgreSQL registry under Patroni, nodes/national/) they
  share ONE registry homing the national prefix ``88``, here one SQLite file, and one secret
  sealing key; each follows the registry's change log to drop what it cached;
- the secondary (industry) nodes 88.100, which joins at Beijing, and 88.101, which joins at
  Shanghai;
- one enterprise node serving its own prefix 88.100.7;
- one recursive node whose roots are all five top-level nodes.

It then allocates 88.100 (at Beijing) and 88.101 (at Shanghai), once each, and measures how soon
every top-level node answers both; has the secondary nodes join (``idis federation join``, which
writes each site once, at Beijing or Shanghai) and measures the same; allocates the enterprise
prefixes through the enterprise workflow (``idis enterprise apply`` at the secondary
node, ``idis enterprise approve`` by its operator): 88.100.1 hosted by the secondary 88.100,
88.101.5 hosted by the secondary 88.101, and 88.100.7 self-hosted on the enterprise node (in a
build without that workflow, it homes the hosted prefixes and writes the self-hosted prefix
record by hand); registers identifiers under each over the REST API; resolves every one through
the recursive node, checking the answer and the node that gave it, and prints the path the walk
took (``x-idis-source``); shows the national statistics the secondary nodes reported upward;
checks that Beijing's federation console (``/console``) shows the federation and the figures,
and prints its URL; and stops Beijing to show that a walk goes on through another root.

Output: a line per step, ✓ or ✗ with what it did and how long it took, a table of the nodes,
the path of each resolution, the national figures and the console's URL.  With ``once`` the
nodes are then stopped; without it Beijing is restarted and the federation keeps serving, with
the console's URL and curl commands to query it, until Ctrl-C.

The steps live by concept: building the federation in :mod:`nodes.demo_build`, using it in
:mod:`nodes.demo_traffic`, its national statistics in :mod:`nodes.stats.demo_step`, the
console in :mod:`nodes.console.demo_step`, who is in it in :mod:`nodes.demo_cluster`, and
what is printed in :mod:`nodes.demo_output`; this module runs them in order and owns the run's
life (signals, serving, clean-up, failure reports).

Every node is driven through the ``idis`` command line (``sys.executable -m nodes.cli``) and the
HTTP API, exactly as an operator would drive it.  Nothing is written outside a temporary
directory, which is removed afterwards (kept, and named, when a step failed: it holds the logs).
Every child process runs in a session of its own and is stopped on every way out: the end of
the run, a failed step, Ctrl-C, SIGTERM/SIGHUP, and interpreter exit.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType

from rich.console import Console

from nodes.console.demo_step import federation_console
from nodes.demo_build import allocate, enterprise_prefixes, plan, start_nodes, start_secondaries
from nodes.demo_cluster import READY_TIMEOUT, Cluster, Demo, Member
from nodes.demo_output import StepFailed, Steps, how_to_query, node_table
from nodes.demo_traffic import failover, register, resolve_all
from nodes.processes import PortTaken, wait_ready
from nodes.stats.demo_step import national_statistics

PORT_ATTEMPTS = 2


def _serve_until_interrupted(demo: Demo) -> None:
    beijing = demo.member("Beijing")
    with demo.steps.step("restart Beijing"):
        demo.cluster.launch(beijing)
        wait_ready([beijing], READY_TIMEOUT)
    demo.serving = True
    demo.console.print(node_table(demo))
    how_to_query(demo)
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        for member in demo.members.values():
            if member.process is not None and not member.alive() and member.name not in reported:
                reported.add(member.name)
                demo.console.print(f"[yellow]{member.name} exited:[/]\n{member.log_tail()}")


def _run_steps(demo: Demo, once: bool) -> None:
    plan(demo)
    start_nodes(demo)
    allocate(demo)
    start_secondaries(demo)
    enterprise_prefixes(demo)
    demo.console.print(node_table(demo))
    register(demo)
    resolve_all(demo)
    national_statistics(demo)
    federation_console(demo)  # Beijing's, before the failover stops Beijing
    failover(demo)
    if not once:
        _serve_until_interrupted(demo)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(once: bool, console: Console | None = None) -> int:
    """Run the demo (see the module docstring); the process exit code.

    With ``once`` the steps run, the results are printed, every node stops, and the code is 0
    exactly when every step worked (1 otherwise).  Without it, after the steps the federation
    keeps serving until Ctrl-C (or SIGTERM), then stops; 0 then, 1 if a step failed (nothing is
    left serving), 130 if interrupted before the steps finished.
    """
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=120)
    previous = {
        sig: signal.signal(sig, _raise_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    started = time.monotonic()
    try:
        for attempt in range(PORT_ATTEMPTS):
            root = Path(tempfile.mkdtemp(prefix="idis-demo-"))
            cluster = Cluster(root)
            demo = Demo(cluster, Steps(console), console)
            keep = False
            try:
                if attempt == 0:
                    console.print(
                        "[bold]idis demo[/]: a federation of 10 nodes on this machine "
                        f"[dim](files under {root})[/]"
                    )
                _run_steps(demo, once)
            except PortTaken as taken:
                console.print(f"[yellow]{taken}; starting again on other ports[/]")
                continue
            except StepFailed:
                keep = True
                _report_failure(demo)
                return 1
            except KeyboardInterrupt:
                console.print("\n[bold]interrupted[/]: stopping every node")
                return 0 if demo.serving else 130
            finally:
                cluster.close()
                atexit.unregister(cluster.close)
                if not keep:
                    shutil.rmtree(root, ignore_errors=True)
            elapsed = time.monotonic() - started
            console.print(
                f"[bold green]all {demo.steps.passed} steps worked[/] in {elapsed:.1f}s; "
                "every node stopped"
            )
            return 0
        console.print("[red]could not find free ports[/]")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report_failure(demo: Demo) -> None:
    """Say what went wrong: the log of every node that exited, and the last error each node
    still running logged; then where the logs are kept."""
    console = demo.console
    for member in demo.members.values():
        if member.process is None:
            continue
        if not member.alive() and member.name != "Beijing":
            console.print(f"[red]{member.name} exited; its log ends:[/]")
            console.print(member.log_tail(), markup=False, highlight=False)
            continue
        error = _last_traceback(member)
        if error:
            console.print(f"[red]{member.name} logged an error:[/]")
            console.print(error, markup=False, highlight=False)
    console.print(
        f"[bold red]{demo.steps.failed} step failed[/] ({demo.steps.passed} passed); "
        f"logs kept under {demo.cluster.root}"
    )


def _last_traceback(member: Member, lines: int = 12) -> str:
    """The end of the last traceback in ``member``'s log, or ``""``."""
    try:
        text = member.log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    start = text.rfind("Traceback (most recent call last)")
    if start < 0:
        return ""
    return "\n".join(text[start:].splitlines()[-lines:])
