"""``idis bench`` figures of the native Handle protocol (the suite's ``native`` step).

In one run, on the suite's seeded database, with a node of its own (one worker, native
listeners on) and the generator of :mod:`loadtests.native_load` on the generator's CPU:

- cached native resolution over UDP and over TCP (persistent, pipelined connections), each
  beside a raw uvloop echo answering the same bytes (the ceiling of a Python server here;
  target over UDP >= 0.5x), and over TCP beside the cached REST resolution of the same
  identifier (wrk or the Python generator, as the suite's HTTP figures; target >= 0.8x);
- uncached native resolution (every request another identifier) beside uncached REST.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from loadtests import bench_http
from loadtests import handle_client as hc
from nodes.processes import free_ports

HOST = "127.0.0.1"
UDP_TARGET = (">=", 0.5, "issue 11")
TCP_TARGET = (">=", 0.8, "issue 11")


def _spawn(args: Sequence[str], cpus: Sequence[int] | None, **kwargs: Any) -> subprocess.Popen[str]:
    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    return subprocess.Popen(
        [sys.executable, "-m", "loadtests.native_load", *args],
        preexec_fn=pin,
        text=True,
        **kwargs,
    )


def drive(
    proto: str,
    port: int,
    handle: str,
    *,
    duration: float,
    cpus: Sequence[int] | None,
    distinct: range | None = None,
    warmup: float = 0.5,
) -> dict[str, Any]:
    args = ["drive", "--proto", proto, "--target", f"{HOST}:{port}", "--handle", handle]
    args += ["--duration", str(duration), "--warmup", str(warmup)]
    if distinct is not None:
        args += [
            "--distinct",
            f"{distinct.start}:{len(distinct)}",
            "--suffix-format",
            bench_http.SUFFIX_FORMAT,
        ]
    child = _spawn(args, cpus, stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=duration + warmup + 60)
    if child.returncode != 0:
        raise RuntimeError(f"native load generator exited {child.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


class Echo:
    """The raw uvloop echo (UDP and TCP on one port) answering ``reply``."""

    def __init__(self, reply: bytes, cpus: Sequence[int] | None) -> None:
        self.port = free_ports(1)[0]
        self.process = _spawn(
            ["echo", "--port", str(self.port), "--reply-hex", reply.hex()],
            cpus,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "ready" not in line:
            raise RuntimeError("the native echo server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run(suite: Any) -> None:
    """The ``native`` step of :class:`loadtests.harness.Suite`."""
    s = suite.s
    plan = suite.plan
    node = bench_http.bench_node(
        "native-node",
        suite.dsn,
        suite.workdir / "data",
        suite.workdir / "native-node",
        cpus=suite.server_cpus,
    )
    native_port = free_ports(1)[0]
    node.env["IDIS_HANDLE"] = f"{HOST}:{native_port}"
    bench_http.start_listed(node, suite.servers)
    handle = bench_http.handle_text(plan.cached_id)
    # The answer the node gives, checked against REST, is what the echo sends back.
    reply = hc.tcp(HOST, native_port, hc.resolution(handle, request_id=1))
    status, rest_body, _ = bench_http.fetch(node.port, "/api/handles/" + handle)
    if reply.code != 1 or status != 200:
        raise RuntimeError(f"{handle}: native code {reply.code}, REST status {status}")
    rest_values = json.loads(rest_body)["values"]
    native_values = reply.values()[1]
    if [v["index"] for v in rest_values] != [v.index for v, _ in native_values]:
        raise RuntimeError(f"{handle}: native and REST answers differ")
    echo = Echo(reply.raw, suite.server_cpus)
    group: dict[str, Sequence[int]] = {"server": [node.pid]}
    duration, gen = s.duration, suite.gen_cpus
    ids = list(suite.probe_ids)
    half = len(ids) // 2
    try:
        out: dict[str, dict[str, Any]] = {}
        out["udp"] = drive("udp", native_port, handle, duration=duration, cpus=gen)
        out["udp_echo"] = drive("udp", echo.port, handle, duration=duration, cpus=gen)
        out["tcp"] = drive("tcp", native_port, handle, duration=duration, cpus=gen)
        out["tcp_echo"] = drive("tcp", echo.port, handle, duration=duration, cpus=gen)
        out["rest"] = suite.load.fixed(
            "cached REST",
            node.url,
            "/api/handles/" + handle,
            rest_body,
            duration=duration,
            warmup=s.warmup,
            groups=group,
        )
        native_ids = range(ids[0], ids[0] + half) if ids else range(0)
        rest_ids = range(ids[0] + half, ids[0] + 2 * half) if ids else range(0)
        out["uncached"] = drive(
            "tcp", native_port, handle, duration=duration, cpus=gen, distinct=native_ids, warmup=0
        )
        out["uncached_rest"] = suite.load.distinct(
            "uncached REST", node.url, rest_ids, range(0), duration=duration, warmup=0, groups=group
        )
    finally:
        echo.stop()
        node.stop()
        suite.servers.remove(node)
    suite.raw["native"] = out
    for key, value in out.items():
        rate = value.get("rate", 0)
        bench_http.say(f"    native {key}: {rate:,.0f}/s")

    def errors(*keys: str) -> int:
        # wrk's results count errors in error_count (their "errors" is a breakdown).
        return sum(int(out[k].get("error_count", out[k].get("errors", 0))) for k in keys)

    rate = {k: float(v.get("rate", 0.0)) for k, v in out.items()}
    tcp_detail = {**out["tcp"], "echo_rate": rate["tcp_echo"]}
    figures = [
        ("native_udp", "over UDP, cached identifier", "udp", "udp_echo",
         "raw uvloop UDP echo, same bytes", UDP_TARGET, out["udp"]),
        ("native_tcp", "over TCP, cached identifier", "tcp", "rest",
         "cached REST resolution", TCP_TARGET, tcp_detail),
        ("native_uncached", "over TCP, uncached identifiers", "uncached", "uncached_rest",
         "uncached REST resolution", None, out["uncached"]),
    ]  # fmt: skip
    for key, name, measured, base, base_label, target, detail in figures:
        suite.add(
            key,
            f"native resolution {name}",
            rate[measured],
            "req/s",
            baseline=rate[base],
            baseline_label=base_label,
            target=target,
            generator="python",
            errors=errors(measured, base),
            detail=detail,
        )
