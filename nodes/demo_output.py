"""What ``idis demo`` prints: a line per step (✓ or ✗, what it did, how long it took) and the
path each resolution took, read from the recursive node's ``x-idis-source`` header."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from rich.console import Console
from rich.markup import escape

from nodes.processes import PortTaken

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
