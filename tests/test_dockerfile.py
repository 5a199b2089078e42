"""The Dockerfiles build small non-root images from files that exist.

Docker cannot run on the project's machines, so the images are not built here: these tests
read the Dockerfiles (every instruction, line continuations joined) and check what can be
checked without building: each stage's base, that the final stage runs as a non-root user and
installs no compiler, that every file a COPY names exists in the repository (and is not
excluded by .dockerignore), and that the entry point is the installed `idis` command.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_TOOLS = {"gcc", "g++", "make", "build-essential", "libc6-dev", "python3-dev"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, comments dropped, continuations joined."""
    joined = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(path):
        if instruction[0] == "FROM":
            stages.append([])
        assert stages, f"{path.name}: an instruction before FROM"
        stages[-1].append(instruction)
    return stages


def _user(stage: list[tuple[str, str]]) -> str:
    users = [args for word, args in stage if word == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    return users[-1].split(":")[0]


@pytest.mark.parametrize("name", ["Dockerfile", "docker/patroni.Dockerfile"])
def test_the_image_runs_as_a_non_root_user_without_build_tools(name: str) -> None:
    final = _stages(ROOT / name)[-1]
    assert _user(final) not in {"root", "0", ""}
    for word, args in final:
        if word == "RUN" and "apt-get install" in args:
            assert not BUILD_TOOLS & set(shlex.split(args)), f"{name}: {args}"
    assert any(word == "ENTRYPOINT" for word, _ in final)


def test_the_idis_image_is_multi_stage_and_copies_files_that_exist() -> None:
    stages = _stages(ROOT / "Dockerfile")
    assert len(stages) == 2
    build, final = stages
    assert any(word == "RUN" and "gcc" in args for word, args in build)  # the C extension
    assert "slim" in final[0][1]
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = 0
    for word, args in build + final:
        if word != "COPY" or args.startswith("--from="):
            continue
        *sources, _target = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert source not in ignored, f"COPY {source}: excluded by .dockerignore"
            copies += 1
    assert copies >= 5
    # Every package pyproject ships is copied into the build.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copied = " ".join(args for word, args in build if word == "COPY")
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in copied
    entry = [args for word, args in final if word == "ENTRYPOINT"][-1]
    assert entry == '["idis"]' and "idis" in project["project"]["scripts"]


def test_the_image_listens_on_every_interface_and_checks_its_health() -> None:
    final = _stages(ROOT / "Dockerfile")[-1]
    env = " ".join(args for word, args in final if word == "ENV")
    assert "IDIS_HTTP=0.0.0.0:8000" in env
    assert "IDIS_HANDLE=0.0.0.0:2641" in env
    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
