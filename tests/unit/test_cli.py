"""The CLI a newcomer meets first: `idis` alone, `idis --version`, help with defaults, errors
that say where to look."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

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


def _every_parser(
    parser: argparse.ArgumentParser, path: str = "idis"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _every_parser(sub, f"{path} {name}")


def test_every_command_and_option_has_help_and_says_its_default() -> None:
    from nodes.cli import parser

    checked = 0
    for path, command in _every_parser(parser()):
        text = command.format_help()  # also proves every help string formats
        for action in command._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):  # each command's listing line
                listed = {choice.dest: choice.help for choice in action._choices_actions}
                assert set(listed) == set(action.choices) and all(listed.values()), path
                continue
            where = f"{path} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{where}: no help"
            checked += 1
            if action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()), where
    assert checked > 60


def test_secret_new_prints_a_secret_strong_enough_for_secret_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from registry.secrets import weakness

    assert main(["secret", "new"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["secret", "new"]) == 0
    assert weakness(first) is None
    assert capsys.readouterr().out.strip() != first


def test_a_bad_setting_names_the_variable_and_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "idis.toml"
    settings.write_text("[cache]\nmax_entries = -5\n", encoding="utf-8")
    monkeypatch.setenv("IDIS_SETTINGS_FILE", str(settings))
    monkeypatch.setenv("IDIS_WORKERS", "many")
    monkeypatch.setenv("IDIS_DATA_DIR", str(tmp_path / "data"))
    assert main(["prefix", "list"]) == 2
    err = capsys.readouterr().err
    assert f"IDIS_CACHE__MAX_ENTRIES ({settings}, key cache.max_entries)" in err
    assert "IDIS_WORKERS (environment)" in err
    settings.write_text("cache = = 1\n", encoding="utf-8")
    monkeypatch.delenv("IDIS_WORKERS")
    assert main(["prefix", "list"]) == 2
    assert f"IDIS_SETTINGS_FILE {settings}" in capsys.readouterr().err


def test_a_missing_secret_file_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IDIS_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("IDIS_DATA_DIR", str(tmp_path / "data"))
    missing = tmp_path / "holder.secret"
    assert main(["prefix", "init", "88.100.1", "--secret-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--secret-file {missing}: no such file (make one: idis secret new > {missing})" in err
    weak = tmp_path / "weak.secret"
    weak.write_text("aaaaaaaaaaaaaaaa\n", encoding="utf-8")
    assert main(["prefix", "init", "88.100.1", "--secret-file", str(weak)]) == 2
    assert f"--secret-file {weak}:" in capsys.readouterr().err
