"""``idis demo``'s federation part, run as a user runs it (a process of its own, bounded in
time): every step works, the national figures the secondary nodes reported are printed, and so
is the URL of Beijing's console, whose step checked it showed the federation; nothing is left
serving afterwards.  (The national tier's part, which ``idis demo --once`` runs next, is tested
by test_national_failover.py and test_console.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
from nodeproc import REPO

DEMO_TIMEOUT = 300.0
"""Seconds for the whole run (about 40 on an idle two-core machine)."""


def test_the_demo_shows_the_national_figures_and_the_console() -> None:
    script = "import sys; from nodes.demo import run_demo; sys.exit(run_demo(once=True))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIS_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "✗" not in out and re.search(r"all \d+ steps worked", out), out
    assert "national statistics (运行监测)" in out, out
    for row in ("88.100 (88.100, 88.100.1)", "88.101 (88.101, 88.101.5)"):
        assert row in out, out
    assert "✓ Beijing's console shows the federation and the national figures" in out, out
    found = re.search(r"The federation console of Beijing: (http://127\.0\.0\.1:\d+)/console", out)
    assert found, out
    # --once stops every node: Beijing answers no more at its address (another process may
    # have taken the port since, hence the name).
    try:
        about = httpx.get(f"{found.group(1)}/", timeout=2.0)
        name = about.json().get("name") if about.status_code == 200 else None
    except (httpx.TransportError, ValueError):
        name = None
    assert name != "Beijing", f"Beijing still answers at {found.group(1)} after the demo"
