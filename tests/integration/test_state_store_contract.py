"""The state-store port's contract, the same test for every adapter: the embedded SQL store on
SQLite and on PostgreSQL, the Dapr store (the real SDK against the fake sidecar), and the in-memory
store the handlers' unit tests run on.

Every saga step is read–decide–commit, and only the commit's guards keep two steps from both
winning: a write carries the ETag it read (stale: :class:`ConcurrencyConflict`), a create carries
none and fails if the key exists. Races are forced with a held read (``tests/support/interleave.py``),
since on SQLite a step never suspends between its read and its commit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.runtime.dapr.outbox import SCHEMA as OUTBOX_SCHEMA
from services.runtime.dapr.outbox import OutboxRelay
from services.runtime.dapr.state import DIRECTORY_SCHEMA, DaprStateStore, KeyDirectory
from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.memory import MemoryStateStore
from services.runtime.ports import ConcurrencyConflict, Delete, Put, StateStore, retry_on_conflict
from services.runtime.sql.db import PostgresDatabase, SqliteDatabase
from tests.dapr.test_dapr_adapters import connect
from tests.support.fake_dapr import FakeDapr
from tests.support.interleave import HoldingStore
from tests.support.platform import PG_URL, require_postgres
from tests.support.server import free_port

ADAPTERS = ["memory", "sql-sqlite", "sql-postgresql", "dapr"]


@pytest.fixture(params=ADAPTERS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
    elif request.param == "sql-sqlite":
        db = ServiceDb("order", SqliteDatabase(tmp_path / "order.db"))
        await db.open()
        yield SqlStateStore(db)
        await db.database.close()
    elif request.param == "sql-postgresql":
        await require_postgres()
        database = PostgresDatabase(PG_URL, f"contract{uuid.uuid4().hex[:10]}_order")
        db = ServiceDb("order", database)
        await db.open()
        try:
            yield SqlStateStore(db)
        finally:
            await database.close()
            await database.drop_schema()
    else:
        fake = FakeDapr()
        fake.add_app("order", free_port())  # no app listens: the store talks to its sidecar only
        fake.start()
        sidecar = await connect(fake, "order", monkeypatch)
        db = ServiceDb("order", SqliteDatabase(tmp_path / "order.db"))
        await db.open([*DIRECTORY_SCHEMA, *OUTBOX_SCHEMA])
        outbox = OutboxRelay(sidecar, "order-state", "pubsub", "order-events", db)
        try:
            yield DaprStateStore(sidecar, "order", "order-state", KeyDirectory(db), outbox)
        finally:
            await sidecar.close()
            await db.database.close()
            fake.stop()


async def value_of(store: StateStore, key: str) -> object:
    record = await store.get(key)
    return record.value if record else None


async def test_a_commit_with_a_stale_etag_is_a_conflict_and_writes_nothing(store: StateStore) -> None:
    await store.commit([Put("order:1", {"n": 0}, None)])
    first = await store.get("order:1")
    assert first is not None
    await store.commit([Put("order:1", {"n": 1}, first.etag)])
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Put("order:1", {"n": 99}, first.etag)])
    assert await value_of(store, "order:1") == {"n": 1}
    with pytest.raises(ConcurrencyConflict):  # one stale guard fails the whole commit
        await store.commit([Put("order:2", {"n": 2}, None), Put("order:1", {"n": 99}, first.etag)])
    assert await store.get("order:2") is None, "nothing of a failed commit is written"
    assert await value_of(store, "order:1") == {"n": 1}
    current = await store.get("order:1")
    assert current is not None and current.etag != first.etag, "every write changes the ETag"
    await store.commit([Put("order:1", {"n": 2}, current.etag)])
    assert await value_of(store, "order:1") == {"n": 2}


async def test_a_create_of_a_key_that_exists_is_a_conflict(store: StateStore) -> None:
    await store.commit([Put("order:c", {"who": "first"}, None)])
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Put("order:c", {"who": "second"}, None)])
    assert await value_of(store, "order:c") == {"who": "first"}


async def test_a_delete_needs_the_current_etag(store: StateStore) -> None:
    await store.commit([Put("order:d", {"n": 1}, None)])
    first = await store.get("order:d")
    assert first is not None
    await store.commit([Put("order:d", {"n": 2}, first.etag)])
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Delete("order:d", first.etag)])
    assert await value_of(store, "order:d") == {"n": 2}
    current = await store.get("order:d")
    assert current is not None
    await store.commit([Delete("order:d", current.etag)])
    assert await store.get("order:d") is None


async def increment(store: StateStore, key: str = "order:n") -> None:
    """One read–decide–commit step."""
    record = await store.get(key)
    assert record is not None
    await store.commit([Put(key, {"n": record.value["n"] + 1}, record.etag)])


async def test_a_step_overtaken_between_its_read_and_its_commit_conflicts(store: StateStore) -> None:
    await store.commit([Put("order:n", {"n": 0}, None)])
    holding = HoldingStore(store)
    hold = holding.hold_next_read("order:n")
    slow = asyncio.create_task(increment(holding))
    read = await hold.reached()
    assert read is not None and read.value == {"n": 0}
    await increment(holding)  # overtakes the held step: reads 0, writes 1
    hold.release()
    with pytest.raises(ConcurrencyConflict):
        await slow  # it read 0 too: writing 1 again would lose the other increment
    assert await value_of(store, "order:n") == {"n": 1}

    hold = holding.hold_next_read("order:n")
    slow = asyncio.create_task(retry_on_conflict(lambda: increment(holding)))
    await hold.reached()
    await increment(holding)
    hold.release()
    await slow  # retried from a fresh read
    assert await value_of(store, "order:n") == {"n": 3}, "no increment may be lost"


async def test_of_two_creates_racing_for_one_key_exactly_one_wins(store: StateStore) -> None:
    async def create(who: str) -> None:
        if await holding.get("order:new") is None:
            await holding.commit([Put("order:new", {"who": who}, None)])

    holding = HoldingStore(store)
    hold = holding.hold_next_read("order:new")
    slow = asyncio.create_task(create("slow"))
    assert await hold.reached() is None
    await create("fast")
    hold.release()
    with pytest.raises(ConcurrencyConflict):
        await slow
    assert await value_of(store, "order:new") == {"who": "fast"}
