"""Contract tests of the Dapr adapters: the real ``dapr`` SDK over gRPC against the fake sidecar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dapr.clients.exceptions import DaprGrpcError, DaprInternalError
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.conf import settings as dapr_settings

from services.payment.cards import GatewayUnavailable
from services.runtime.dapr.outbox import SCHEMA as OUTBOX_SCHEMA
from services.runtime.dapr.outbox import OutboxRelay
from services.runtime.dapr.paygate import DaprPaymentGateway
from services.runtime.dapr.sidecar import DaprOutputBinding, DaprPublisher, Sidecar
from services.runtime.dapr.state import (
    CURRENT_DELIVERY,
    DIRECTORY_SCHEMA,
    DaprStateStore,
    Delivery,
    KeyDirectory,
    is_conflict,
)
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import OutboundEvent
from services.runtime.paygate import Guard
from services.runtime.ports import ConcurrencyConflict, Delete, Put, retry_on_conflict
from services.runtime.sql.db import SqliteDatabase
from tests.integration.test_notifications import Webhook, serving
from tests.support.fake_dapr import FakeDapr
from tests.support.platform import eventually
from tests.support.server import free_port


@pytest.fixture
def fake(paygate_process: str) -> Iterator[FakeDapr]:
    fake = FakeDapr(binding_urls={"paygate": paygate_process})
    fake.add_app("order", free_port())  # no app listens: these tests talk to the sidecar only
    fake.add_app("payment", free_port())
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


async def connect(fake: FakeDapr, app_id: str, monkeypatch: pytest.MonkeyPatch) -> Sidecar:
    sidecar = fake.sidecars[app_id]
    monkeypatch.setattr(dapr_settings, "DAPR_GRPC_PORT", sidecar.grpc_port)
    monkeypatch.setattr(dapr_settings, "DAPR_HTTP_PORT", sidecar.http_port)
    connection = Sidecar()
    await connection.connect()
    return connection


@pytest.fixture
async def order_sidecar(fake: FakeDapr, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sidecar]:
    sidecar = await connect(fake, "order", monkeypatch)
    yield sidecar
    await sidecar.close()


@pytest.fixture
async def store(order_sidecar: Sidecar, tmp_path: Path) -> AsyncIterator[DaprStateStore]:
    db = ServiceDb("order", SqliteDatabase(tmp_path / "order.db"))
    await db.open([*DIRECTORY_SCHEMA, *OUTBOX_SCHEMA])
    outbox = OutboxRelay(order_sidecar, "order-state", "pubsub", "order-events", db)
    outbox.start()
    yield DaprStateStore(order_sidecar, "order", "order-state", KeyDirectory(db), outbox)
    await outbox.stop()
    await db.database.close()


def event(topic: str = "order.placed", **data: Any) -> OutboundEvent:
    return OutboundEvent(topic=topic, data=data or {"n": 1}, source="order")


async def published(fake: FakeDapr, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02)):
        if len(fake.published) >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    return [e for _, _, e in fake.published]


async def test_a_stale_etag_is_a_conflict_and_a_retried_step_wins_from_a_fresh_read(store: DaprStateStore) -> None:
    await store.commit([Put("order:1", {"count": 0}, None)])
    first = await store.get("order:1")
    assert first is not None and first.value == {"count": 0}
    await store.commit([Put("order:1", {"count": 1}, first.etag)])
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Put("order:1", {"count": 99}, first.etag)])
    with pytest.raises(ConcurrencyConflict, match="no item was updated"):  # PostgreSQL v2's words
        await store.commit([Put("order:1", {"count": 99}, None)])  # first-write on an existing key

    async def increment() -> None:
        record = await store.get("order:1")
        assert record is not None
        await asyncio.sleep(0.01)  # let the others read the same ETag
        await store.commit([Put("order:1", {"count": record.value["count"] + 1}, record.etag)])

    await asyncio.gather(*(retry_on_conflict(increment) for _ in range(10)))
    final = await store.get("order:1")
    assert final is not None and final.value == {"count": 11}, "no increment may be lost"


async def test_the_sdk_errors_of_save_and_delete_are_recognised_as_conflicts(order_sidecar: Sidecar) -> None:
    client = order_sidecar.client
    await client.save_state("order-state", "k", b"1")
    current = await client.get_state("order-state", "k")
    with pytest.raises(DaprInternalError) as saved:
        await client.save_state("order-state", "k", b"2", etag="999999")
    assert is_conflict(saved.value), "async save_state keeps the ABORTED status on __cause__"
    with pytest.raises(DaprInternalError) as first_write:
        await client.save_state("order-state", "k", b"2", options=StateOptions(concurrency=Concurrency.first_write))
    assert is_conflict(first_write.value)
    with pytest.raises(DaprGrpcError) as deleted:
        await client.delete_state("order-state", "k", etag="999999")
    assert is_conflict(deleted.value)
    await client.delete_state("order-state", "k", etag=current.etag)
    assert not (await client.get_state("order-state", "k")).data


async def test_a_transaction_is_atomic_and_its_events_leave_only_after_it_commits(
    store: DaprStateStore, fake: FakeDapr
) -> None:
    await store.commit([Put("order:a", {"v": 1}, None)])
    record = await store.get("order:a")
    assert record is not None
    with pytest.raises(ConcurrencyConflict):
        await store.commit(
            [Put("order:new", {"v": 1}, None), Put("order:a", {"v": 2}, "stale")], [event(n=1), event(n=2)]
        )
    assert await store.get("order:new") is None, "nothing of a failed transaction is written"
    assert await store.outbox.pending() == 0, "nor left for the relay"

    placed, changed, third = event(n=1), event("order.status-changed", n=2), event("order.paid", n=3)
    await store.commit([Put("order:a", {"v": 2}, record.etag)], [placed, changed, third])
    envelopes = await published(fake, 3)
    assert sorted(e["id"] for e in envelopes) == sorted([placed.id, changed.id, third.id]), "our CloudEvents"
    assert all(topic == "order-events" for _, topic, _ in fake.published)
    assert (await store.get("order:a")).value == {"v": 2}  # type: ignore[union-attr]

    async def relayed() -> bool:
        return await store.outbox.pending() == 0 and await store.get(f"outbox:{placed.id}") is None

    await eventually(relayed, timeout=5, what="the outbox keys deleted once published")
    assert not fake.warnings, fake.warnings


async def test_events_committed_but_not_relayed_are_swept_after_a_crash(
    store: DaprStateStore, fake: FakeDapr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after its commit, before the relay published: the outbox key is in the
    store and listed in the service's database, so the sweep (of this or another replica) relays it."""
    monkeypatch.setattr("services.runtime.dapr.outbox.SWEEP_AFTER_S", 0.0)
    lost = event(n=7)
    monkeypatch.setattr(store.outbox, "committed", lambda envelopes: None)  # the relay never hears of it
    await store.commit([Put("order:s", {"v": 1}, None)], [lost])
    assert await store.get(f"outbox:{lost.id}") is not None
    assert await store.outbox.sweep() == 1
    assert [e["id"] for e in await published(fake, 1)] == [lost.id]
    assert await store.outbox.pending() == 0


async def test_keys_with_the_sidecars_separator_are_stored_escaped(store: DaprStateStore, fake: FakeDapr) -> None:
    """daprd refuses a key containing ``||`` (it stores ``<app id>||<key>``); an Idempotency-Key may."""
    key = "idem:cust||1:a%7Cb"
    await store.commit([Put(key, {"v": 1}, None)])
    record = await store.get(key)
    assert record is not None and record.value == {"v": 1}
    assert [r.key for r in await store.scan("idem:")] == [key]
    assert "idem:cust%7C%7C1:a%257Cb" in fake.stores["order-state"]
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Put(key, {"v": 2}, None)])


async def test_a_delete_needs_the_current_etag(store: DaprStateStore) -> None:
    await store.commit([Put("order:d", {"v": 1}, None)])
    record = await store.get("order:d")
    assert record is not None
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Delete("order:d", "stale")])
    await store.commit([Delete("order:d", record.etag)])
    assert await store.get("order:d") is None


async def test_scan_lists_every_committed_key_and_skips_failed_ones(store: DaprStateStore) -> None:
    for n in range(5):
        await store.commit([Put(f"order:{n}", {"n": n}, None)])
    await store.commit([Put("wallet:x", {"n": 0}, None)])
    with pytest.raises(ConcurrencyConflict):
        await store.commit([Put("order:9", {"n": 9}, None), Put("order:0", {"n": 0}, None)])
    assert [r.value["n"] for r in await store.scan("order:")] == [0, 1, 2, 3, 4]


async def test_the_inbox_makes_a_redelivered_event_a_no_op(store: DaprStateStore) -> None:
    await store.commit([Put("order:i", {"n": 0}, None)])

    async def handle_once() -> None:
        record = await store.get("order:i")
        assert record is not None
        await store.commit([Put("order:i", {"n": record.value["n"] + 1}, record.etag)])

    token = CURRENT_DELIVERY.set(Delivery("order-on-x", "event-1"))
    try:
        await handle_once()
    finally:
        CURRENT_DELIVERY.reset(token)
    assert await store.handled("order-on-x", "event-1")
    assert not await store.handled("order-on-x", "event-2")


async def test_an_event_of_another_service_cannot_leave_through_this_outbox(store: DaprStateStore) -> None:
    with pytest.raises(ValueError, match="cannot publish"):
        await store.commit([Put("order:z", {}, None)], [OutboundEvent("payment.completed", {}, "order")])


async def test_single_and_bulk_publish_reach_the_owning_stream(fake: FakeDapr, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = await connect(fake, "order", monkeypatch)
    publisher = DaprPublisher(sidecar, "pubsub")
    one = event()
    await publisher.publish(one)
    many = [event(n=n) for n in range(3)]
    await publisher.publish_all(many)
    events = await published(fake, 4)
    assert [e["id"] for e in events] == [one.id, *(e.id for e in many)], "our CloudEvents, not wrapped again"
    assert {topic for _, topic, _ in fake.published} == {"order-events"}
    assert all(e["type"] == "io.baedal.order.placed.v1" and e["pubsubname"] == "pubsub" for e in events)
    with pytest.raises(DaprGrpcError, match="not allowed"):  # publishingScopes: order may not write here
        await sidecar.client.publish_event("pubsub", "payment-events", b"{}")
    await sidecar.close()


async def test_the_paygate_binding_charges_and_fails_fast_when_the_gateway_is_down(
    fake: FakeDapr, monkeypatch: pytest.MonkeyPatch, paygate: str
) -> None:
    sidecar = await connect(fake, "payment", monkeypatch)
    gateway = DaprPaymentGateway(sidecar, "paygate", Guard(timeout_s=2.0, failure_threshold=2))
    approved = await gateway.charge("order-b1", "tok_visa", 10_000)
    assert approved.approved and approved.charge_id
    again = await gateway.charge("order-b1", "tok_visa", 10_000)
    assert again.charge_id == approved.charge_id, "the order id is the idempotency key"
    fake.binding_urls["paygate"] = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    for _ in range(2):
        with pytest.raises(GatewayUnavailable):
            await gateway.charge("order-b2", "tok_visa", 10_000)
    calls = len(fake.binding_calls)
    with pytest.raises(GatewayUnavailable, match="circuit open"):
        await gateway.charge("order-b3", "tok_visa", 10_000)
    assert len(fake.binding_calls) == calls, "an open circuit does not call the binding"
    await sidecar.close()


async def test_the_notify_binding_posts_the_message_and_scopes_are_enforced(
    fake: FakeDapr, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = Webhook()
    async with serving(hook) as url:
        fake.binding_urls["notify"] = url
        sidecar = await connect(fake, "payment", monkeypatch)
        with pytest.raises(grpc.RpcError, match="not found"):  # notify is scoped to notification
            await DaprOutputBinding(sidecar, "notify").invoke("create", {"id": "n1"})
        await sidecar.close()
        fake.add_app("notification", free_port())
        sidecar = await connect(fake, "notification", monkeypatch)
        await DaprOutputBinding(sidecar, "notify").invoke("create", {"id": "n1", "message": "배달 완료"})
        await sidecar.close()
    assert hook.received == [{"id": "n1", "message": "배달 완료"}]
