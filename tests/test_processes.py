"""nodes.processes: the contracts its users rely on, on real ``idis`` processes."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import httpx
import pytest

from nodes import processes
from nodes.processes import CliFailed, PortTaken, Process, ServeProcess


def _group_gone(process: Process) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = processes.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_free_ports_are_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert low > 11_000, "this machine's ephemeral range leaves no room below it"

    ports = processes.free_ports(20)

    assert all(10_000 <= port < low for port in ports), ports


def test_node_env_drops_the_callers_idis_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IDIS_DATABASE_URL", "postgresql://elsewhere/db")
    env = processes.node_env(
        tmp_path, 4242, name="n1", extra={"IDIS_ROLE": "recursive", "IDIS_WORKERS": "3"}
    )
    assert "IDIS_DATABASE_URL" not in env
    assert env["IDIS_HTTP"] == "127.0.0.1:4242"
    assert env["IDIS_NAME"] == "n1"
    assert env["IDIS_ROLE"] == "recursive"
    assert env["IDIS_WORKERS"] == "3"  # extra wins
    assert env["PYTHONPATH"].split(os.pathsep)[0] == processes.source_root()


def test_run_cli_output_failure_and_timeout(tmp_path: Path) -> None:
    env = processes.node_env(tmp_path / "data", processes.free_ports(1)[0], name="cli")
    assert "usage: idis" in processes.run_cli(env, "--help")
    with pytest.raises(CliFailed, match=r"(?s)idis nothing exited with 2\n.*invalid choice"):
        processes.run_cli(env, "nothing")
    started: list[Process] = []
    with pytest.raises(CliFailed, match=r"timed out after 0\.5s"):
        processes.run_cli(env, "serve", cwd=tmp_path, timeout=0.5, started=started.append)
    assert started and _group_gone(started[0])


def test_a_taken_port_is_reported_or_replaced(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        env = processes.node_env(tmp_path / "data", port, name="moved")
        node = ServeProcess("moved", env, tmp_path / "node")
        with pytest.raises(PortTaken, match=f"moved: port {port} was taken"):
            node.start(30.0)
        node.start(30.0, attempts=2)
    try:
        assert node.port != port
        assert httpx.get(f"{node.url}/healthz", timeout=5).status_code == 200
    finally:
        assert node.stop() is not None
    assert node.process is not None and _group_gone(node.process)
    assert not node.alive()


class _StandIn(ServeProcess):
    """A stand-in server in place of ``idis serve``: files of ``home``, ``healthz`` among them."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"]


def test_a_stand_in_runs_on_the_cpus_given(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    home = tmp_path / "stand-in"
    home.mkdir()
    (home / "healthz").write_text("ok")
    env = processes.node_env(tmp_path / "data", processes.free_ports(1)[0], name="stand-in")
    server = _StandIn("stand-in", dict(env, IDIS_LOG_LEVEL="warning"), home, cpus=[cpu])
    try:
        server.start(30.0)
        assert httpx.get(f"{server.url}/healthz", timeout=5).text == "ok"
        assert os.sched_getaffinity(server.pid) == {cpu}
    finally:
        server.stop()
    assert server.process is not None and _group_gone(server.process)
