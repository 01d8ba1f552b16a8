"""Each service's Dapr subscription routes, sent real CloudEvents envelopes as daprd sends them."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.entrypoints.bootstrap import SERVICES
from services.runtime.events import OutboundEvent
from services.topics import dead_letters_of
from tests.support.dapr_cluster import DaprCluster
from tests.support.platform import eventually

pytestmark = pytest.mark.slow
# uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop exits 0 or -SIGTERM.
GRACEFUL = (0, -signal.SIGTERM)
CLOUDEVENTS = {"Content-Type": "application/cloudevents+json"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaprCluster]:
    cluster = DaprCluster(tmp_path_factory.mktemp("dapr-subs"), SERVICES, max_attempts=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def outbox_message(event: OutboundEvent, stream: str) -> dict[str, Any]:
    """What daprd's outbox delivers: its own CloudEvent (a fresh id each time) around our envelope."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": event.source,
        "type": "com.dapr.event.sent",
        "datacontenttype": "application/json",
        "data": event.envelope(),
        "topic": stream,
        "pubsubname": "pubsub",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }


async def deliver(cluster: DaprCluster, service: str, stream: str, message: Any) -> str:
    async with httpx.AsyncClient(base_url=cluster.url(service)) as client:
        response = await client.post(f"/events/{stream}", content=_json(message), headers=CLOUDEVENTS)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def _json(message: Any) -> bytes:
    return orjson.dumps(message)


def headers(cluster: DaprCluster, role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.tokens.issue(role, subject)}"}


def order_placed(order_id: str, customer: str, amount: int) -> OutboundEvent:
    return OutboundEvent(
        topic="order.placed",
        source="order",
        subject=order_id,
        data={
            "order_id": order_id,
            "customer_id": customer,
            "restaurant_id": "seoul-chicken",
            "amount": amount,
            "payment": {"method": "wallet", "card_token": None},
        },
    )


def test_every_service_declares_its_subscriptions_with_a_dead_letter_topic(cluster: DaprCluster) -> None:
    for service in SERVICES:
        subscriptions = httpx.get(f"{cluster.url(service)}/dapr/subscribe").json()
        assert subscriptions, service
        for sub in subscriptions:
            assert sub["pubsubname"] == "pubsub" and sub["route"] == f"/events/{sub['topic']}"
            assert sub["deadLetterTopic"] == dead_letters_of(service)


async def test_a_duplicate_has_no_second_effect(cluster: DaprCluster) -> None:
    payment = httpx.AsyncClient(base_url=cluster.url("payment"), headers=headers(cluster, "customer", "sub-dup"))
    assert (await payment.post("/wallets/sub-dup/top-ups", json={"amount": 50_000})).status_code == 200
    event = order_placed("sub-order-1", "sub-dup", 20_000)
    first = await deliver(cluster, "payment", "order-events", outbox_message(event, "order-events"))
    again = await deliver(cluster, "payment", "order-events", outbox_message(event, "order-events"))
    assert (first, again) == ("SUCCESS", "SUCCESS")
    assert (await payment.get("/wallets/sub-dup")).json()["balance"] == 30_000, "charged once"
    assert (await payment.get("/payments/sub-order-1")).json()["status"] == "COMPLETED"
    # concurrent copies, as an at-least-once broker may hand them out
    event = order_placed("sub-order-2", "sub-dup", 10_000)
    results = await asyncio.gather(
        *(deliver(cluster, "payment", "order-events", outbox_message(event, "order-events")) for _ in range(8))
    )
    assert set(results) <= {"SUCCESS", "RETRY"}
    assert (await payment.get("/wallets/sub-dup")).json()["balance"] == 20_000, "charged once"
    await payment.aclose()


async def test_a_handler_that_cannot_progress_answers_retry(cluster: DaprCluster) -> None:
    paid = OutboundEvent(
        topic="order.paid",
        source="order",
        data={
            "order_id": "sub-order-3",
            "customer_id": "c",
            "restaurant_id": "not-in-the-catalog-yet",
            "total_price": 1,
            "items": [],
            "delivery": {},
        },
    )
    assert await deliver(cluster, "restaurant", "order-events", outbox_message(paid, "order-events")) == "RETRY"


def handled(cluster: DaprCluster, service: str, consumer: str, outcome: str = "success") -> float:
    """``baedal_events_handled_total`` of one consumer, from the service's /metrics."""
    text = httpx.get(f"{cluster.url(service)}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "baedal_events_handled_total" and sample.labels == {
                "service": service,
                "consumer": consumer,
                "outcome": outcome,
            }:
                return float(sample.value)
    return 0.0


async def test_a_timer_that_arrives_early_is_kept_and_runs_when_due(cluster: DaprCluster) -> None:
    """Not answered RETRY until due (daprd would hold a delivery worker for it all that time, see
    docs/dapr.md): acknowledged at once, kept in the service's database, run when due, and a
    redelivered copy is kept once."""
    before = handled(cluster, "restaurant", "restaurant-accept-deadline")
    due_soon = OutboundEvent(
        topic="ticket.accept-deadline",
        source="restaurant",
        data={"order_id": "sub-order-4", "restaurant_id": "x"},
        deliver_at=time.time() + 1.0,
    )
    message = outbox_message(due_soon, "restaurant-events")
    assert await deliver(cluster, "restaurant", "restaurant-events", message) == "SUCCESS"
    assert await deliver(cluster, "restaurant", "restaurant-events", message) == "SUCCESS"
    assert handled(cluster, "restaurant", "restaurant-accept-deadline") == before, "not run before it is due"

    async def ran() -> bool:
        return handled(cluster, "restaurant", "restaurant-accept-deadline") > before

    await eventually(ran, timeout=10, what="the timer running when due")
    assert handled(cluster, "restaurant", "restaurant-accept-deadline") == before + 1, "kept once, run once"


async def test_messages_not_for_the_service_succeed_without_effect(cluster: DaprCluster) -> None:
    marker = {
        "specversion": "1.0",
        "id": "m",
        "source": "order",
        "type": "com.dapr.event.sent",
        "data": {"baedal": "no-event"},
    }
    assert await deliver(cluster, "payment", "order-events", marker) == "SUCCESS"
    status_changed = OutboundEvent(topic="order.status-changed", source="order", data={"order": {}})
    assert (
        await deliver(cluster, "payment", "order-events", outbox_message(status_changed, "order-events")) == "SUCCESS"
    )


@pytest.mark.parametrize("service", SERVICES)
async def test_a_poison_message_is_dropped_to_the_dead_letter_topic(cluster: DaprCluster, service: str) -> None:
    stream = "restaurant-events"
    if service == "payment":
        stream = "order-events"
    poison = {
        "specversion": "1.0",
        "id": f"p-{service}",
        "source": "x",
        "type": "com.example.unknown",
        "data": "garbage",
    }
    assert await deliver(cluster, service, stream, poison) == "DROP"
    not_json = b"{not json"
    async with httpx.AsyncClient(base_url=cluster.url(service)) as client:
        response = await client.post(f"/events/{stream}", content=not_json, headers=CLOUDEVENTS)
    assert response.json()["status"] == "DROP"


async def test_through_the_broker_a_poison_message_lands_in_each_subscribers_dead_letter_topic(
    cluster: DaprCluster,
) -> None:
    before = len(cluster.fake.dead_letters)
    cluster.fake.publish("pubsub", "order-events", {"not": "a baedal event"})
    subscribers = {"order", "payment", "restaurant", "delivery", "notification"}

    async def every_subscriber_dropped_it() -> bool:
        return {letter.app_id for letter in cluster.fake.dead_letters[before:]} == subscribers

    await eventually(every_subscriber_dropped_it, what="a dead letter from every subscriber")
    letters = cluster.fake.dead_letters[before:]
    assert {letter.app_id for letter in letters} == subscribers
    assert all(letter.reason == "dropped by the app" for letter in letters)
    dead_topics = {topic for _, topic, _ in cluster.fake.published if topic.endswith("-dead-letters")}
    assert dead_topics >= {dead_letters_of(s) for s in subscribers}


async def test_sigterm_lets_an_in_flight_delivery_finish(tmp_path: Path, paygate: str) -> None:
    """A delivery in progress when the pod is told to stop completes (the card is charged and the
    answer is SUCCESS), then the process exits cleanly."""
    async with httpx.AsyncClient() as client:
        (await client.put(f"{paygate}/knobs", json={"latency_ms": 700})).raise_for_status()
        before: int = (await client.get(f"{paygate}/stats")).json()["calls"]

    async def charge_under_way() -> bool:  # the gateway counts a call as it starts, before its latency
        async with httpx.AsyncClient() as client:
            calls: int = (await client.get(f"{paygate}/stats")).json()["calls"]
        return calls > before

    cluster = DaprCluster(
        tmp_path, ["payment"], binding_urls={"paygate": paygate}, env={"BAEDAL_PAYGATE_TIMEOUT_S": "5"}
    )
    cluster.start()
    try:
        event = order_placed("sub-drain-1", "sub-drain", 9_000)
        event = OutboundEvent(
            topic=event.topic,
            source=event.source,
            data={**event.data, "payment": {"method": "card", "card_token": "tok_visa"}},
        )
        delivery = asyncio.create_task(
            deliver(cluster, "payment", "order-events", outbox_message(event, "order-events"))
        )
        await eventually(charge_under_way, what="the charge reaching the gateway")
        cluster.processes["payment"].terminate()
        assert await delivery == "SUCCESS"
    finally:
        codes = cluster.stop()
    assert codes["payment"] in GRACEFUL
    payments = [item for key, item in cluster.fake.stores["payment-state"].items() if key == "payment:sub-drain-1"]
    assert payments and orjson.loads(payments[0].value)["status"] == "COMPLETED"


async def test_an_event_whose_data_the_routing_rules_cannot_read_is_dropped(cluster: DaprCluster) -> None:
    broken = OutboundEvent(topic="delivery.status-changed", source="delivery", data={"delivery": "not an object"})
    assert await deliver(cluster, "order", "delivery-events", outbox_message(broken, "delivery-events")) == "DROP"
