"""What ``idis demo`` prints: a line per step (✓ or ✗, what it did, how long it took), the
path each resolution took, read from the recursive node's ``x-idis-source`` header, the table
of the nodes, and how to query the federation left serving."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nodes.processes import PortTaken

if TYPE_CHECKING:  # demo_cluster imports this module
    from nodes.demo_cluster import Demo

_CODES = {
    1: "values",
    100: "not found",
    200: "no such values",
    301: "not homed",
    302: "service referral",
    303: "prefix referral",
}


class StepFailed(Exception):
    """A step of the demo did not work; the message says what was expected and what happened."""


class Steps:
    """Runs the steps of the demo and prints each as it ends: ✓ or ✗, what it did, how long."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.passed = 0
        self.failed = 0

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        """Yields a list the step appends remarks to; a raised exception fails the step."""
        notes: list[str] = []
        started = time.monotonic()
        try:
            with self.console.status(title):
                yield notes
        except PortTaken:
            raise
        except Exception as error:  # any failure fails the step; the demo then stops
            self.failed += 1
            self._line("[bold red]✗[/]", title, started, notes)
            self.console.print(f"    [red]{escape(str(error) or repr(error))}[/]")
            raise StepFailed(title) from error
        self.passed += 1
        self._line("[bold green]✓[/]", title, started, notes)

    def _line(self, mark: str, title: str, started: float, notes: list[str]) -> None:
        elapsed = time.monotonic() - started
        self.console.print(f"{mark} {escape(title)} [dim]({elapsed:.1f}s)[/]")
        for note in notes:
            self.console.print(f"    [dim]{escape(note)}[/]")


@dataclass(frozen=True)
class Hop:
    """One step of a walk, as the recursive node reports it in ``x-idis-source``."""

    node: str
    handle: str
    outcome: str


def parse_path(source: str, names: Mapping[str, str]) -> list[Hop]:
    """The hops of a recursive node's ``x-idis-source`` header, node URLs replaced by the
    names in ``names`` (URL → name).  Sources that are not walks (``memory``, ``redis``) and
    stale answers come back as one hop naming them."""
    text = unquote(source)
    if text.startswith("stale (") and text.endswith(")"):
        inner = parse_path(text[len("stale (") : -1], names)
        return [Hop("stale", "", "served past its TTL: every upstream unreachable"), *inner]
    hops = []
    for part in text.split(" -> "):
        head, _, rest = part.partition(" ")
        node = names.get(head.rstrip("/"), head)
        if rest == "unreachable":
            hops.append(Hop(node, "", "unreachable"))
        elif rest == "cached":
            hops.append(Hop("(recursive)", head, "site remembered"))
        elif rest == "delegation cached":
            hops.append(Hop("(recursive)", head, "delegation remembered"))
        elif rest:
            handle, _, code = rest.rpartition(":")
            meaning = _CODES.get(int(code), "") if code.isdigit() else ""
            if code == "1" and handle.upper().startswith("0.NA/"):
                meaning = "the prefix record"
            hops.append(Hop(node, handle, f"{code} {meaning}".strip()))
        else:
            hops.append(Hop(node, "", ""))
    return hops


def print_path(console: Console, handle: str, answer: str, hops: Sequence[Hop]) -> None:
    """One resolution as a small tree: the identifier and its answer, then a line per hop."""
    console.print(f"[bold]{escape(handle)}[/] → {escape(answer)}")
    node_width = max(len(hop.node) for hop in hops)
    handle_width = max(len(hop.handle) for hop in hops)
    for number, hop in enumerate(hops, start=1):
        branch = "└──" if number == len(hops) else "├──"
        console.print(
            f"  {branch} [cyan]{escape(hop.node.ljust(node_width))}[/]  "
            f"{escape(hop.handle.ljust(handle_width))}  [dim]{escape(hop.outcome)}[/]"
        )


def node_table(demo: Demo) -> Table:
    table = Table(title="the demo federation (each node a process of its own)")
    table.add_column("node", style="bold")
    table.add_column("role")
    table.add_column("URL", style="cyan")
    table.add_column("pid", justify="right")
    table.add_column("serves")
    for member in demo.members.values():
        pid = str(member.process.pid) if member.process else "-"
        if member.process is not None and not member.alive():
            pid = "stopped"
        table.add_row(member.name, member.role, member.url, pid, member.serves)
    return table


def how_to_query(demo: Demo) -> None:
    recursive = demo.member("recursive").url
    top = demo.member("Shanghai").url
    secondary = demo.member("secondary-88.100").url
    beijing = demo.member("Beijing").url
    demo.console.print(
        "\n[bold]The federation keeps serving.[/] Open its console in a browser: "
        f"[cyan]{beijing}/console[/] [dim](Beijing; a wall screen: {beijing}/console?wall=1;"
        " every top-level node serves its own)[/]\n[bold]Try:[/]\n"
        f"  curl -D - {recursive}/api/handles/88.100.1/PUMP-0001   "
        "# through the recursive node; see x-idis-source\n"
        f"  curl '{recursive}/api/handles/88.100.7/COIL-002?auth=true&pretty'   "
        "# a fresh walk\n"
        f"  curl {top}/api/handles/0.NA/88.100.1   # a top-level node's 303 referral\n"
        f"  curl {secondary}/api/handles/88.100.7/COIL-002   "
        "# the secondary's 302 referral to the enterprise node\n"
        f"  curl -u federation:{demo.federation_secret} {recursive}/api/stats   "
        "# walks, upstream requests, throttling\n"
        f"  curl {top}/api/national/stats   # national statistics per industry node\n"
        "Press Ctrl-C to stop every node."
    )
