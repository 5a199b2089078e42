"""Hostile clients held against a node while a benchmark measures it (``idis bench``'s
``hostile`` figure, issue 14).

``python -m loadtests.hostile --port P [--idle 1000] [--slow 1]`` keeps ``--idle`` connections
open that never send a byte, spread over the loopback addresses 127.0.0.2, .3, ... (at most
:data:`PER_SOURCE` each, under the node's default cap per address, so that they are held
rather than refused), and ``--slow`` clients that send a request head one byte a second.
Whatever the node closes (idle connections after its keep-alive time, slow heads with a 408)
is opened again at once, as an attacker would.  It prints ``ready`` once every idle connection
is open, then runs until SIGTERM and prints its counts as one JSON line.

:func:`attached` runs it as a process of its own (so that its sockets and CPU are not the load
generator's) for the length of a ``with`` block.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

HOST = "127.0.0.1"
PER_SOURCE = 200
SLOW_HEAD = b"GET /api/handles/88.100.1/SLOW HTTP/1.1\r\nHost: idis\r\nX-Slow: "
READY_TIMEOUT = 60.0


class Counts:
    def __init__(self) -> None:
        self.opened = 0
        self.closed_by_node = 0
        self.failed = 0
        self.answers: dict[str, int] = {}

    def answer(self, data: bytes) -> None:
        status = data[9:12].decode("ascii", "replace") if data.startswith(b"HTTP/") else "?"
        self.answers[status] = self.answers.get(status, 0) + 1


class _Held(asyncio.Protocol):
    """One hostile connection: idle, or (``drip``) sending a head a byte at a time."""

    def __init__(self, counts: Counts, lost: asyncio.Future[None], drip: bool) -> None:
        self.counts = counts
        self.lost = lost
        self.drip = drip
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counts.opened += 1
        if self.drip:
            transport.write(SLOW_HEAD)

    def data_received(self, data: bytes) -> None:
        self.counts.answer(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts.closed_by_node += 1
        if not self.lost.done():
            self.lost.set_result(None)


async def _hold(port: int, source: str, counts: Counts, drip: bool, stop: asyncio.Event) -> None:
    """Keep one hostile connection open from ``source``, reopening it whenever it is closed."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        lost: asyncio.Future[None] = loop.create_future()
        try:
            transport, _ = await loop.create_connection(
                functools.partial(_Held, counts, lost, drip), HOST, port, local_addr=(source, 0)
            )
        except OSError:
            counts.failed += 1
            await asyncio.sleep(0.1)
            continue
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not lost.done() and not stop.is_set():
                if drip:
                    transport.write(b"s")
                await asyncio.wait(
                    (lost, stopped),
                    timeout=1.0 if drip else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            stopped.cancel()
            if not lost.done():
                counts.closed_by_node -= 1  # closed here, not by the node
                transport.close()


async def run(port: int, idle: int, slow: int, stop: asyncio.Event) -> Counts:
    counts = Counts()
    sources = [f"127.0.0.{2 + i // PER_SOURCE}" for i in range(idle)]
    tasks = [asyncio.create_task(_hold(port, src, counts, False, stop)) for src in sources]
    tasks += [asyncio.create_task(_hold(port, HOST, counts, True, stop)) for _ in range(slow)]
    deadline = time.monotonic() + READY_TIMEOUT
    while counts.opened < idle + slow and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print("ready" if counts.opened >= idle + slow else "not ready", flush=True)
    await stop.wait()
    await asyncio.gather(*tasks)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=1)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.idle + args.slow + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    async def serve() -> Counts:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        return await run(args.port, args.idle, args.slow, stop)

    counts = asyncio.run(serve())
    print(json.dumps(vars(counts)), flush=True)
    return 0


@contextlib.contextmanager
def attached(
    port: int, *, idle: int, slow: int, cpus: Sequence[int] | None = None
) -> Iterator[dict[str, Any]]:
    """Hostile clients on ``port`` for the ``with`` block (on ``cpus`` if given: the load
    generator's, not the server's); the dict yielded gets their counts (``opened``,
    ``closed_by_node``, ``failed``, ``answers`` by status) when it ends."""
    command = [sys.executable, "-m", "loadtests.hostile", "--port", str(port)]
    command += ["--idle", str(idle), "--slow", str(slow)]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=pin)
    counts: dict[str, Any] = {}
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"hostile clients could not attach {idle} connections: {line!r}")
        yield counts
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        last = (out or "").strip().splitlines()[-1:]
        if last and last[0].startswith("{"):
            counts.update(json.loads(last[0]))


if __name__ == "__main__":
    sys.exit(main())
