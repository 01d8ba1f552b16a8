"""The embedded dispatcher on its own: at-least-once delivery with no second effect, retries with
growing backoff, dead letters after the attempt budget, and replay."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from services.runtime.clock import epoch
from services.runtime.embedded.dispatcher import Dispatcher
from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.events import Event, OutboundEvent
from services.runtime.ports import DropEvent, Put, Subscription
from services.runtime.settings import ChaosSettings, Settings
from services.runtime.sql.db import PostgresDatabase, SqliteDatabase
from tests.support.platform import PG_URL, require_postgres


class Counter:
    """A consumer that counts what it applied (in its own state, like a real handler) and can be
    told to fail. It notes each attempt: when it ran, and when the dispatcher had scheduled it."""

    def __init__(self, store: SqlStateStore, db: ServiceDb) -> None:
        self.store = store
        self.db = db
        self.failures_left = 0
        self.poison = False
        self.attempts: list[tuple[float, float]] = []

    async def handle(self, event: Event) -> None:
        row = await self.db.fetchone(
            "SELECT MIN(due_at) FROM deliveries WHERE consumer = 'sink-counter' AND event_id = ?", (event.id,)
        )
        assert row is not None
        self.attempts.append((epoch(), float(row[0])))
        if self.poison:
            raise DropEvent("cannot ever handle this")
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("transient")
        record = await self.store.get("count")
        value = {"n": (record.value["n"] if record else 0) + event.data["add"]}
        await self.store.commit([Put("count", value, record.etag if record else None)])

    async def total(self) -> int:
        record = await self.store.get("count")
        return int(record.value["n"]) if record else 0


@pytest.fixture
def duplicates() -> bool:
    """Deliver every event twice (the relay's crash case, forced), unless a test says otherwise."""
    return True


@pytest.fixture
async def bus(tmp_path: Path, duplicates: bool) -> AsyncIterator[tuple[Dispatcher, SqlStateStore, Counter]]:
    settings = Settings(
        data_dir=tmp_path,
        max_attempts=4,
        backoff_base_s=0.05,
        backoff_cap_s=1.0,
        chaos=ChaosSettings(duplicate_rate=1.0 if duplicates else 0.0, shuffle=True),
    )
    dbs = {name: ServiceDb(name, SqliteDatabase(tmp_path / f"{name}.db")) for name in ("source", "sink")}
    for db in dbs.values():
        await db.open()
    dispatcher = Dispatcher(dbs, settings)
    counter = Counter(SqlStateStore(dbs["sink"]), dbs["sink"])
    dispatcher.subscribe("sink", Subscription("numbers", "sink-counter"), counter.handle)
    await dispatcher.start()
    yield dispatcher, SqlStateStore(dbs["source"]), counter
    await dispatcher.stop()
    for db in dbs.values():
        await db.database.close()


def number(add: int) -> OutboundEvent:
    return OutboundEvent(topic="numbers", data={"add": add}, source="source")


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_every_event_is_applied_exactly_once_although_delivered_twice(bus) -> None:
    dispatcher, source, counter = bus
    for n in range(1, 51):
        await source.commit([], [number(n)])
    await until(lambda: dispatcher.settled())
    assert await counter.total() == sum(range(1, 51))  # every copy was delivered twice (duplicate_rate=1)


@pytest.mark.parametrize("duplicates", [False])  # one copy: every attempt is this one event's
async def test_transient_failures_are_retried_with_growing_backoff(bus) -> None:
    dispatcher, source, counter = bus
    counter.failures_left = 3
    await source.commit([], [number(7)])
    await until(lambda: _total_is(counter, 7))
    assert len(counter.attempts) == 4
    # The delay the dispatcher chose after each failure: the retry's due time minus when the failed
    # attempt ran (not the gap between attempts, which any scheduling delay would stretch).
    delays = [due - ran for (ran, _), (_, due) in zip(counter.attempts, counter.attempts[1:], strict=False)]
    for failure, delay in enumerate(delays):
        base = 0.05 * 2**failure  # backoff_base_s doubled per failure, with jitter in [base/2, base]
        assert delay >= base / 2, f"retry {failure + 1} after {delay:.3f} s, backoff {base} s: {delays}"
    assert delays[2] > delays[0], f"backoff should grow: {delays}"
    assert not await dispatcher.dead_letters()


async def _total_is(counter: Counter, expected: int) -> bool:
    return await counter.total() == expected


async def test_exhausted_retries_dead_letter_then_replay_applies_once(bus) -> None:
    dispatcher, source, counter = bus
    counter.failures_left = 1000
    await source.commit([], [number(5)])

    async def dead() -> bool:
        return len(await dispatcher.dead_letters()) >= 1

    await until(dead)
    letters = await dispatcher.dead_letters()
    assert letters[0].consumer == "sink-counter" and letters[0].topic == "numbers"
    assert letters[0].attempts == 4 and "transient" in letters[0].error
    assert letters[0].envelope["data"] == {"add": 5}
    assert await counter.total() == 0

    counter.failures_left = 0  # the cause is fixed
    for letter in await dispatcher.dead_letters():
        assert await dispatcher.replay(letter.id)
    await until(lambda: _total_is(counter, 5))
    await until(lambda: dispatcher.settled())
    assert await counter.total() == 5, "the duplicate copy must not apply it twice"
    assert not await dispatcher.dead_letters()
    assert not await dispatcher.replay("sink-999999")


async def test_a_poison_message_is_dead_lettered_at_once(bus) -> None:
    dispatcher, source, counter = bus
    counter.poison = True
    await source.commit([], [number(1)])

    async def dead() -> bool:
        return len(await dispatcher.dead_letters()) >= 1

    await until(dead)
    letter = (await dispatcher.dead_letters())[0]
    assert letter.attempts == 1 and letter.error.startswith("dropped")


async def test_timers_wait_until_due(bus) -> None:
    dispatcher, source, counter = bus
    due = time.time() + 1.5
    await source.commit([], [OutboundEvent(topic="numbers", data={"add": 3}, source="source", deliver_at=due)])

    async def queued_at_the_sink() -> bool:
        scheduled: int = (await dispatcher.backlog())["sink"]["scheduled"]
        return scheduled >= 1

    await until(queued_at_the_sink)
    assert await counter.total() == 0
    await until(lambda: _total_is(counter, 3))
    assert all(ran >= due for ran, _ in counter.attempts), "no copy of the timer was handled before it was due"


async def test_a_batch_consumer_applies_each_event_once_and_falls_back_on_failure(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        max_attempts=3,
        backoff_base_s=0.02,
        backoff_cap_s=0.1,
        chaos=ChaosSettings(duplicate_rate=1.0),
    )
    dbs = {name: ServiceDb(name, SqliteDatabase(tmp_path / f"{name}.db")) for name in ("source", "sink")}
    for db in dbs.values():
        await db.open()
    sink = SqlStateStore(dbs["sink"])
    calls: list[int] = []
    broken = {"on": True}

    async def add_all(events) -> None:
        calls.append(len(events))
        if broken["on"] and len(events) > 1:
            raise RuntimeError("this batch fails as a whole")
        record = await sink.get("count")
        value = {"n": (record.value["n"] if record else 0) + sum(e.data["add"] for e in events)}
        await sink.commit([Put("count", value, record.etag if record else None)])

    dispatcher = Dispatcher(dbs, settings)
    dispatcher.subscribe_batch("sink", Subscription("numbers", "sink-batch"), add_all)
    await dispatcher.start()
    try:
        source = SqlStateStore(dbs["source"])
        await source.commit([], [number(n) for n in range(1, 21)])
        await until(lambda: dispatcher.settled())
        record = await sink.get("count")
        assert record is not None and record.value["n"] == sum(range(1, 21))  # 40 copies, 20 effects
        assert max(calls) > 1, "events arrived as a batch"
        assert not await dispatcher.dead_letters(), "one by one, every event succeeded"

        broken["on"] = False
        await source.commit([], [number(100) for _ in range(10)])
        await until(lambda: dispatcher.settled())
        record = await sink.get("count")
        assert record is not None and record.value["n"] == sum(range(1, 21)) + 1000
    finally:
        await dispatcher.stop()
        for db in dbs.values():
            await db.database.close()


@pytest.fixture
async def service_dbs(backend: str, tmp_path: Path) -> AsyncIterator[dict[str, ServiceDb]]:
    """A source and a sink database on this test's backend."""
    databases: dict[str, PostgresDatabase | SqliteDatabase]
    if backend == "postgresql":
        await require_postgres()
        prefix = f"disp{uuid.uuid4().hex[:10]}_"
        databases = {name: PostgresDatabase(PG_URL, f"{prefix}{name}") for name in ("source", "sink")}
    else:
        databases = {name: SqliteDatabase(tmp_path / f"{name}.db") for name in ("source", "sink")}
    dbs = {name: ServiceDb(name, database) for name, database in databases.items()}
    for db in dbs.values():
        await db.open()
    yield dbs
    for database in databases.values():
        await database.close()
        if isinstance(database, PostgresDatabase):
            await database.drop_schema()


@pytest.mark.parametrize("kind", ["one-by-one", "batch"])
async def test_a_second_copy_in_a_later_batch_has_no_second_effect(
    service_dbs: dict[str, ServiceDb], tmp_path: Path, kind: str
) -> None:
    """The copy a relay sends again after crashing between copying and deleting arrives in a later
    worker batch than the first; the inbox, not the batch, must recognise it. The test drives the
    relay and the worker itself (the dispatcher is not started), one batch at a time."""
    dispatcher = Dispatcher(service_dbs, Settings(data_dir=tmp_path))
    sink = SqlStateStore(service_dbs["sink"])

    async def add_all(events: Sequence[Event]) -> None:
        record = await sink.get("count")
        value = {"n": (record.value["n"] if record else 0) + sum(e.data["add"] for e in events)}
        await sink.commit([Put("count", value, record.etag if record else None)])

    async def add(event: Event) -> None:
        await add_all([event])

    if kind == "batch":
        dispatcher.subscribe_batch("sink", Subscription("numbers", "sink-count"), add_all)
    else:
        dispatcher.subscribe("sink", Subscription("numbers", "sink-count"), add)
    source = SqlStateStore(service_dbs["source"])
    five = number(5)
    await source.commit([], [five])
    assert await dispatcher.relay_once("source") == 1
    assert (await dispatcher.work_once("sink"))[0] == 1
    await source.commit([], [five, number(7)])  # the same event (same id) again, and a new one
    assert await dispatcher.relay_once("source") == 2
    assert (await dispatcher.work_once("sink"))[0] == 2
    assert await dispatcher.settled()
    record = await sink.get("count")
    assert record is not None and record.value["n"] == 5 + 7, "the second copy of +5 was applied again"
