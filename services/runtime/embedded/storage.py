"""The embedded state store: records with ETags, the outbox, the inbox, in the service's own database.

A dispatcher worker runs a whole batch of deliveries in one transaction; it binds that transaction
to the service's :class:`ServiceDb` through a context variable, so a handler's reads see the batch's
earlier writes and its commit becomes a savepoint inside the batch. Request handlers, in their own
tasks, see no bound transaction and commit on their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from services.runtime.clock import epoch
from services.runtime.events import OutboundEvent, dumps, loads
from services.runtime.ports import ConcurrencyConflict, Delete, Put, Record, Write
from services.runtime.sql.db import Database, Params, Row, TransientDbError, Tx, ddl

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, etag INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, topic TEXT NOT NULL,
        envelope TEXT NOT NULL, deliver_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, consumer TEXT NOT NULL, event_id TEXT NOT NULL,
        topic TEXT NOT NULL, envelope TEXT NOT NULL, due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT)""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (due_at, seq)",
    """CREATE TABLE IF NOT EXISTS inbox (
        consumer TEXT NOT NULL, event_id TEXT NOT NULL, done_at REAL NOT NULL,
        PRIMARY KEY (consumer, event_id))""",
    "CREATE INDEX IF NOT EXISTS inbox_done ON inbox (done_at)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id TEXT PRIMARY KEY, consumer TEXT NOT NULL, event_id TEXT NOT NULL, topic TEXT NOT NULL,
        envelope TEXT NOT NULL, attempts INTEGER NOT NULL, error TEXT NOT NULL, failed_at REAL NOT NULL)""",
]


class ServiceDb:
    """A service's database plus the transaction a dispatcher batch has bound to it, if any."""

    def __init__(self, service: str, database: Database) -> None:
        self.service = service
        self.database = database
        self._bound: ContextVar[Tx | None] = ContextVar(f"baedal_tx_{service}", default=None)
        self._after_commit: list[Callable[[], None]] = []

    async def open(self, extra_schema: Sequence[str] = ()) -> None:
        await self.database.open()
        await self.database.run_script(ddl(self.database.dialect, [*SCHEMA, *extra_schema]))

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Called after every outermost commit (wakes the outbox relay)."""
        self._after_commit.append(callback)

    def _committed(self) -> None:
        for callback in self._after_commit:
            callback()

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[Tx]:
        """A savepoint inside the bound batch transaction, else a transaction of its own."""
        bound = self._bound.get()
        if bound is not None:
            async with bound.savepoint():
                yield bound
            return
        async with self.database.transaction() as tx:
            token = self._bound.set(tx)
            try:
                yield tx
            finally:
                self._bound.reset(token)
        self._committed()

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        bound = self._bound.get()
        return await (bound or self.database).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        bound = self._bound.get()
        return await (bound or self.database).fetchall(sql, params)


_KEY_END = "\U0010ffff"


def prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds for ``key >= lo AND key < hi``: every key that starts with ``prefix``."""
    return prefix, prefix + _KEY_END


class SqlStateStore:
    """:class:`services.runtime.ports.StateStore` on a service's SQL database."""

    def __init__(self, db: ServiceDb) -> None:
        self._db = db
        self._source = db.service

    async def get(self, key: str) -> Record | None:
        row = await self._db.fetchone("SELECT value, etag FROM state WHERE key = ?", (key,))
        if row is None:
            return None
        return Record(key, loads(row[0]), str(row[1]))

    async def scan(self, prefix: str) -> list[Record]:
        rows = await self._db.fetchall(
            "SELECT key, value, etag FROM state WHERE key >= ? AND key < ? ORDER BY key",
            prefix_range(prefix),
        )
        return [Record(k, loads(v), str(e)) for k, v, e in rows]

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        try:
            await self._commit(writes, events)
        except TransientDbError as exc:  # a deadlock victim retries from a fresh read, like a lost race
            raise ConcurrencyConflict(str(exc)) from exc

    async def _commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent]) -> None:
        """The writes and the events' outbox rows in one go (on PostgreSQL one round trip); a write
        that found its key changed makes the savepoint or transaction take everything back."""
        now = epoch()
        outbox = [(_OUTBOX_INSERT, (e.id, e.topic, dumps(e.envelope()), e.deliver_at or now)) for e in events]
        async with self._db.atomic() as tx:
            counts = await tx.execute_all([*map(_statement, writes), *outbox])
            for write, count in zip(writes, counts, strict=False):
                if count != 1:
                    raise ConcurrencyConflict(write.key)


_OUTBOX_INSERT = "INSERT INTO outbox (event_id, topic, envelope, deliver_at) VALUES (?, ?, ?, ?)"


def _statement(write: Write) -> tuple[str, Params]:
    """The statement applying ``write``; it changes one row if the key is still as read, else none."""
    if isinstance(write, Delete):
        return "DELETE FROM state WHERE key = ? AND etag = ?", (write.key, int(write.etag))
    value = dumps(write.value)
    if write.etag is None:
        return "INSERT INTO state (key, value, etag) VALUES (?, ?, 1) ON CONFLICT (key) DO NOTHING", (write.key, value)
    return "UPDATE state SET value = ?, etag = etag + 1 WHERE key = ? AND etag = ?", (value, write.key, int(write.etag))


def put_new(key: str, value: dict[str, Any]) -> Put:
    return Put(key, value, None)
