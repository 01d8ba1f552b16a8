"""The unit of work: a step's writes are guarded by what it read, its writes and events commit
together, a step that raises commits nothing, and a conflict re-runs the whole step from fresh
reads (20 times at most)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services import topics
from services.runtime.errors import DomainError
from services.runtime.events import OutboundEvent
from services.runtime.memory import MemoryStateStore
from services.runtime.ports import ConcurrencyConflict, Put, Write
from services.runtime.unit_of_work import TRIES, UnitOfWork, run_step
from services.topics import DomainEvent
from tests.unit.fakes import Interfering


async def value(store: MemoryStateStore, key: str) -> object:
    record = await store.get(key)
    return record.value if record else None


async def test_a_step_commits_its_writes_and_its_events_at_once() -> None:
    store = MemoryStateStore()
    await store.commit([Put("order:a", {"n": 1}, None)])

    async def step(uow: UnitOfWork) -> str:
        record = await uow.get("order:a")
        assert record is not None
        uow.put("order:a", {"n": record.value["n"] + 1})
        uow.put("order:b", {"n": 0})  # not read: a create
        uow.emit("a", [DomainEvent(topics.ORDER_PAID, {"n": 2}), DomainEvent("x.timer", {}, deliver_at=99.0)])
        uow.publish(OutboundEvent(topic="catalog.restaurant-upserted", data={}, source="other", id="fixed"))
        return "done"

    assert await run_step(store, step, "order") == "done"
    assert await value(store, "order:a") == {"n": 2}
    assert await value(store, "order:b") == {"n": 0}
    paid, timer, finished = store.events
    assert (paid.topic, paid.data, paid.source, paid.subject, paid.deliver_at) == (
        "order.paid",
        {"n": 2},
        "order",
        "a",
        None,
    )
    assert (timer.topic, timer.deliver_at) == ("x.timer", 99.0)
    assert (finished.source, finished.id) == ("other", "fixed")


async def test_a_step_that_raises_commits_nothing() -> None:
    store = MemoryStateStore()

    async def step(uow: UnitOfWork) -> None:
        await uow.get("order:a")
        uow.put("order:a", {"n": 1})
        uow.emit("a", [DomainEvent(topics.ORDER_PAID, {})])
        raise DomainError("INVALID_STATE", "no")

    with pytest.raises(DomainError):
        await run_step(store, step, "order")
    assert await store.scan("") == [] and store.events == []


async def test_a_step_that_stages_nothing_does_not_commit() -> None:
    store = Interfering()

    async def step(uow: UnitOfWork) -> None:
        await uow.get("order:a")

    await run_step(store, step)
    assert store.commits == []


async def test_a_conflict_runs_the_whole_step_again_from_fresh_reads() -> None:
    store = Interfering()
    await store.commit([Put("wallet:c", {"balance": 100}, None)])

    async def competing_deposit() -> None:
        record = await store.get("wallet:c")
        assert record is not None
        await store.commit([Put("wallet:c", {"balance": record.value["balance"] + 50}, record.etag)])

    runs: list[int] = []

    async def withdraw(uow: UnitOfWork) -> int:
        record = await uow.get("wallet:c")
        assert record is not None
        runs.append(record.value["balance"])
        balance: int = record.value["balance"] - 30
        uow.put("wallet:c", {"balance": balance})
        uow.emit("c", [DomainEvent(topics.PAYMENT_COMPLETED, {"balance": balance})])
        return balance

    store.interfere("wallet:c", competing_deposit)
    assert await run_step(store, withdraw, "payment") == 120
    assert runs == [100, 150], "the second run read what the competitor wrote"
    assert await value(store, "wallet:c") == {"balance": 120}, "no deposit lost, one withdrawal"
    assert [e.data for e in store.events] == [{"balance": 120}], "only the committed run's events"


async def test_a_key_read_as_missing_must_still_be_missing_at_commit() -> None:
    store = Interfering()

    async def competing_create() -> None:
        await store.commit([Put("idem:k", {"who": "competitor"}, None)])

    async def create_once(uow: UnitOfWork) -> str:
        existing = await uow.get("idem:k")
        if existing is not None:
            return str(existing.value["who"])
        uow.put("idem:k", {"who": "me"})
        return "me"

    store.interfere("idem:k", competing_create)
    assert await run_step(store, create_once) == "competitor"
    assert await value(store, "idem:k") == {"who": "competitor"}


async def test_a_step_that_always_conflicts_gives_up_after_twenty_runs() -> None:
    class AlwaysConflicting(MemoryStateStore):
        async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
            raise ConcurrencyConflict("always")

    runs = 0

    async def step(uow: UnitOfWork) -> None:
        nonlocal runs
        runs += 1
        uow.put("k", {})

    with pytest.raises(ConcurrencyConflict):
        await run_step(AlwaysConflicting(), step)
    assert runs == TRIES == 20


async def test_reads_are_remembered_and_deletes_guarded_by_them() -> None:
    store = Interfering()
    await store.commit([Put("k", {"n": 1}, None)])

    async def delete(uow: UnitOfWork) -> None:
        first, again = await uow.get("k"), await uow.get("k")
        assert first is again, "one step sees one version of a record"
        uow.delete("k")

    await run_step(store, delete)
    assert store.reads["k"] == 1 and await store.get("k") is None

    async def delete_unread(uow: UnitOfWork) -> None:
        uow.delete("k")

    with pytest.raises(KeyError):
        await run_step(store, delete_unread)


async def test_emitting_needs_a_source() -> None:
    async def step(uow: UnitOfWork) -> None:
        uow.emit("a", [DomainEvent(topics.ORDER_PAID, {})])

    with pytest.raises(TypeError):
        await run_step(MemoryStateStore(), step)
