"""The RecordStore contract again, on stores that journal their writes (a top-level node's
store): journaling must not change what a write does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import test_store_contract

from registry.replication import MemoryJournalStore
from registry.stores import SqlStore
from resolver.ports import RecordStore

# The same test functions, collected here again with the ``store`` fixture below.
globals().update({k: v for k, v in vars(test_store_contract).items() if k.startswith("test_")})


@pytest.fixture
async def store(store_url: str | None) -> AsyncIterator[RecordStore]:
    """An opened, empty, journaling RecordStore of each backend, closed afterwards."""
    if store_url is None:
        yield MemoryJournalStore("beijing")
        return
    sql = SqlStore(store_url, journal_as="beijing")
    await sql.open()
    try:
        yield sql
    finally:
        await sql.close()
