"""Steps of HTTP resolution on the suite's node: the generators' ceilings and the HTTP figures
(bare route, cached, uncached, raw ASGI, GS1, raw asyncpg), and cached resolution under
attack (hostile, logins), with quotas and with observability on."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Sequence
from http.client import HTTPConnection
from typing import Any

from loadtests import bench_http, drive
from loadtests.generators import own_cpu_apart, pinned
from loadtests.harness import PREFIX, SUFFIX_FORMAT, Suite, Target, say
from loadtests.loadgen import (
    CONSTANT_BODY,
    Distinct,
    ReferenceServer,
    cpu_sample,
    cpu_usage,
    run_pg,
    run_wrk,
)
from loadtests.stats import median
from nodes.processes import ServeProcess

HOST = "127.0.0.1"
CACHED_TARGET: Target = (">=", 1.0, "issue 2")
CEILING_TARGET: Target = (">=", 0.9, "issue 13")
GS1_TARGET: Target = (">=", 0.8, "issue 13")
GS1_GTIN = "09506000134352"
GS1_LINK = "https://brand.example/product"
UNCACHED_TARGET: Target = (">=", 0.5, "issue 2")
LOGINS_TARGET: Target = (">=", 0.8, "issue 14")
HOSTILE_TARGET: Target = (">=", 0.8, "issue 14")
QUOTAS_TARGET: Target = (">=", 0.95, "issue 12")
OBSERVE_TARGET: Target = (">=", 0.95, "issue 15")


def ceilings(suite: Suite) -> None:
    """Both generators against a raw uvloop server writing constant bytes."""
    s = suite.s
    const = suite.start_constant()
    group: dict[str, Sequence[int]] = {"server": [const.pid]}
    api = "/api/handles/" + PREFIX + "/"
    wrk_rate = None
    if suite.wrk:
        result = run_wrk(
            "generator ceiling (wrk)",
            const.url,
            CONSTANT_BODY,
            concurrency=s.concurrency,
            duration=max(1.0, s.duration),
            distinct=Distinct(api, SUFFIX_FORMAT, 0, 10**8),
            cpus=suite.gen_cpus,
            cpu_groups=group,
        ).as_dict()
        suite.raw["ceiling_wrk"] = result
        wrk_rate = result["rate"]
        suite.add(
            "ceiling_wrk",
            "generator ceiling: wrk vs constant server",
            wrk_rate,
            "req/s",
            generator="wrk",
            errors=result["error_count"],
            detail={
                "generator_cores": result["cpu"].get("generator"),
                "per_generator_core": round(wrk_rate / result["cpu"]["generator"])
                if result["cpu"].get("generator")
                else None,
            },
            cpu=result["cpu"],
        )
    before = cpu_sample()
    with pinned(suite.gen_cpus):
        report = drive.run(
            lambda stop: drive.ceiling(
                const.port,
                concurrency=s.concurrency,
                duration=max(1.0, s.duration),
                warmup=0.3,
                stop=stop,
            )
        )
    if report["stopped_by"] == "interrupt":
        raise KeyboardInterrupt
    report["cpu"] = own_cpu_apart(
        cpu_usage(before, cpu_sample(), group), report["generator"]["cpu_share"]
    )
    suite.raw["ceiling_python"] = report
    suite.add(
        "ceiling_python",
        "generator ceiling: Python generator vs constant server",
        report["per_s"],
        "req/s",
        baseline=wrk_rate,
        baseline_label="wrk ceiling" if wrk_rate else "",
        generator="python",
        detail={
            "generator_cpu_share": report["generator"]["cpu_share"],
            "per_generator_core": round(report["per_s"] / report["generator"]["cpu_share"])
            if report["generator"]["cpu_share"]
            else None,
        },
        cpu=report["cpu"],
    )
    const.stop()
    suite.servers.remove(const)


def http(suite: Suite) -> None:
    """Bare route, cached, uncached and raw asyncpg, in rounds (bench_http's figures)."""
    s, plan = suite.s, suite.plan
    ceilings(suite)
    node = suite.node or suite.start_node()
    group: dict[str, Sequence[int]] = {"server": [node.pid]}
    path = "/api/handles/" + bench_http.handle_text(plan.cached_id)
    rounds: list[dict[str, Any]] = []
    # The HTTP ceiling: uvicorn run as the node runs it, with a raw ASGI app.
    asgi = bench_http.start_listed(
        ReferenceServer("asgi", suite.workdir / "asgi", suite.server_cpus), suite.servers
    )
    # And the same app sending the node's cached answer, byte for byte: what the response
    # itself costs, apart from the work of producing it.
    answer = bench_http.fetch(node.port, path)[1]
    same = bench_http.start_listed(
        ReferenceServer("asgi", suite.workdir / "asgi-same", suite.server_cpus, answer=answer),
        suite.servers,
    )
    gs1_path = seed_gs1(suite, node)

    def fixed(label: str, base: str, path: str, expected: bytes, on: Any) -> dict[str, Any]:
        groups: dict[str, Sequence[int]] = {"server": [on.pid]}
        return suite.load.fixed(
            label, base, path, expected, duration=s.duration, warmup=s.warmup, groups=groups
        )

    healthz = bench_http.fetch(node.port, "/healthz")[1]
    for n in range(s.rounds):
        say(f"  round {n + 1}/{s.rounds} ({suite.load.kind})")
        out: dict[str, Any] = {}
        # The node's /healthz names the node and its role: expect its own bytes.
        out["bare"] = fixed("bare /healthz", node.url, "/healthz", healthz, node)
        status, body, _ = bench_http.fetch(node.port, path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
        out["cached"] = fixed("cached", node.url, path, body, node)
        out["asgi"] = fixed("raw ASGI constant", asgi.url, "/healthz", CONSTANT_BODY, asgi)
        out["asgi_same"] = fixed("raw ASGI, the cached answer", same.url, "/", answer, same)
        if suite.wrk:
            out["gs1"] = gs1_run(suite, node.url + gs1_path, group)
        if suite.load.kind == "python":
            # The Python generator checked status only: check the body once more here.
            again = bench_http.fetch(node.port, path)
            if again[1] != body:
                out["cached"]["error_count"] += 1
        measure, warm = plan.measure[n], plan.warm[n]
        out["uncached"] = suite.load.distinct(
            "uncached",
            node.url,
            measure,
            warm,
            duration=s.duration,
            warmup=s.warmup,
            groups=group,
        )
        out["uncached"]["ids_available"] = len(measure)
        step = max(1, out["uncached"]["ok"] // 20)
        problems = bench_http.check_samples(
            node.port, list(measure[: out["uncached"]["ok"] : step]), suite.now
        )
        out["uncached"]["error_count"] += len(problems)
        out["asyncpg"] = run_pg(
            suite.dsn,
            prefix=PREFIX,
            suffix_format=SUFFIX_FORMAT,
            slices=[(0, plan.rows)],
            start=measure.start,
            warm=(warm.start, len(warm)),
            concurrency=s.concurrency,
            duration=s.duration,
            warmup=max(0.2, s.warmup),
            cpus=suite.server_cpus,
        )
        out["asyncpg"]["error_count"] = out["asyncpg"]["errors"] + out["asyncpg"]["missing"]
        for key in ("bare", "cached", "asgi", "asgi_same", "gs1", "uncached", "asyncpg"):
            if key in out:
                say(f"    {key}: {out[key]['rate']:,.0f}/s, errors {out[key]['error_count']}")
        rounds.append(out)
    suite.raw["http_rounds"] = rounds

    def series(key: str) -> list[float]:
        return [float(r[key]["rate"]) for r in rounds]

    def ratios(key: str, base: str) -> list[float]:
        return [a / b for a, b in zip(series(key), series(base), strict=True) if b]

    def per_core_ratio(key: str, base: str) -> float | None:
        def per_core(fig: dict[str, Any]) -> float | None:
            used = fig.get("cpu", {}).get("server")
            return fig["rate"] / used if used else None

        pairs = [(per_core(r[key]), per_core(r[base])) for r in rounds]
        found = [a / b for a, b in pairs if a and b]
        return round(median(found), 3) if found else None

    def errors(*keys: str) -> int:
        return sum(int(r[k]["error_count"]) for r in rounds for k in keys)

    def detail(key: str) -> dict[str, Any]:
        mid = rounds[len(rounds) // 2][key]
        return {
            "p50_ms": mid.get("p50_ms"),
            "p99_ms": mid.get("p99_ms"),
            "cpu": mid.get("cpu"),
            "exhausted": any(r[key].get("exhausted") for r in rounds),
        }

    gen = suite.load.kind

    def info(key: str, name: str) -> None:
        suite.add(
            key,
            name,
            median(series(key)),
            "req/s",
            generator=gen,
            errors=errors(key),
            detail=detail(key),
            cpu=detail(key)["cpu"],
        )

    info("bare", "bare FastAPI route GET /healthz (the HTTP baseline)")
    for key, name, target in (
        ("cached", "HTTP resolution, cached identifier", CACHED_TARGET),
        ("uncached", "HTTP resolution, uncached identifiers", UNCACHED_TARGET),
    ):
        rs = ratios(key, "bare")
        fig = suite.add(
            key,
            name,
            median(series(key)),
            "req/s",
            baseline=median(series("bare")),
            baseline_label="bare route",
            ratio=median(rs),
            target=target,
            generator=gen,
            errors=errors(key, "bare"),
            rounds=rs,
            detail=detail(key),
            cpu=detail(key)["cpu"],
        )
        if fig.detail["exhausted"]:
            fig.passed = False
            fig.error = "identifiers used up before the run's end: raise rows"
    info("asgi", "raw ASGI app, constant bytes, uvicorn as the node runs it (the HTTP ceiling)")
    comparisons: list[tuple[str, str, str, Target | None]] = [
        ("cached_asgi", "cached", "asgi", CEILING_TARGET),
        ("asgi_same", "asgi_same", "asgi", None),
        ("cached_same", "cached", "asgi_same", None),
    ]
    if suite.wrk:
        comparisons.append(("gs1", "gs1", "cached", GS1_TARGET))
    else:
        suite.notes.append("gs1: the redirect figure needs wrk (the Python generator counts 200s)")
    for key, figure, base, aim in comparisons:
        rs = ratios(figure, base)
        suite.add(
            key,
            {
                "cached_asgi": "HTTP resolution, cached, vs the raw ASGI app",
                "asgi_same": "raw ASGI app sending the cached answer's bytes and headers",
                "cached_same": "HTTP resolution, cached, vs the raw ASGI app sending it",
                "gs1": "GS1 Digital Link 307 redirect (cached) vs cached HTTP resolution",
            }[key],
            median(series(figure)),
            "req/s",
            baseline=median(series(base)),
            baseline_label={
                "asgi": "raw ASGI app",
                "asgi_same": "raw ASGI, same answer",
                "cached": "cached resolution",
            }[base],
            ratio=median(rs),
            target=aim,
            generator=gen,
            errors=errors(figure, base),
            rounds=rs,
            # Steadier than req/s on a shared machine: requests per CPU-second of each
            # server process, compared the same way.
            detail=detail(figure) | {"per_server_core": per_core_ratio(figure, base)},
            cpu=detail(figure)["cpu"],
        )
    for server in (asgi, same):
        server.stop()
        suite.servers.remove(server)
    rs = ratios("uncached", "asyncpg")
    suite.add(
        "uncached_pg",
        "HTTP resolution, uncached, vs raw asyncpg lookups",
        median(series("uncached")),
        "req/s",
        baseline=median(series("asyncpg")),
        baseline_label="raw asyncpg PK lookups",
        ratio=median(rs),
        generator=gen,
        errors=errors("uncached", "asyncpg"),
        rounds=rs,
        detail={"asyncpg": detail("asyncpg")},
        cpu=detail("uncached")["cpu"],
    )


def hostile(suite: Suite) -> None:
    """Cached resolution with idle connections and a slow-header client attached."""
    from loadtests import bench_attacked as attacked

    title = (
        f"HTTP resolution, cached, {attacked.HOSTILE_IDLE:,} idle connections and "
        f"{attacked.HOSTILE_SLOW} slow-header client attached"
    )
    attacked.run(suite, "hostile", title, HOSTILE_TARGET, attacked.idle_and_slow(suite))


def logins(suite: Suite) -> None:
    """Cached resolution while failed logins stream at the node."""
    from loadtests import bench_attacked as attacked

    title = "HTTP resolution, cached, during 200 failed logins/s"
    attacked.run(suite, "logins", title, LOGINS_TARGET, attacked.failed_logins(suite))


def quotas(suite: Suite) -> None:
    """Cached resolution on a node counting daily resolution quotas, beside the same
    without quotas (the suite's node, on the same database)."""
    from loadtests import bench_attacked as attacked

    title = "HTTP resolution, cached, daily resolution quotas on"
    attacked.run(
        suite,
        "quotas",
        title,
        QUOTAS_TARGET,
        lambda node: contextlib.nullcontext({}),
        subject=attacked.quota_node(suite),
        baseline_label="the same without quotas",
    )


def observe(suite: Suite) -> None:
    """Cached resolution with metrics, usage counting and JSON logs on, beside a node with
    them off; and what they cost inside the application, without HTTP (information: the
    difference sought is below the noise of a shared machine's load runs)."""
    from loadtests import bench_observe, bench_observe_app

    bench_observe.run(suite, OBSERVE_TARGET)
    app = bench_observe_app.measure(suite.workdir / "observe-app", suite.s.mode == "quick")
    suite.raw["observe_app"] = app
    expected = app["blocks"] * app["calls_per_block"]
    suite.add(
        "observe_app",
        "cached resolution inside the app, observability on (CPU ns per call)",
        app["app_ns_on"],
        "ns",
        baseline=app["app_ns_off"],
        baseline_label="the same app with metrics and usage counting off",
        errors=0 if app["counted"] == expected else expected - app["counted"],
        detail=app,
    )


def seed_gs1(suite: Suite, node: ServeProcess) -> str:
    """Give ``GS1_GTIN`` a default link through the REST API; its Digital Link path, checked
    to redirect there."""
    path = f"/01/{GS1_GTIN}"
    values = [{"index": 1, "type": "GS1.defaultLink", "data": GS1_LINK}]
    identity = f"300%3A{PREFIX}/ADMIN:{suite.secret}"
    conn = HTTPConnection(HOST, node.port, timeout=10)
    try:
        conn.request(
            "PUT",
            f"/api/handles/{PREFIX}{path}",
            json.dumps(values),
            {
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(identity.encode()).decode(),
            },
        )
        written = conn.getresponse()
        written.read()
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
    finally:
        conn.close()
    if written.status not in (200, 201) or answer.status != 307:
        raise RuntimeError(f"GS1 record: PUT {written.status}, GET {answer.status}")
    if answer.getheader("location") != GS1_LINK:
        raise RuntimeError(f"GS1 redirect to {answer.getheader('location')}")
    return path


def gs1_run(suite: Suite, url: str, groups: dict[str, Sequence[int]]) -> dict[str, Any]:
    """wrk on one Digital Link: every answer a 307 with an empty body."""
    s = suite.s
    common: dict[str, Any] = {
        "concurrency": s.concurrency,
        "cpus": suite.gen_cpus,
        "status": 307,
    }
    if s.warmup > 0:
        run_wrk("gs1 warm-up", url, b"", duration=s.warmup, **common)
    result = run_wrk("gs1", url, b"", duration=s.duration, cpu_groups=groups, **common)
    out = result.as_dict()
    out["generator"] = "wrk"
    return out
