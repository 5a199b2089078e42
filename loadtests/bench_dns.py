"""``idis bench``'s DNS figures: the node's DNS front end beside unbound and beside REST.

- ``dns_cached``: NAPTR queries per second for the suite's sample identifiers, answered from
  the wire cache, beside unbound (one thread) serving the same names and the same records
  from ``local-data`` (both driven by dnsperf in the same run, in alternating rounds; the
  records unbound holds are the node's own answers, and a check before the runs compares them).
  Target >= 1.0 (issue 13).
- ``dns_floor``: a uvloop UDP server in Python that answers every query with its own bytes
  (QR set) and does nothing else, beside the same unbound: the ceiling of any front end
  answering one datagram per Python callback on this machine, so that the cached figure can
  be read as how close it comes to that ceiling (its detail says) and where the rest goes.
- ``dns_cached_cpu``: the CPU time each server spent per cached query in those runs (from
  /proc), unbound's over the node's: on a machine shared with other work, throughput is what
  the scheduler grants, CPU a query is the work done.
- ``dns_uncached``: NAPTR queries for identifiers never asked before (each name once, dnsperf
  ``-n 1``) beside uncached REST resolutions of other such identifiers on the same node.

The node is a second one on the suite's database, with ``IDIS_DNS`` set, on the server CPUs;
unbound runs there too; dnsperf runs on the generator CPU.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode

from loadtests import bench_http
from loadtests.loadgen import cpu_sample, cpu_usage
from loadtests.stats import median
from nodes.processes import ServeProcess, free_ports, stop_all
from resolver.codecs.dns_names import dns_name

ZONE = "idis.example"
HOST = "127.0.0.1"
DNS_TARGET = (">=", 1.0, "issue 13")
READY_TIMEOUT = 10.0


def names(ids: Sequence[int]) -> list[str]:
    return [dns_name(bench_http.handle_text(i), ZONE) for i in ids]


def query_file(path: Path, qnames: Sequence[str], rdtype: str = "NAPTR") -> Path:
    path.write_text("".join(f"{name} {rdtype}\n" for name in qnames), encoding="ascii")
    return path


def ask(port: int, qname: str, rdtype: str = "NAPTR") -> dns.message.Message:
    query = dns.message.make_query(qname, rdtype)
    return dns.query.udp(query, HOST, port=port, timeout=5.0)


def answer_text(message: dns.message.Message) -> list[str]:
    return sorted(f"{r.name} {r.ttl} IN {r.to_text().split(' IN ', 1)[1]}" for r in message.answer)


def local_data(port: int, qnames: Sequence[str]) -> list[str]:
    """unbound ``local-data`` lines holding the node's own NAPTR answers for ``qnames``."""
    lines = []
    for qname in qnames:
        message = ask(port, qname)
        if message.rcode() != dns.rcode.NOERROR or not message.answer:
            raise RuntimeError(f"the node answered {qname} with {message}")
        for rrset in message.answer:
            for rdata in rrset:
                lines.append(f"{rrset.name} {rrset.ttl} IN NAPTR {rdata.to_text()}")
    return lines


def unbound_config(home: Path, port: int, data: Sequence[str]) -> Path:
    local = "".join(f"  local-data: '{line}'\n" for line in data)
    config = home / "unbound.conf"
    config.write_text(
        f"""server:
  interface: {HOST}
  port: {port}
  do-daemonize: no
  use-syslog: no
  logfile: ""
  chroot: ""
  username: ""
  directory: "{home}"
  pidfile: ""
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  local-zone: "{ZONE}." static
{local}remote-control:
  control-enable: no
""",
        encoding="utf-8",
    )
    return config


def _on(cpus: Sequence[int] | None) -> Any:
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def start_unbound(home: Path, data: Sequence[str], cpus: Sequence[int] | None) -> tuple[Any, int]:
    """unbound on a free loopback port with ``data``; (its process, the port)."""
    binary = shutil.which("unbound") or "/usr/sbin/unbound"
    home.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    config = unbound_config(home, port, data)
    process = _started([binary, "-d", "-c", str(config)], port, cpus, home / "unbound.log")
    return process, port


def _started(argv: list[str], port: int, cpus: Sequence[int] | None, log_path: Path) -> Any:
    """``argv`` run on ``cpus`` (output to ``log_path``), once it answers DNS on ``port``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_on(cpus),
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            ask(port, ZONE, "SOA")
            return process
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_all([process])
                log_text = log_path.read_text(errors="replace")
                raise RuntimeError(f"{argv[0]} did not answer DNS:\n{log_text}") from None
            time.sleep(0.1)


_FIELDS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "rate": re.compile(r"Queries per second:\s+([\d.]+)"),
    "noerror": re.compile(r"NOERROR (\d+)"),
}


def dnsperf(
    port: int,
    queries: Path,
    *,
    duration: float,
    cpus: Sequence[int] | None,
    once: bool = False,
    clients: int = 4,
    outstanding: int = 100,
) -> dict[str, Any]:
    """One dnsperf run; its figures (``error_count``: queries lost or not answered NOERROR)."""
    binary = shutil.which("dnsperf")
    if binary is None:
        raise RuntimeError("dnsperf is not installed (scripts/test-deps.sh installs it)")
    argv = [binary, "-s", HOST, "-p", str(port), "-d", str(queries)]
    argv += ["-l", f"{max(duration, 0.5):g}", "-c", str(clients), "-q", str(outstanding)]
    if once:
        argv += ["-n", "1"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 60, preexec_fn=_on(cpus)
    ).stdout
    found: dict[str, Any] = {}
    for key, pattern in _FIELDS.items():
        match = pattern.search(out)
        found[key] = float(match.group(1)) if match else 0.0
    if not found["completed"]:
        raise RuntimeError(f"dnsperf measured nothing:\n{out}")
    found["error_count"] = int(found["lost"] + found["completed"] - found["noerror"])
    return found


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data[:2] + b"\x81\x80" + data[4:], addr)


async def _floor(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, port))
    await asyncio.Event().wait()


def start_floor(home: Path, cpus: Sequence[int] | None) -> tuple[Any, int]:
    """The floor server (see the module's docstring) on a free port: (process, port)."""
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "loadtests.bench_dns", "floor", str(port)]
    return _started(argv, port, cpus, home / "floor.log"), port


def measured(pid: int, port: int, queries: Path, **kwargs: Any) -> dict[str, Any]:
    """:func:`dnsperf` against the server ``pid``, with the CPU it used: ``cpu`` (cores, as
    :func:`loadtests.loadgen.cpu_usage` says) and ``cpu_us`` (its CPU microseconds a query)."""
    before = cpu_sample()
    found = dnsperf(port, queries, **kwargs)
    after = cpu_sample()
    cpu = cpu_usage(before, after, {"server": [pid]})
    found["cpu"] = cpu
    found["cpu_us"] = cpu["server"] * (after.wall - before.wall) / found["completed"] * 1e6
    return found


def dns_node(suite: Any) -> ServeProcess:
    """A node on the suite's database with DNS on a free port, started."""
    env = bench_http.node_settings(suite.dsn, suite.workdir / "data", free_ports(1)[0])
    env["IDIS_DNS"] = f"{HOST}:{free_ports(1)[0]}"
    env["IDIS_DNS_ZONE"] = ZONE
    node = ServeProcess("dns-node", env, suite.workdir / "dns-node", cpus=suite.server_cpus)
    return bench_http.start_listed(node, suite.servers)


def run(suite: Any) -> None:
    """Measure the DNS figures into ``suite`` (a :class:`loadtests.harness.Suite`)."""
    s, plan = suite.s, suite.plan
    node = dns_node(suite)
    port = int(node.env["IDIS_DNS"].rpartition(":")[2])
    home = suite.workdir / "dns"
    home.mkdir(parents=True, exist_ok=True)
    cached = names(plan.sample)
    data = local_data(port, cached)  # also fills the node's caches
    unbound, unbound_port = start_unbound(home / "unbound", data, suite.server_cpus)
    floor, floor_port = start_floor(home, suite.server_cpus)
    try:
        mismatched = [
            q for q in cached[:20] if answer_text(ask(port, q)) != answer_text(ask(unbound_port, q))
        ]
        if mismatched:
            raise RuntimeError(f"unbound and the node answer differently: {mismatched[:3]}")
        cached_file = query_file(home / "cached.txt", cached)
        rounds: list[dict[str, Any]] = []
        for n in range(s.rounds):
            out: dict[str, Any] = {}
            targets = (
                ("unbound", unbound.pid, unbound_port),
                ("cached", node.pid, port),
                ("floor", floor.pid, floor_port),
            )
            for key, pid, target in targets:
                if s.warmup:
                    dnsperf(target, cached_file, duration=s.warmup, cpus=suite.gen_cpus)
                out[key] = measured(
                    pid, target, cached_file, duration=s.duration, cpus=suite.gen_cpus
                )
            measure = plan.measure[n]
            half = len(measure) // 2
            fresh = query_file(home / f"uncached{n}.txt", names(measure[:half]))
            out["uncached"] = measured(
                node.pid,
                port,
                fresh,
                duration=s.duration,
                cpus=suite.gen_cpus,
                once=True,
                outstanding=32,
            )
            out["rest"] = suite.load.distinct(
                "REST uncached (DNS node)",
                node.url,
                measure[half:],
                range(0),
                duration=s.duration,
                warmup=0.0,
                groups={"server": [node.pid]},
            )
            bench_http.say(
                f"  dns round {n + 1}: "
                + ", ".join(f"{key} {out[key]['rate']:,.0f}/s" for key in out)
            )
            rounds.append(out)
    finally:
        stop_all([unbound, floor])
    suite.raw["dns_rounds"] = rounds
    report(suite, rounds)


UNBOUND = "unbound, 1 thread, local-data"
FIGURES = (
    # key, figure, measured, baseline, baseline label, target
    ("dns_cached", "DNS NAPTR, cached names (UDP, dnsperf)", "cached", "unbound", UNBOUND),
    (
        "dns_floor",
        "DNS floor: Python UDP echo, no work (ceiling of the above)",
        "floor",
        "unbound",
        UNBOUND,
    ),
    (
        "dns_uncached",
        "DNS NAPTR, uncached names (each once)",
        "uncached",
        "rest",
        "REST, uncached, same node",
    ),
)


def report(suite: Any, rounds: list[dict[str, Any]]) -> None:
    """Add the figures of ``rounds`` to ``suite``: medians of the rounds and of their ratios."""

    def series(key: str) -> list[float]:
        return [float(r[key]["rate"]) for r in rounds]

    def ratios(key: str, base: str) -> list[float]:
        return [a / b for a, b in zip(series(key), series(base), strict=True) if b]

    for key, figure, measured_key, base, label in FIGURES:
        rs = ratios(measured_key, base)
        suite.add(
            key,
            figure,
            median(series(measured_key)),
            "q/s",
            baseline=median(series(base)),
            baseline_label=label,
            ratio=median(rs),
            target=DNS_TARGET if key == "dns_cached" else None,
            generator="dnsperf" if base != "rest" else f"dnsperf / {suite.load.kind}",
            errors=sum(int(r[k]["error_count"]) for r in rounds for k in (measured_key, base)),
            rounds=rs,
            detail={"of_the_python_floor": median(ratios(measured_key, "floor"))},
            cpu=rounds[len(rounds) // 2][measured_key].get("cpu"),
        )
    # Throughput on a shared machine is what the scheduler gives; CPU a query is the work.
    cpu = [r["unbound"]["cpu_us"] / r["cached"]["cpu_us"] for r in rounds if r["cached"]["cpu_us"]]
    suite.add(
        "dns_cached_cpu",
        "DNS NAPTR, cached: server CPU a query (us)",
        median([r["cached"]["cpu_us"] for r in rounds]),
        "us",
        baseline=median([r["unbound"]["cpu_us"] for r in rounds]),
        baseline_label="unbound's CPU a query (ratio: unbound / idis)",
        ratio=median(cpu),
        generator="dnsperf",
        rounds=cpu,
    )


if __name__ == "__main__":  # python -m loadtests.bench_dns floor PORT: the floor server
    import uvloop

    if sys.argv[1:2] != ["floor"] or len(sys.argv) != 3:
        sys.exit("usage: python -m loadtests.bench_dns floor PORT")
    uvloop.run(_floor(int(sys.argv[2])))
