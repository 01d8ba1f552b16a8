"""The SQL layer's transactions on both backends. On PostgreSQL a transaction holds back BEGIN,
SAVEPOINT, RELEASE and ``executemany`` and sends them with the next statement that waits (one
query, one round trip); these tests pin that a savepoint still takes back exactly its own work,
that a failure among held-back statements still shows at the end of its savepoint, and that the
ETag check of a commit inside a batch's savepoint still finds a conflict."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.ports import ConcurrencyConflict, Put
from services.runtime.sql.db import Database, PostgresDatabase, SqliteDatabase
from tests.support.platform import PG_URL, require_postgres

INSERT = "INSERT INTO state (key, value, etag) VALUES (?, ?, 1)"


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServiceDb]:
    database: Database
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "order.db")
    else:
        await require_postgres()
        database = PostgresDatabase(PG_URL, f"sqltx{uuid.uuid4().hex[:10]}_order")
    service_db = ServiceDb("order", database)
    await service_db.open()
    try:
        yield service_db
    finally:
        await database.close()
        if isinstance(database, PostgresDatabase):
            await database.drop_schema()


async def keys(db: ServiceDb) -> list[str]:
    return [row[0] for row in await db.database.fetchall("SELECT key FROM state ORDER BY key")]


async def test_a_failed_savepoint_takes_back_its_own_work_only(db: ServiceDb) -> None:
    async with db.database.transaction() as tx:
        await tx.execute(INSERT, ("before", "{}"))
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                await tx.execute(INSERT, ("sent", "{}"))  # the savepoint reached the server
                await tx.executemany(INSERT, [("held", "{}")])  # still held back
                raise RuntimeError("handler failed")
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                await tx.executemany(INSERT, [("never-sent", "{}")])
                raise RuntimeError("failed before anything went out")
        async with tx.savepoint():
            pass  # nothing in it: nothing to send
        await tx.execute(INSERT, ("after", "{}"))
    assert await keys(db) == ["after", "before"]


async def test_a_failing_held_back_statement_fails_its_savepoint(db: ServiceDb) -> None:
    async with db.database.transaction() as tx:
        await tx.execute(INSERT, ("taken", "{}"))
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            async with tx.savepoint():
                await tx.executemany(INSERT, [("fresh", "{}"), ("taken", "{}")])
        assert await tx.fetchone("SELECT COUNT(*) FROM state") == (1,)  # rolled back to the savepoint
        await tx.executemany(INSERT, [("last", "{}")])  # held back until COMMIT
    assert await keys(db) == ["last", "taken"]


async def test_a_stale_commit_in_a_batch_savepoint_is_a_conflict_and_writes_nothing(db: ServiceDb) -> None:
    store = SqlStateStore(db)
    await store.commit([Put("a", {"n": 0}, None), Put("b", {"n": 0}, None)])
    a, b = await store.get("a"), await store.get("b")
    assert a is not None and b is not None
    async with db.atomic() as tx:  # as a dispatcher batch binds it
        await store.commit([Put("a", {"n": 1}, a.etag)])
        with pytest.raises(ConcurrencyConflict):
            # "b" still fresh, "a" stale now: both writes go, or neither
            await store.commit([Put("b", {"n": 2}, b.etag), Put("a", {"n": 2}, a.etag)])
        assert await tx.fetchone("SELECT value FROM state WHERE key = ?", ("b",)) == ('{"n":0}',)
    after_a, after_b = await store.get("a"), await store.get("b")
    assert after_a is not None and after_a.value == {"n": 1}
    assert after_b is not None and after_b.value == {"n": 0} and after_b.etag == b.etag


async def test_a_transaction_that_raises_commits_nothing(db: ServiceDb) -> None:
    with pytest.raises(RuntimeError):
        async with db.database.transaction() as tx:
            await tx.execute(INSERT, ("sent", "{}"))
            await tx.executemany(INSERT, [("held", "{}")])
            raise RuntimeError("batch failed")
    assert await keys(db) == []
    await SqlStateStore(db).commit([Put("later", {}, None)])  # the connection is fine afterwards
    assert await keys(db) == ["later"]
