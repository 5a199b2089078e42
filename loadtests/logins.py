"""A stream of failed logins, for ``idis bench``'s ``logins`` figure (issue 14).

``python -m loadtests.logins URL --seconds S [--rate R] [--concurrency C] [--prefix P]`` sends
R requests a second (default 200: five times the 38/s of the attack in issue 14), on C
keep-alive connections, ``GET /api/handles/P/ADMIN`` with HTTP Basic credentials that are
wrong: the identity cycles over ``300:P/ADMIN`` and ``300:P/USERn`` (so that not only the
per-identity limit is at work) and every secret is new.  Unthrottled, each would cost the node
an scrypt hash (tens of milliseconds of CPU); throttled, the node answers 429 without hashing.
At the end it prints one JSON line: requests per second and the count of each status.

The attacker connects from an address of its own (``--source``, default :data:`SOURCE`), as a
real one would: the node throttles failed logins per client address, and the suite's own
clients, on 127.0.0.1, must not inherit the attacker's refusals (the steps after this one
register identifiers, which needs logins).

Runs as a process of its own beside the load generator, so that it competes for the machine
like a real attacker rather than for the generator's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from loadtests.client import Connection, parse_target

IDENTITIES = 50
SOURCE = "127.0.0.2"
"""The attacker's address (loopback, but not the 127.0.0.1 of the suite's clients)."""


def request_bytes(host: str, prefix: str, n: int) -> bytes:
    name = "ADMIN" if n % IDENTITIES == 0 else f"USER{n % IDENTITIES}"
    user = f"300%3A{prefix}/{name}"
    token = base64.b64encode(f"{user}:guess-{secrets.token_hex(6)}".encode()).decode()
    return (
        f"GET /api/handles/{prefix}/ADMIN HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Basic {token}\r\n\r\n"
    ).encode("latin-1")


async def attack(
    url: str, seconds: float, rate: float, concurrency: int, prefix: str, source: str = SOURCE
) -> dict[str, Any]:
    host, port = parse_target(url)
    statuses: Counter[int] = Counter()
    start = time.monotonic()
    deadline = start + seconds
    counter = iter(range(10**12))
    interval = concurrency / rate  # each connection's share of the rate

    async def one(offset: float) -> None:
        connection = await Connection.open(host, port, source=source)
        due = start + offset
        try:
            while (now := time.monotonic()) < deadline:
                if due > now:
                    await asyncio.sleep(due - now)
                due += interval
                status, _ = await connection.request(request_bytes(host, prefix, next(counter)))
                statuses[status] += 1
        finally:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(one(n * interval / concurrency) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    return {
        "requests": total,
        "rate": total / elapsed if elapsed else 0.0,
        "by_status": {str(k): v for k, v in sorted(statuses.items())},
    }


class FailedLogins:
    """The attacker as a child process for ``seconds``: start it, do the measuring, then
    :meth:`result` waits for its report."""

    def __init__(
        self, url: str, seconds: float, *, rate: float = 200.0, prefix: str = "88.100.1"
    ) -> None:
        command = [sys.executable, "-m", "loadtests.logins", url, "--seconds", str(seconds)]
        self.process = subprocess.Popen(
            [*command, "--rate", str(rate), "--prefix", prefix],
            stdout=subprocess.PIPE,
            text=True,
        )

    def result(self, timeout: float) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=timeout)
        if self.process.returncode:
            raise RuntimeError(f"the failed-login stream exited {self.process.returncode}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prefix", default="88.100.1")
    parser.add_argument("--source", default=SOURCE, help="local address to connect from")
    args = parser.parse_args()
    report = asyncio.run(
        attack(args.url, args.seconds, args.rate, args.concurrency, args.prefix, args.source)
    )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
