"""The README's recipes work when pasted in order into a fresh shell.

The shell blocks of "Running a node" and the first two of "Load testing and benchmarks" are
taken from README.md as they are and run, one after the other, by bash in a fresh temporary
directory against the real node they start. The only changes are the substitutions written out
in the test (each must apply, so the README cannot drift away from them): the node's port (a
free one instead of 8000; the native Handle port through ``IDIS_HANDLE``), the path of the
example files, the load test's size and duration (a million identifiers and a minute become a
few thousand and two seconds) and the database: the node runs on a fresh PostgreSQL database
(``IDIS_DATABASE_URL``, as the README says to for `plan`), the plan measures it. ``idis`` is
this source tree's (a script running ``python3 -m nodes.cli``). Bounded in time; everything the
recipe started is killed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

from nodes.processes import free_ports, source_root

ROOT = Path(source_root())
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(heading: str) -> list[str]:
    """The indented (4-space) code blocks of the README's section ``heading``, in order."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks: list[list[str]] = []
    previous = ""
    for line in section.split("\n"):
        if line.startswith("    ") and not line.startswith("    -"):
            if not previous.startswith("    ") and previous.strip() == "":
                blocks.append([])
            blocks[-1].append(line[4:])
        previous = line if line.strip() or not previous.startswith("    ") else previous
    return ["\n".join(block).strip() + "\n" for block in blocks]


def _adapt(script: str, changes: dict[str, str]) -> str:
    for old, new in changes.items():
        assert old in script, f"the README no longer has {old!r}: update ADAPTED"
        script = script.replace(old, new)
    return script


def test_running_a_node_and_load_testing_recipes_run_as_written(
    tmp_path: Path, pg_empty_url: str
) -> None:
    http, handle = free_ports(2)
    adapted = {
        "localhost:8000": f"127.0.0.1:{http}",
        "examples/": f"{ROOT}/examples/",
    }
    node = _adapt(_blocks("Running a node")[0], adapted)
    load_blocks = _blocks("Load testing and benchmarks")
    load = _adapt(
        load_blocks[0] + load_blocks[1],
        {
            "127.0.0.1:8000": f"127.0.0.1:{http}",
            "--count 1000000": "--count 3000",
            "--duration 60": "--duration 2",
            "--concurrency 64": "--concurrency 4",
            "postgresql://postgres@127.0.0.1:5432/idis\n": f"{pg_empty_url}\n",
        },
    )
    script = "\n".join(
        [
            "set -euo pipefail",
            # The README's `idis serve &` keeps running in a real shell; here it ends with us.
            "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT",
            node,
            "echo '--- load testing'",
            load,
        ]
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("IDIS_") and key != "PYTHONPATH"
    }
    # `idis` as installed, but this source tree's: a script that execs it (so that the README's
    # `idis serve &` is the node's own process, which `kill %1` stops).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "idis").write_text('#!/bin/sh\nexec python3 -m nodes.cli "$@"\n')
    (bin_dir / "idis").chmod(0o755)
    work = tmp_path / "shell"
    work.mkdir()
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        PYTHONPATH=str(ROOT),
        IDIS_HTTP=f"127.0.0.1:{http}",
        IDIS_HANDLE=f"127.0.0.1:{handle}",
        # The README's `export IDIS_DATABASE_URL=...` for a node on PostgreSQL.
        IDIS_DATABASE_URL=pg_empty_url,
    )
    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = shell.communicate(timeout=240)
    finally:  # whatever happened, nothing the recipe started outlives the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    done = subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)
    tmp_path = work
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The PUT was answered, the record reads back, both example files were loaded.
    assert '{"responseCode":1,"handle":"88.100.1/ABC123"}' in done.stdout
    assert "https://example.com/p/ABC123" in done.stdout
    assert re.search(r"loaded 3 \(0 unchanged\), rejected 0", done.stdout), output
    assert re.search(r"loaded 2 \(0 unchanged\), rejected 0", done.stdout), output
    assert "centrifugal pump" in done.stdout
    register = json.loads((tmp_path / "register.json").read_text(encoding="utf-8"))
    resolve = json.loads((tmp_path / "resolve.json").read_text(encoding="utf-8"))
    assert "identifiers" in done.stdout.split("--- load testing", 1)[1]
    assert register and resolve
    assert re.search(r"registered 3,000 of 3,000 identifiers \(created 3,000\)", done.stdout)
    assert "errors by response code: none" in done.stdout
    # plan measured bytes per identifier in the node's PostgreSQL and planned every figure.
    assert "bytes per identifier not measured" not in done.stdout
    assert "missing measurements" not in done.stdout
    assert "secondary nodes:" in done.stdout
    assert "HTTP 403" not in output and "Traceback" not in output


def test_the_import_formats_shown_in_the_readme_load(tmp_path: Path) -> None:
    section = README.split("\n## Importing identifiers\n", 1)[1].split("\n## ", 1)[0]
    jsonl = "\n".join(line.strip() for line in section.splitlines() if line.startswith("      {"))
    csv = "\n".join(
        line.strip() for line in section.splitlines() if line.startswith("      ") and "," in line
    )
    csv = "\n".join(line for line in csv.splitlines() if not line.startswith("{"))
    (tmp_path / "shown.jsonl").write_text(jsonl + "\n", encoding="utf-8")
    (tmp_path / "shown.csv").write_text(csv + "\n", encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("IDIS_")}
    env.update(PYTHONPATH=str(ROOT), IDIS_DATA_DIR=str(tmp_path / "data"))

    def idis(*args: str) -> str:
        done = subprocess.run(
            ["python3", "-m", "nodes.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    idis("prefix", "init", "88.100.1")
    assert "loaded 2 (0 unchanged), rejected 0" in idis("import", "shown.jsonl")
    assert "loaded 1 (0 unchanged), rejected 0" in idis("import", "shown.csv")
