"""Start and stop ``idis serve`` processes, and run ``idis`` commands, on this machine.

The one place that does it for ``idis demo``, the end-to-end tests and the benchmarks of
``loadtests``.  Every child runs in a session of its own (``sys.executable -m nodes.cli``, or
for a benchmark's reference server whatever a :class:`ServeProcess` subclass names in
:meth:`~ServeProcess.command`), so its process group id is its pid: signalling that group
reaches exactly what was started here (a node's workers included) and nothing else, and a Ctrl-C
at the terminal reaches only the caller, which then stops its children itself.

Contracts, in short:

- :func:`free_ports` picks loopback ports free at the time of the call, below the ephemeral
  range; a port can still be taken before the node binds it, which :func:`wait_ready` reports
  as :class:`PortTaken` (:meth:`ServeProcess.start` then moves the node to another port, when
  asked to retry).
- :func:`node_env` is the whole environment of a node: the caller's without its ``IDIS_``
  settings, plus the node's.
- :class:`ServeProcess` is one ``idis serve``: launched with its output appended to
  ``HOME/serve.log``, pinned to given CPUs if asked (its workers too), ready once it answers
  ``GET /healthz`` (and each worker started), stopped with SIGTERM, then SIGKILL of its group.
- :func:`run_cli` runs one ``idis`` command to its end and kills its group if it overruns.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import httpx

HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0
"""Seconds a stopping process gets between SIGTERM and SIGKILL, unless the caller says."""
WORKER_READY = "Application startup complete."
"""What uvicorn logs (at level info) as each worker has started."""
_PORT_IN_USE = "address already in use"
_POLL = 0.05

Process = subprocess.Popen[bytes]


class NodeFailed(RuntimeError):
    """A node exited, or was not ready in time; the message ends with its log."""


class PortTaken(NodeFailed):
    """A node could not bind its port: somebody took it after it was picked."""


class CliFailed(RuntimeError):
    """An ``idis`` command exited with an error or timed out; the message carries its output."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0; its state in /proc says it is gone.
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports nobody listens on at the time of the call.

    They are taken below the kernel's ephemeral range when it leaves room (else wherever the
    kernel binds port 0): there no outgoing connection is ever given one, so a node stopped and
    started again finds its port free, and a client retrying a stopped node's port cannot
    connect to itself on it (TCP self-connect, which an ephemeral port allows).  The probing
    sockets are held together, so no port comes twice.  Another process may still take a port
    before the node binds it (see :class:`PortTaken`).
    """
    candidates = random.sample(_LISTEN_PORTS, min(len(_LISTEN_PORTS), 20 * count))
    probes: list[socket.socket] = []
    try:
        while len(probes) < count:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind((HOST, candidates.pop() if candidates else 0))
            except OSError:
                probe.close()
                continue
            probes.append(probe)
        return [int(p.getsockname()[1]) for p in probes]
    finally:
        for probe in probes:
            probe.close()


def _below_ephemeral(span: int = 10_000) -> range:
    """Up to ``span`` ports just below the ephemeral range (empty if it is unknown)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(max(10_000, low - span), low)


_LISTEN_PORTS = _below_ephemeral()


def source_root() -> str:
    """The directory holding this ``nodes`` package (children started elsewhere import it)."""
    return str(Path(__file__).resolve().parent.parent)


def node_env(
    data_dir: Path,
    port: int,
    *,
    name: str,
    workers: int = 1,
    log_level: str = "info",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a node serving on ``127.0.0.1:port`` with its data in ``data_dir``.

    The caller's environment without any ``IDIS_`` setting, then the node's: ``IDIS_NAME``
    (which also keeps its Redis keys apart from other nodes'), workers, log level, unbuffered
    output, ``PYTHONPATH`` led by :func:`source_root`; ``extra`` last, overriding any of them.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIS_")}
    python_path = env.get("PYTHONPATH")
    env.update(
        IDIS_DATA_DIR=str(data_dir),
        IDIS_HTTP=f"{HOST}:{port}",
        IDIS_NAME=name,
        IDIS_WORKERS=str(workers),
        IDIS_LOG_LEVEL=log_level,
        # Off unless asked for: every node on this machine would want the same port 2641.
        IDIS_HANDLE="",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=source_root() + (os.pathsep + python_path if python_path else ""),
    )
    env.update(extra or {})
    return env


def _idis_command(*args: str) -> list[str]:
    """``idis ARGS`` as this interpreter runs it."""
    return [sys.executable, "-m", "nodes.cli", *args]


def _spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    stdout: int,
    stderr: int,
    cpus: Sequence[int] | None = None,
) -> Process:
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        # Set in the child before it runs anything: whatever it starts inherits the CPUs.
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )


def signal_group(process: Process, sig: int) -> None:
    """Send ``sig`` to the process group ``process`` leads (gone already: nothing happens)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_all(processes: Sequence[Process], timeout: float = STOP_TIMEOUT) -> list[Process]:
    """Stop ``processes`` together: SIGTERM to each group, up to ``timeout`` seconds for all
    to exit, then SIGKILL to each group (whatever is left of it: a worker, a straggler), each
    reaped.  Returns those that were still running ``timeout`` seconds after SIGTERM."""
    # A group swept once is never signalled again: once empty, its number may be reused.
    processes = [p for p in processes if p not in _SWEPT]
    live = [p for p in processes if p.poll() is None]
    for process in live:
        signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    ignored = []
    for process in live:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            ignored.append(process)
    for process in processes:
        signal_group(process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        _SWEPT.add(process)
    return ignored


_SWEPT: weakref.WeakSet[Process] = weakref.WeakSet()
"""Processes whose group :func:`stop_all` has killed."""


def run_cli(
    env: Mapping[str, str],
    *args: str,
    cwd: Path | None = None,
    timeout: float = 60.0,
    started: Callable[[Process], None] | None = None,
) -> str:
    """Run ``idis ARGS`` with ``env`` in a session of its own; its stdout.

    ``started`` is called with the process as soon as it exists (to stop it from elsewhere).
    Raises :class:`CliFailed`, with stdout and stderr, if it exits with an error or runs longer
    than ``timeout`` seconds (its group is then killed); on any other exception (Ctrl-C) the
    group is killed before it propagates.
    """
    child = _spawn(_idis_command(*args), env, cwd, subprocess.PIPE, subprocess.PIPE)
    try:
        if started is not None:
            started(child)
        out, err = child.communicate(timeout=timeout)
        outcome = f"exited with {child.returncode}"
    except subprocess.TimeoutExpired:
        signal_group(child, signal.SIGKILL)
        out, err = child.communicate()
        outcome = f"timed out after {timeout:g}s"
    except BaseException:
        signal_group(child, signal.SIGKILL)
        child.wait()
        raise
    stdout = out.decode("utf-8", errors="replace")
    if child.returncode != 0:
        output = (stdout + err.decode("utf-8", errors="replace")).strip()
        raise CliFailed(f"idis {' '.join(args)} {outcome}\n{output}")
    return stdout


class ServeProcess:
    """One ``idis serve`` node: its name, environment and home directory, and (once
    launched) its process.  It runs in ``home`` and appends its output to ``home/serve.log``;
    its URL is ``http://`` + ``IDIS_HTTP``.  With ``cpus`` it (and every process it starts)
    runs on those CPUs only.  A stopped node may be launched again."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        home: Path,
        *,
        cpus: Sequence[int] | None = None,
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.home = home
        self.cpus = list(cpus) if cpus else None
        self.log_path = home / "serve.log"
        self.process: Process | None = None
        self._log_start = 0

    @property
    def url(self) -> str:
        return f"http://{self.env['IDIS_HTTP']}"

    @property
    def port(self) -> int:
        return int(self.env["IDIS_HTTP"].rpartition(":")[2])

    @property
    def workers(self) -> int:
        return int(self.env.get("IDIS_WORKERS", "1"))

    @property
    def pid(self) -> int:
        """The pid of the last launch, which is also its process group's id."""
        assert self.process is not None, f"{self.name} was never launched"
        return self.process.pid

    def command(self) -> list[str]:
        """What :meth:`launch` runs: ``idis serve``.  A subclass may run a stand-in instead (a
        benchmark's reference server) that serves ``GET /healthz`` at :attr:`url` and, at log
        level info or debug, logs as uvicorn does (see :func:`wait_ready`)."""
        return _idis_command("serve")

    def launch(self) -> None:
        """Start :meth:`command` and return at once (readiness: :func:`wait_ready`)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self.process = _spawn(
                self.command(), self.env, self.home, log.fileno(), subprocess.STDOUT, self.cpus
            )

    def start(self, timeout: float, *, attempts: int = 1) -> None:
        """:meth:`launch` and :func:`wait_ready`.  When the port was taken and attempts are
        left, take another free port and try again; otherwise raise as :func:`wait_ready`
        does (the failed process is left for :meth:`stop`)."""
        for attempt in range(1, attempts + 1):
            self.launch()
            try:
                wait_ready([self], timeout)
                return
            except PortTaken:
                if attempt == attempts:
                    raise
                self.stop()
                self.env["IDIS_HTTP"] = f"{HOST}:{free_ports(1)[0]}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the node's group, SIGKILL it after ``timeout`` seconds; the exit code (None
        if never launched)."""
        if self.process is None:
            return None
        stop_all([self.process], timeout)
        return self.process.returncode

    def log(self) -> str:
        """Everything in its log file so far (every launch)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _launch_log(self) -> str:
        """The log since the last launch."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode("utf-8", errors="replace")
        return ""

    def _up(self) -> bool:
        """Whether the log says this process holds the port and every worker started; only
        uvicorn's info messages say so: at quieter levels, True."""
        if self.env.get("IDIS_LOG_LEVEL", "info") not in ("info", "debug"):
            return True
        log = self._launch_log()
        return f"running on {self.url} " in log and log.count(WORKER_READY) >= self.workers


def wait_ready(nodes: Sequence[ServeProcess], timeout: float) -> None:
    """Return once every node (launched) answers ``GET /healthz`` with 200 and, at log level
    info or debug, has logged binding its own URL and the start of each of its workers.

    Raises :class:`PortTaken` if a node could not bind its port, :class:`NodeFailed` (with the
    log tail) if one exited or is not ready within ``timeout`` seconds.  Each poll is bounded
    (1 s); nothing is stopped here.
    """
    pending = list(nodes)
    healthy: set[int] = set()
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while True:
            for node in list(pending):
                if not node.alive():
                    _raise_failed(node, f"exited before answering ({_exit_code(node)})")
                if id(node) not in healthy:
                    with contextlib.suppress(httpx.TransportError):
                        if client.get(f"{node.url}/healthz").status_code == 200:
                            healthy.add(id(node))
                if id(node) in healthy and node._up():
                    pending.remove(node)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(n.name for n in pending)
                _raise_failed(pending[0], f"not ready within {timeout:g}s (waiting for {names})")
            time.sleep(_POLL)


def _exit_code(node: ServeProcess) -> str:
    return f"exit code {node.process.returncode}" if node.process else "never launched"


def _raise_failed(node: ServeProcess, what: str) -> NoReturn:
    if _PORT_IN_USE in node._launch_log().lower():
        raise PortTaken(f"{node.name}: port {node.port} was taken")
    raise NodeFailed(f"{node.name} at {node.url} {what}; its log ends:\n{node.log_tail()}")
