"""The CLI a newcomer meets first: `idis` alone and `idis --version`."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from nodes.cli import main


def test_idis_alone_prints_the_help_listing_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: idis")
    for command in ("serve", "migrate", "prefix", "import", "demo", "bench"):
        assert command in out


def test_version_names_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"idis {version('idis')}"
