"""One contract suite for :class:`resolver.ports.Generations`: the in-process twin and the board
shared between processes; then what only the board promises, across real processes."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodes.generation_board import GenerationBoard
from resolver.memory import LocalGenerations
from resolver.ports import Generations

SLOTS = 1 << 16
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Subject:
    generations: Generations
    slot: Callable[[str], int]
    """Where a key lands, so tests can tell a collision from a bug."""


@pytest.fixture(params=["local", "board"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "local":
        yield Subject(LocalGenerations(SLOTS), lambda key: hash(key) % SLOTS)
        return
    board = GenerationBoard(tmp_path / "generations.board", SLOTS)
    try:
        yield Subject(board, lambda key: zlib.crc32(key.encode()) % SLOTS)
    finally:
        board.close()


KEYS = [f"88.100.{n}/ITEM-{n}" for n in range(40)] + ["88.100.1/ÄBC", "0.NA/88.100"]


def test_current_is_stable_until_bumped(subject: Subject) -> None:
    before = {key: subject.generations.current(key) for key in KEYS}
    assert {key: subject.generations.current(key) for key in KEYS} == before


def test_bump_changes_exactly_the_bumped_keys(subject: Subject) -> None:
    gens = subject.generations
    bumped = KEYS[:3]
    hit = {subject.slot(key) for key in bumped}
    others = [key for key in KEYS if subject.slot(key) not in hit]
    assert len(others) > len(KEYS) // 2
    before = {key: gens.current(key) for key in KEYS}

    gens.bump(bumped)

    assert all(gens.current(key) != before[key] for key in bumped)
    assert {key: gens.current(key) for key in others} == {key: before[key] for key in others}


def test_bump_takes_any_iterable(subject: Subject) -> None:
    gens = subject.generations
    before = gens.current(KEYS[0])
    gens.bump(key for key in KEYS[:1])
    gens.bump([])
    assert gens.current(KEYS[0]) != before


def test_bump_all_changes_every_key(subject: Subject) -> None:
    gens = subject.generations
    gens.bump(KEYS[:2])
    before = {key: gens.current(key) for key in KEYS}
    gens.bump_all()
    assert all(gens.current(key) != before[key] for key in KEYS)


# What only the board promises.


def test_board_is_seen_at_once_by_another_instance(tmp_path: Path) -> None:
    path = tmp_path / "generations.board"
    writer, reader = GenerationBoard(path), GenerationBoard(path)
    try:
        key = "88.100.1/ABC123"
        before = reader.current(key)
        writer.bump([key])
        assert reader.current(key) == before + 1
        writer.bump_all()
        assert reader.current(key) == before + 2
        assert reader.current("88.100.2/OTHER") == writer.current("88.100.2/OTHER")
    finally:
        writer.close()
        reader.close()


def test_board_survives_reopening_and_refuses_another_size(tmp_path: Path) -> None:
    path = tmp_path / "generations.board"
    board = GenerationBoard(path, slots=64)
    board.bump(["88.100.1/ABC123"])
    bumped = board.current("88.100.1/ABC123")
    board.close()
    assert path.stat().st_size == 64 * 8

    board = GenerationBoard(path, slots=64)
    assert board.current("88.100.1/ABC123") == bumped
    board.close()
    with pytest.raises(ValueError, match="64 slots"):
        GenerationBoard(path, slots=128)


def test_recreated_board_does_not_repeat_generations(tmp_path: Path) -> None:
    path = tmp_path / "generations.board"
    board = GenerationBoard(path, slots=64)
    lost = {board.current("88.100.1/ABC123") + n for n in range(3)}
    board.close()
    path.unlink()

    board = GenerationBoard(path, slots=64)
    assert board.current("88.100.1/ABC123") not in lost
    board.close()


_BUMPER = """
import sys
from nodes.generation_board import GenerationBoard

board = GenerationBoard(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[2])):
    board.bump([sys.argv[3]])
board.close()
"""


def test_board_bumps_from_concurrent_processes_are_never_lost(tmp_path: Path) -> None:
    path, key, bumps, workers = tmp_path / "generations.board", "88.100.1/HOT", 2000, 2
    board = GenerationBoard(path)
    before = board.current(key)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUMPER, str(path), str(bumps), key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:  # every board is open before any bump starts
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.wait(timeout=60) == 0
        assert board.current(key) == before + workers * bumps
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        board.close()
