"""National statistics through real processes on PostgreSQL: two secondary nodes count what
they register and resolve, report it upward over HTTP as the holders of their prefixes, and the
top level's ``GET /api/national/stats`` shows each node's exact figures and the totals.

One federation for the module: a top-level node homing 88 (which allocates 88.100 and 88.101),
the secondary node 88.100 (also hosting the enterprise prefix 88.100.1) and the secondary node
88.101, each on a database of its own, reporting every half second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodeproc import RUNNING, STARTUP_TIMEOUT, NodeProcess, basic_auth, start_node
from reporting import (
    DEADLINE,
    HTTP_TIMEOUT,
    all_counts,
    counts,
    industry_nodes,
    join,
    national_stats,
    register,
    resolve,
    secondary_env,
    secret,
    secret_files,
    wait_stats,
)

from nodes.processes import CliFailed, run_cli


@dataclass
class Fed:
    top: NodeProcess
    a: NodeProcess
    """The secondary node 88.100 (and the enterprise prefix 88.100.1 it hosts)."""
    b: NodeProcess
    """The secondary node 88.101."""
    secrets: dict[str, str]
    secret_files: dict[str, Path]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, pg_factory: Callable[[], str]) -> Iterator[Fed]:
    workdir = tmp_path_factory.mktemp("national-stats")
    files = secret_files(workdir, ("88", "88.100", "88.101", "88.100.1"))
    secrets = {prefix: secret(files, prefix) for prefix in files}
    started: list[NodeProcess] = []
    try:
        top = start_node(
            workdir / "top",
            database_url=pg_factory(),
            prefix="88",
            secret=secrets["88"],
            extra_env={"IDIS_ROLE": "top-level"},
        )
        started.append(top)
        for prefix in ("88.100", "88.101"):
            run_cli(top.env, "prefix", "allocate", prefix, "--secret-file", str(files[prefix]))

        def secondary(name: str, prefix: str) -> NodeProcess:
            node = start_node(
                workdir / name,
                database_url=pg_factory(),
                prefix=prefix,
                secret=secrets[prefix],
                init=False,
                extra_env=secondary_env([top.base_url], files[prefix]),
            )
            started.append(node)
            join(node, prefix, files[prefix])
            return node

        a = secondary("secondary-100", "88.100")
        run_cli(a.env, "prefix", "init", "88.100.1", "--secret-file", str(files["88.100.1"]))
        b = secondary("secondary-101", "88.101")
        yield Fed(top, a, b, secrets, files)
    finally:
        for node in reversed(started):
            node.stop()


def _stats(fed: Fed) -> dict[str, Any]:
    return national_stats(fed.top.base_url, 7)


def _wait_stats(fed: Fed, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return wait_stats(fed.top.base_url, check)


EXPECTED = {"88.100": (6, 5, 7), "88.101": (5, 4, 2)}
"""Per industry node: identifiers (the administrators that homing created, plus those
registered, less those deleted), registered today, resolved today."""


def test_upward_statistics_arrive_from_two_secondary_nodes(fed: Fed) -> None:
    a100 = register(fed.a, "88.100", fed.secrets["88.100"], 3)
    a1001 = register(fed.a, "88.100.1", fed.secrets["88.100.1"], 2)
    with fed.a.client() as client:
        auth = basic_auth("300:88.100/ADMIN", fed.secrets["88.100"])
        assert client.delete(f"/api/handles/{a100[2]}", auth=auth).status_code == 200
    resolve(fed.a, a100[0], 4)
    resolve(fed.a, a1001[0], 3)
    b101 = register(fed.b, "88.101", fed.secrets["88.101"], 4)
    resolve(fed.b, b101[1], 2)
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:  # not homed there: not counted
        assert client.get(f"{fed.a.base_url}/api/handles/99.1/NOPE").status_code != 200

    stats = _wait_stats(
        fed,
        lambda s: all_counts(s) == EXPECTED,
    )
    nodes = industry_nodes(stats)
    assert nodes["88.100"]["prefixes"] == ["88.100", "88.100.1"]
    assert nodes["88.100"]["node"] == fed.a.env["IDIS_NAME"]
    assert nodes["88.101"]["node"] == fed.b.env["IDIS_NAME"]
    totals = stats["totals"]
    assert (totals["identifiers"], totals["registeredToday"], totals["resolvedToday"]) == (
        11,
        9,
        9,
    )
    assert stats["target"] == {"identifiers": 2_000_000_000, "resolutionsPerDay": 150_000_000}
    today = stats["days"][-1]
    assert today["day"] == totals["asOf"][:10]
    assert (today["identifiers"], today["registered"], today["resolved"]) == (11, 9, 9)
    assert len(stats["days"]) == 7
    shown = run_cli(fed.a.env, "stats", "show", "--url", fed.top.base_url)
    assert "88.100" in shown and "88.101" in shown


def test_a_repeated_report_does_not_double_count(fed: Fed) -> None:
    before = _wait_stats(fed, lambda s: all_counts(s) == EXPECTED)
    for _ in range(2):
        assert "reported to" in run_cli(fed.a.env, "stats", "report")
    after = _stats(fed)
    assert all_counts(after) == EXPECTED
    assert after["totals"]["identifiers"] == before["totals"]["identifiers"] == 11


def _report(prefix: str, resolved: int) -> dict[str, Any]:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    figures = {"day": day, "registered": 1, "resolved": resolved, "identifiers": 1}
    return {"node": "intruder", "prefixes": [{"prefix": prefix, "days": [figures]}]}


def test_a_report_for_a_prefix_the_reporter_does_not_administer_is_refused(fed: Fed) -> None:
    url = f"{fed.top.base_url}/api/national/reports"
    holder_100 = basic_auth("300:0.NA/88.100", fed.secrets["88.100"])
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        other = client.post(url, json=_report("88.101", 10**9), auth=holder_100)
        assert other.status_code == 403, other.text
        assert other.json()["responseCode"] == 401
        # Mixed with one of its own: the whole report is refused, nothing stored.
        mixed = _report("88.100", 10**9)
        mixed["prefixes"] += _report("88.101", 10**9)["prefixes"]
        assert client.post(url, json=mixed, auth=holder_100).status_code == 403
        anonymous = client.post(url, json=_report("88.100", 10**9))
        assert anonymous.status_code == 401
        wrong = client.post(
            url, json=_report("88.100", 10**9), auth=basic_auth("300:0.NA/88.100", "wrong")
        )
        assert wrong.status_code in (401, 403)
        malformed = client.post(url, json={"node": "x", "prefixes": 5}, auth=holder_100)
        assert malformed.status_code == 400 and malformed.json()["responseCode"] == 202
    stats = _stats(fed)
    assert all_counts(stats) == EXPECTED
    assert all(node["node"] != "intruder" for node in stats["nodes"])


def test_a_top_level_down_makes_the_reporter_retry_later(fed: Fed) -> None:
    fed.top.stop()
    try:
        handle = register(fed.b, "88.101", fed.secrets["88.101"], 5)[4]
        resolve(fed.b, handle, 3)  # answers as ever
        with pytest.raises(CliFailed):
            run_cli(fed.b.env, "stats", "report")
        deadline = time.monotonic() + DEADLINE
        while "national statistics not reported" not in fed.b.log():
            assert time.monotonic() < deadline, "the reporter never noticed the top level down"
            time.sleep(0.1)
    finally:
        fed.top.stopped = False
        RUNNING.append(fed.top)
        fed.top.start(STARTUP_TIMEOUT)
    stats = _wait_stats(fed, lambda s: counts(industry_nodes(s)["88.101"]) == (10, 9, 5))
    assert counts(industry_nodes(stats)["88.100"]) == EXPECTED["88.100"]
    with fed.b.client() as client:
        assert client.get(f"/api/handles/{handle}").status_code == 200
    log = fed.b.log()
    assert "national statistics reported again" in log and "Traceback" not in log
