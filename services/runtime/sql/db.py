"""A thin async SQL layer over SQLite (stdlib ``sqlite3``) and PostgreSQL (``psycopg`` 3).

Why not an ORM on the hot path: every saga step runs a handful of statements, and at hundreds of
sagas per second SQLAlchemy's per-statement overhead costs more CPU than SQLite itself. The SQL
here is a small portable subset (``?`` placeholders, ``ON CONFLICT``), translated for psycopg.

SQLite: one write connection per service database guarded by an ``asyncio.Lock`` (SQLite has one
writer anyway), plus a read connection that sees committed data (WAL). Statements are microseconds,
so they run on the event loop thread instead of paying a thread hop each. When another process
holds the database's write lock (``baedal up --processes 2``), a transaction waits for it without
blocking the event loop: see :meth:`SqliteDatabase.transaction`.

PostgreSQL: a round trip per statement cost more CPU (ours and the server's) than the statements.
A transaction therefore holds back what needs no answer (BEGIN, SAVEPOINT, RELEASE, COMMIT,
``executemany``) and sends it with the next statement that does, several statements in one query
(see :class:`_PgTx`), each an ``EXECUTE`` of a statement prepared once per connection (:class:`_Prepared`).
psycopg's pipeline mode was tried first: it writes every statement to the socket on its own and
saved no CPU here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

log = logging.getLogger("baedal.sql")

Row = tuple[Any, ...]
Params = Sequence[Any]


class TransientDbError(Exception):
    """The database gave up on a statement that may succeed if retried (deadlock, serialization)."""


class Tx(Protocol):
    """An open transaction."""

    dialect: str

    async def execute(self, sql: str, params: Params = ()) -> int: ...

    async def execute_all(self, statements: Sequence[tuple[str, Params]]) -> list[int]:
        """Run ``statements`` in order and return their row counts (PostgreSQL: one round trip)."""

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    def savepoint(self) -> Any:
        """An async context manager: roll back to here if the block raises."""


class Database(Protocol):
    dialect: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self) -> Any:
        """An async context manager yielding a :class:`Tx`; commits on success."""

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def run_script(self, statements: Sequence[str]) -> None: ...


# --------------------------------------------------------------------------------------------- SQLite


class _SqliteTx:
    dialect = "sqlite"
    _names = itertools.count()

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    async def execute_all(self, statements: Sequence[tuple[str, Params]]) -> list[int]:
        return [self._conn.execute(sql, params).rowcount for sql, params in statements]

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[_SqliteTx]:
        name = f"sp{next(self._names)}"
        self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        self._conn.execute(f"RELEASE {name}")


WAL_SIZE_LIMIT = 64 * 1024 * 1024
BUSY_TIMEOUT_S = 30.0
RESTART_WITHIN_S = 0.25
RESTART_RETRY_S = 0.002


class SqliteDatabase:
    dialect = "sqlite"

    CHECKPOINT_EVERY_S = 0.5

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._lock = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        # Checkpoints fsync the database file (10-20 ms here). Automatic ones would run inside some
        # commit on the event loop; ours run in a thread instead (see _checkpoint_loop).
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # shrink the WAL file after a reset
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        self._reader = self._connect()
        self._stopping = asyncio.Event()
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(self._connect()))

    async def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        """Checkpoints in a worker thread, so that their fsync never stalls the event loop."""
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.CHECKPOINT_EVERY_S)
                await asyncio.to_thread(self._checkpoint, conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database while writers go on (PASSIVE), then rewind it (RESTART)
        so that it does not grow: writers in either process commit all the time, so some commit
        always lands during the copy and SQLite never rewinds the WAL on its own. RESTART holds
        every writer off while it copies what was committed meanwhile and syncs; it is tried
        without waiting (busy timeout 0: it gives up at once while a transaction or a read is
        open) every RESTART_RETRY_S for RESTART_WITHIN_S, and else next time. (Waiting for
        writers inside SQLite's busy handler, as TRUNCATE with a timeout did, held the write lock
        through the handler's sleeps: 50-100 ms stalls of every writer, about once a second.)"""
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        deadline = time.monotonic() + RESTART_WITHIN_S
        while conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(RESTART_RETRY_S)  # in the checkpoint's thread

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._stopping.set()  # not cancel(): the thread may be inside the checkpoint
            await self._checkpointer
            self._checkpointer = None
        async with self._lock:
            for conn in (self._writer, self._reader):
                if conn is not None:
                    conn.close()
            self._writer = self._reader = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            conn = self._writer
            if conn is None:
                raise RuntimeError(f"database {self.path} is closed")
            await _begin_immediate(conn)
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError(f"database {self.path} is closed")
        return self._reader

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._read().execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return self._read().execute(sql, params).fetchall()

    async def run_script(self, statements: Sequence[str]) -> None:
        async with self.transaction() as tx:
            for statement in statements:
                await tx.execute(statement)


async def _begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock. If another process holds it, wait on the event loop (SQLite's own busy
    handler would sleep on it, stalling every request of this process for as long as the other
    process's transaction lasts), for at most BUSY_TIMEOUT_S like the busy handler."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        pause, deadline = 0.0002, time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.005)
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")


# ----------------------------------------------------------------------------------------- PostgreSQL

_PLACEHOLDER = re.compile(r"\?")


def _to_pg(sql: str) -> str:
    return _PLACEHOLDER.sub("%s", sql)


def _numbered(sql: str) -> str:
    """``?`` placeholders as ``$1``, ``$2``, ... for PREPARE."""
    numbers = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


_PREPARABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


class _Prepared:
    """The statements a connection has prepared with SQL ``PREPARE``, by their SQL. Statements go
    out bound on the client (several in one query); ``EXECUTE name(literals)`` keeps the server
    from parsing and planning each one again. psycopg's own preparing is off on these connections,
    so it never deallocates them behind our back."""

    _names = itertools.count()
    _by_connection: ClassVar[weakref.WeakKeyDictionary[Any, _Prepared]] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    @classmethod
    def of(cls, conn: Any) -> _Prepared:
        return cls._by_connection.setdefault(conn, cls())

    def statements(
        self, cursor: Any, items: Sequence[tuple[str, Params]]
    ) -> tuple[list[str], list[str], dict[str, str]]:
        """The PREPAREs still needed, the statements to run, and the names to remember once the
        PREPAREs have run (a failed query may or may not have run them: their names are not reused)."""
        prepares: list[str] = []
        executes: list[str] = []
        new: dict[str, str] = {}
        for sql, params in items:
            if not sql.lstrip()[:6].upper().startswith(_PREPARABLE):
                executes.append(str(cursor.mogrify(_to_pg(sql), params)))
                continue
            name = self.names.get(sql) or new.get(sql)
            if name is None:
                name = new[sql] = f"baedal_{next(self._names)}"
                prepares.append(f"PREPARE {name} AS {_numbered(sql)}")
            args = str(cursor.mogrify(", ".join(["%s"] * len(params)), params)) if params else ""
            executes.append(f"EXECUTE {name}({args})" if args else f"EXECUTE {name}")
        return prepares, executes, new


@asynccontextmanager
async def _pg_errors() -> AsyncIterator[None]:
    from psycopg import errors

    try:
        yield
    except (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable) as exc:
        raise TransientDbError(str(exc)) from exc


class _PgTx:
    """A transaction whose statements go out together: bound on the client, joined into one query
    (simple protocol, one round trip), sent when the caller needs a result. Transaction control
    (BEGIN, SAVEPOINT, RELEASE, COMMIT) and :meth:`executemany` wait in ``_pending`` for the next
    statement that is sent, instead of costing a round trip each. In one query the server runs the
    statements in order and skips the rest after an error, which it reports; so nothing queued
    after a failure can take effect, and the transaction cannot commit."""

    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        from psycopg import AsyncClientCursor

        self._cursor = AsyncClientCursor(conn)
        self._prepared = _Prepared.of(conn)
        self._pending: list[str] = ["BEGIN"]
        self._sent = False  # has the server seen BEGIN: is there anything to roll back
        self._unchecked = False  # _pending holds statements whose outcome nobody has seen yet
        self._depth = 0  # savepoints are named by depth: a released name is free for the next one

    async def _send(self, statements: Sequence[str]) -> Any:
        """Send what is pending and ``statements``; return the cursor on the first one's result."""
        skip = len(self._pending)
        query = "; ".join([*self._pending, *statements])
        self._pending, self._unchecked, self._sent = [], False, True
        async with _pg_errors():
            await self._cursor.execute(query)
        for _ in range(skip):
            self._cursor.nextset()
        return self._cursor

    async def _run(self, statements: Sequence[tuple[str, Params]]) -> Any:
        """Send what is pending and ``statements``; return the cursor on the first one's result."""
        prepares, executes, new = self._prepared.statements(self._cursor, statements)
        cursor = await self._send([*prepares, *executes])
        self._prepared.names.update(new)
        for _ in prepares:
            cursor.nextset()
        return cursor

    async def execute(self, sql: str, params: Params = ()) -> int:
        return int((await self._run([(sql, params)])).rowcount)

    async def execute_all(self, statements: Sequence[tuple[str, Params]]) -> list[int]:
        cursor = await self._run(statements)
        counts = [int(cursor.rowcount)]
        while len(counts) < len(statements) and cursor.nextset():
            counts.append(int(cursor.rowcount))
        return counts

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Queued, not sent: a failure shows at the end of the enclosing savepoint, or at commit."""
        prepares, executes, new = self._prepared.statements(self._cursor, [(sql, params) for params in rows])
        if prepares:  # once per connection and statement
            await self._send(prepares)
            self._prepared.names.update(new)
        if executes:
            self._pending += executes
            self._unchecked = True

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await (await self._run([(sql, params)])).fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = await (await self._run([(sql, params)])).fetchall()
        return rows

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[_PgTx]:
        if self._unchecked:
            await self._send([])  # a failure before the savepoint must not look like one inside it
        self._depth += 1
        name = f"sp{self._depth}"
        start = len(self._pending)
        self._pending.append(f"SAVEPOINT {name}")
        try:
            yield self
            await self._release(name, start)
        except BaseException:
            self._roll_back_to(name, start)
            raise
        finally:
            self._depth -= 1

    async def _release(self, name: str, start: int) -> None:
        if len(self._pending) == start + 1 and self._pending[start] == f"SAVEPOINT {name}":
            self._pending.pop()  # the block sent nothing: the server need not hear of it
            return
        self._pending.append(f"RELEASE {name}")
        if self._unchecked:
            await self._send([])  # the block's work must have succeeded before the caller moves on

    def _roll_back_to(self, name: str, start: int) -> None:
        """Everything still pending belongs to the block: drop it. If the server saw the savepoint,
        roll back to it, with the next statement sent (it runs first, even after an error)."""
        if len(self._pending) > start and self._pending[start] == f"SAVEPOINT {name}":
            del self._pending[start:]
        else:
            self._pending, self._unchecked = [f"ROLLBACK TO {name}", f"RELEASE {name}"], False

    async def _commit(self) -> None:
        if self._sent or self._pending != ["BEGIN"]:  # else the transaction did nothing
            await self._send(["COMMIT"])


async def _rollback(conn: Any) -> None:
    """After a failed COMMIT the transaction is over already, and this is a no-op. If the connection
    is broken, the pool finds it so and discards it."""
    try:
        await conn.rollback()
    except Exception as exc:
        log.warning("rollback failed: %s", exc)


class PostgresDatabase:
    """One schema per service inside one PostgreSQL database (``search_path`` per connection)."""

    dialect = "postgresql"

    def __init__(self, url: str, schema: str, max_size: int = 8) -> None:
        self.url = url
        self.schema = schema
        self._max_size = max_size
        self._pool: Any = None

    async def open(self) -> None:
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

        async def configure(conn: Any) -> None:
            await conn.execute(f'SET search_path TO "{self.schema}"')

        self._pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self._max_size,
            configure=configure,
            kwargs={"autocommit": True, "prepare_threshold": None},  # we prepare: see _Prepared
            open=False,
        )
        await self._pool.open(wait=True)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def drop_schema(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        """BEGIN goes out with the first statement, COMMIT with the last pending ones."""
        if self._pool is None:
            raise RuntimeError(f"database schema {self.schema} is closed")
        async with self._pool.connection() as conn:
            tx = _PgTx(conn)
            try:
                yield tx
                await tx._commit()
            except BaseException:
                if tx._sent:
                    await _rollback(conn)
                raise

    @asynccontextmanager
    async def _query(self, sql: str, params: Params) -> AsyncIterator[Any]:
        """A cursor on the result of ``sql``, run on its own (autocommit)."""
        from psycopg import AsyncClientCursor

        async with self._pool.connection() as conn:
            cursor, prepared = AsyncClientCursor(conn), _Prepared.of(conn)
            prepares, executes, new = prepared.statements(cursor, [(sql, params)])
            await cursor.execute("; ".join([*prepares, *executes]))
            prepared.names.update(new)
            for _ in prepares:
                cursor.nextset()
            yield cursor

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._query(sql, params) as cursor:
            row: Row | None = await cursor.fetchone()
            return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._query(sql, params) as cursor:
            rows: list[Row] = await cursor.fetchall()
            return rows

    async def run_script(self, statements: Sequence[str]) -> None:
        async with self.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(7243)")  # concurrent starts create once
            for statement in statements:
                await tx.execute(statement)


def ddl(dialect: str, statements: Sequence[str]) -> list[str]:
    """Adapt the few dialect differences in our DDL."""
    if dialect == "postgresql":
        return [
            s.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace(
                " REAL", " DOUBLE PRECISION"
            )
            for s in statements
        ]
    return list(statements)
