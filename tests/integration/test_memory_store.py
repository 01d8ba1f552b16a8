"""The in-memory state store behaves like the SQL store it stands in for (on SQLite) beyond the
guards of tests/integration/test_state_store_contract.py, and it records the committed events in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.events import OutboundEvent
from services.runtime.memory import MemoryStateStore
from services.runtime.ports import ConcurrencyConflict, Put, StateStore
from services.runtime.sql.db import SqliteDatabase


@pytest.fixture(params=["memory", "sql-sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
        return
    db = ServiceDb("order", SqliteDatabase(tmp_path / "order.db"))
    await db.open()
    try:
        yield SqlStateStore(db)
    finally:
        await db.database.close()


async def value_of(store: StateStore, key: str) -> object:
    record = await store.get(key)
    return record.value if record else None


async def test_scan_lists_a_prefix_in_key_order(store: StateStore) -> None:
    for n in (3, 1, 2):
        await store.commit([Put(f"order:{n}", {"n": n}, None)])
    await store.commit([Put("wallet:x", {"n": 0}, None)])
    assert [r.value["n"] for r in await store.scan("order:")] == [1, 2, 3]


async def test_values_are_stored_not_shared(store: StateStore) -> None:
    value = {"items": [1]}
    await store.commit([Put("order:v", value, None)])
    value["items"].append(2)
    read = await store.get("order:v")
    assert read is not None and read.value == {"items": [1]}
    read.value["items"].append(3)
    assert await value_of(store, "order:v") == {"items": [1]}


async def test_the_memory_store_records_committed_events_in_order() -> None:
    store = MemoryStateStore()
    first, second, lost = (OutboundEvent(topic=f"order.e{n}", data={"n": n}, source="order") for n in range(3))
    await store.commit([Put("order:a", {}, None)], [first, second])
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Put("order:a", {}, None)], [lost])
    await store.commit([], [lost])
    assert [e.id for e in store.events] == [first.id, second.id, lost.id]
    assert store.published("order.e1") == [second]
