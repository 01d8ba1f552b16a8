"""The pieces that let ``baedal up`` run in two processes, each tested on its own: two dispatchers
over the same databases, each running its own services' loops and waking the other's through a
peer socket pair (here both in one test process, each on its own databases' connections); the peer
itself; and SQLite waiting for another connection's write lock without blocking the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.runtime.embedded.dispatcher import Dispatcher
from services.runtime.embedded.peer import Peer, Wake
from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.events import Event, OutboundEvent
from services.runtime.ports import Put, Subscription
from services.runtime.settings import Settings
from services.runtime.sql.db import SqliteDatabase

SERVICES = ("source", "sink")


class Sink:
    """Counts what it applied, in its own state."""

    def __init__(self, db: ServiceDb) -> None:
        self.store = SqlStateStore(db)

    async def handle(self, event: Event) -> None:
        record = await self.store.get("count")
        value = {"n": (record.value["n"] if record else 0) + 1}
        await self.store.commit([Put("count", value, record.etag if record else None)])

    async def total(self) -> int:
        record = await self.store.get("count")
        return int(record.value["n"]) if record else 0


class Side:
    """One process's view: its own connections to both databases and a dispatcher running ``local``."""

    def __init__(self, root: Path, local: str, peer: Peer) -> None:
        self.dbs = {name: ServiceDb(name, SqliteDatabase(root / f"{name}.db")) for name in SERVICES}
        self.peer = peer
        self.dispatcher = Dispatcher(self.dbs, Settings(data_dir=root), local={local}, peer=peer)
        self.sink = Sink(self.dbs["sink"])
        self.dispatcher.subscribe("sink", Subscription("source.happened", "sink-counter"), self.sink.handle)

    async def start(self) -> None:
        for db in self.dbs.values():
            await db.open()
        self.peer.listen(self.dispatcher.woken, lambda: None)
        await self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()
        self.peer.close()
        for db in self.dbs.values():
            await db.database.close()


@pytest.fixture
async def sides(tmp_path: Path) -> AsyncIterator[tuple[Side, Side]]:
    ours, theirs = Peer.pair()
    source_side = Side(tmp_path, "source", ours)
    sink_side = Side(tmp_path, "sink", Peer(theirs))
    await source_side.start()
    await sink_side.start()
    try:
        yield source_side, sink_side
    finally:
        await source_side.stop()
        await sink_side.stop()


async def publish(side: Side, count: int) -> None:
    store = SqlStateStore(side.dbs["source"])
    for n in range(count):
        await store.commit([], [OutboundEvent(topic="source.happened", data={"n": n}, source="source")])


async def test_events_committed_on_one_side_are_handled_on_the_other_at_once(sides: tuple[Side, Side]) -> None:
    source_side, sink_side = sides
    started = time.monotonic()
    await publish(sink_side, 20)  # committed by the side that does not relay "source": a wake-up crosses
    while await sink_side.sink.total() < 20:
        assert time.monotonic() - started < 10, "events never crossed to the other side"
        await asyncio.sleep(0.01)
    # Both loops idle-poll only every second: faster than that, the wake-ups did it.
    assert time.monotonic() - started < 0.9
    assert await source_side.sink.total() == 20  # one database, seen from either side
    assert await source_side.dispatcher.settled()


async def test_a_pause_asked_on_one_side_stops_the_consumer_on_the_other(sides: tuple[Side, Side]) -> None:
    source_side, sink_side = sides
    source_side.dispatcher.pause("sink")
    await asyncio.sleep(0.05)
    assert sink_side.dispatcher.paused == {"sink"} and source_side.dispatcher.paused == {"sink"}
    await publish(source_side, 3)
    await asyncio.sleep(0.3)
    assert await sink_side.sink.total() == 0
    source_side.dispatcher.resume("sink")
    started = time.monotonic()
    while await sink_side.sink.total() < 3:
        assert time.monotonic() - started < 10, "the resume never reached the other side"
        await asyncio.sleep(0.01)
    assert sink_side.dispatcher.paused == set()


def test_a_dispatcher_refuses_to_leave_services_to_no_one(tmp_path: Path) -> None:
    dbs = {name: ServiceDb(name, SqliteDatabase(tmp_path / f"{name}.db")) for name in SERVICES}
    with pytest.raises(ValueError, match="no peer"):
        Dispatcher(dbs, Settings(data_dir=tmp_path), local={"source"})
    with pytest.raises(ValueError, match="unknown"):
        Dispatcher(dbs, Settings(data_dir=tmp_path), local={"nowhere"}, peer=Peer.pair()[0])


async def test_the_peer_carries_wake_ups_ignores_garbage_and_reports_the_other_end_closing() -> None:
    ours, theirs_socket = Peer.pair()
    theirs = Peer(theirs_socket)
    received: list[tuple[Wake, str]] = []
    gone = asyncio.Event()
    ours.listen(lambda wake, service: received.append((wake, service)), gone.set)
    theirs.send(Wake.WORK, "payment")
    theirs_socket.send(b"nonsense here")
    theirs.send(Wake.PAUSE, "delivery")
    await asyncio.sleep(0.05)
    assert received == [(Wake.WORK, "payment"), (Wake.PAUSE, "delivery")]
    theirs.close()
    await asyncio.wait_for(gone.wait(), 5)
    ours.send(Wake.RELAY, "order")  # the other end is gone: a hint lost, no error
    ours.close()


async def test_a_transaction_waits_for_another_connections_write_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    database = SqliteDatabase(tmp_path / "shared.db")
    await database.open()
    await database.run_script(["CREATE TABLE t (n INTEGER)"])
    other = sqlite3.connect(tmp_path / "shared.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # as the other process would: the write lock is taken
    other.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    clock = asyncio.create_task(ticker())
    started = time.monotonic()
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES (2)")
    waited = time.monotonic() - started
    clock.cancel()
    other.close()
    assert waited >= 0.25, "the transaction did not wait for the other writer"
    assert ticks >= 5, "the event loop was blocked while waiting for the lock"
    assert await database.fetchall("SELECT n FROM t ORDER BY n") == [(1,), (2,)]
    await database.close()


def wal_frames(conn: sqlite3.Connection) -> int:
    """How many frames the WAL holds (a passive checkpoint reports it)."""
    frames: int = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    return frames


async def test_a_wal_kept_growing_by_another_writer_is_rewound(tmp_path: Path) -> None:
    """Another process commits all the time, so SQLite never rewinds the WAL by itself; the
    checkpoint does, and the next commit writes at the WAL's start instead of growing it."""
    database = SqliteDatabase(tmp_path / "grown.db")
    await database.open()
    await database.run_script(["CREATE TABLE t (blob TEXT)"])
    other = sqlite3.connect(tmp_path / "grown.db", isolation_level=None)
    checkpointer = sqlite3.connect(tmp_path / "grown.db", isolation_level=None)
    for _ in range(50):
        other.execute("INSERT INTO t VALUES (?)", ("x" * 4096,))
    assert wal_frames(checkpointer) > 50
    size = (tmp_path / "grown.db-wal").stat().st_size
    database._checkpoint(checkpointer)
    other.execute("INSERT INTO t VALUES ('after')")
    assert wal_frames(checkpointer) <= 3, "the commit after the checkpoint went on growing the WAL"
    assert (tmp_path / "grown.db-wal").stat().st_size <= size
    assert (await database.fetchone("SELECT COUNT(*) FROM t")) == (51,)
    for conn in (other, checkpointer):
        conn.close()
    await database.close()


async def test_a_checkpoint_does_not_wait_for_another_writers_transaction(tmp_path: Path) -> None:
    """Another process's transaction is open: the checkpoint gives up rewinding (next time, then)
    instead of holding every writer while it waits; the transaction commits, nothing is lost."""
    database = SqliteDatabase(tmp_path / "busy.db")
    await database.open()
    await database.run_script(["CREATE TABLE t (n INTEGER)"])
    other = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    checkpointer = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    database._checkpoint(checkpointer)  # returns: RESTART is busy, and gives up after its window
    other.execute("COMMIT")
    database._checkpoint(checkpointer)
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES (2)")
    assert await database.fetchall("SELECT n FROM t ORDER BY n") == [(1,), (2,)]
    assert wal_frames(checkpointer) <= 3
    for conn in (other, checkpointer):
        conn.close()
    await database.close()
