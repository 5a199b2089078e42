"""The database as a dependency that can be down (registry/stores/outage.py), the multi-host
URL idis writes through, and what the national tier says when its binaries are missing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy.exc

from nodes.national import binaries
from registry.stores import outage
from registry.stores.sql import SqlStore, async_url
from resolver.errors import StorageUnavailable


def test_a_multi_host_url_becomes_sqlalchemy_form() -> None:
    url = async_url(
        "postgresql://postgres@127.0.0.1:5001,127.0.0.1:5002/idis?target_session_attrs=read-write"
    )
    assert url.drivername == "postgresql+asyncpg"
    assert url.database == "idis"
    assert url.query["host"] == ("127.0.0.1:5001", "127.0.0.1:5002")
    assert url.query["target_session_attrs"] == "read-write"
    assert async_url("postgresql://u@h:1/db").host == "h"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ReadOnlySQLTransactionError("read-only transaction"),
        asyncpg.exceptions.TargetServerAttributeNotMatched("no read-write host"),
        sqlalchemy.exc.DBAPIError("stmt", {}, ConnectionResetError(), connection_invalidated=True),
    ],
)
def test_unavailability_is_recognised(error: BaseException) -> None:
    assert outage.unavailable(error)


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), asyncpg.UniqueViolationError("dup"), asyncpg.UndefinedTableError("x")],
)
def test_errors_about_the_request_are_not_outages(error: BaseException) -> None:
    assert not outage.unavailable(error)


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    tracker = outage.Outage("the db", quiet=30)
    with caplog.at_level(logging.WARNING, logger="idis.database"):
        for _ in range(5):
            assert isinstance(tracker.failed(OSError("refused")), StorageUnavailable)
        tracker.succeeded()
        tracker.failed(OSError("refused"))  # flapping within `quiet`: the same outage
        tracker.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "unavailable" in lines[0] and "available again" in lines[1]


async def test_a_store_whose_database_is_down_answers_code_3_in_bounded_time() -> None:
    store = SqlStore(
        "postgresql://postgres@127.0.0.1:1/nothing",
        connect_timeout=1,
        read_timeout=1,
        write_timeout=1.5,
    )
    try:
        with pytest.raises(StorageUnavailable) as read:
            await asyncio.wait_for(store.get("88.100.1/A"), 10)
        assert read.value.code == 3 and read.value.retry_after > 0
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(store.home_prefix("88.100.1"), 10)
    finally:
        await store.close()


def test_missing_binaries_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(binaries, "PATRONI_VENV", tmp_path)
    monkeypatch.setattr(binaries, "PG_BINS", tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(binaries.MissingBinaries) as missing:
        binaries.find_binaries()
    text = str(missing.value)
    assert "etcd" in text and "Patroni" in text and "PostgreSQL" in text
    assert "test-deps.sh" in text
