"""The delivery service's steps on the in-memory store: the delivery an order's status opens,
releases or withdraws, and the riders' claim, where the first claim wins even when the second had
already read the delivery AVAILABLE."""

from __future__ import annotations

from typing import Any

import pytest

from services import topics
from services.delivery.domain import Delivery, DeliveryStatus
from services.delivery.handlers import SOURCE, DeliveryService, delivery_key
from services.runtime.errors import DomainError
from services.runtime.events import Event, OutboundEvent
from services.runtime.ports import RetryLater
from tests.unit.fakes import FakeBoard, Interfering, incoming, restaurant, topics_of


@pytest.fixture
async def deliveries() -> DeliveryService:
    service = DeliveryService(Interfering(), FakeBoard())
    await service.restaurants.on_upserted(restaurant("seoul-chicken"))
    return service


def events(service: DeliveryService) -> list[OutboundEvent]:
    return service.store.events  # type: ignore[attr-defined, no-any-return]


def order_status(status: str, restaurant_id: str = "seoul-chicken", express: bool = True) -> Event:
    order: dict[str, Any] = {
        "id": "o1",
        "customer_id": "mina",
        "restaurant_id": restaurant_id,
        "status": status,
        "delivery": {"address": "서울 1", "lat": 37.51, "lon": 127.01, "express": express},
    }
    return incoming(topics.ORDER_STATUS_CHANGED, order=order, version=1)


async def delivery(service: DeliveryService) -> Delivery:
    found = await service.get("o1")
    assert found is not None
    return found


async def ready(service: DeliveryService) -> None:
    await service.on_order_status(order_status("ACCEPTED"))
    await service.on_order_status(order_status("READY"))


async def test_an_accepted_order_opens_a_waiting_delivery_that_ready_releases(deliveries: DeliveryService) -> None:
    await deliveries.on_order_status(order_status("ACCEPTED"))
    waiting = await delivery(deliveries)
    assert (waiting.status, waiting.express, waiting.pickup, waiting.dropoff) == (
        DeliveryStatus.WAITING,
        True,
        {"lat": 37.5, "lon": 127.0},
        {"address": "서울 1", "lat": 37.51, "lon": 127.01},
    )
    await deliveries.on_order_status(order_status("COOKING"))  # already open: nothing changes
    await deliveries.on_order_status(order_status("READY"))
    assert (await delivery(deliveries)).status is DeliveryStatus.AVAILABLE
    opened, released = events(deliveries)
    assert (opened.topic, opened.source, opened.subject) == (topics.DELIVERY_STATUS_CHANGED, SOURCE, "o1")
    assert (opened.data["delivery"]["status"], opened.data["version"]) == ("WAITING", 1)
    assert (released.data["delivery"]["status"], released.data["version"]) == ("AVAILABLE", 2)
    assert released.data["delivery"] == (await delivery(deliveries)).to_dict()


async def test_a_restaurant_not_in_the_catalog_yet_means_retry_later(deliveries: DeliveryService) -> None:
    with pytest.raises(RetryLater):
        await deliveries.on_order_status(order_status("READY", restaurant_id="unknown"))
    assert await deliveries.get("o1") is None and events(deliveries) == []


async def test_the_first_claim_wins(deliveries: DeliveryService) -> None:
    await ready(deliveries)
    claimed = await deliveries.claim("o1", "rider-a")
    assert (claimed.status, claimed.rider_id) == (DeliveryStatus.CLAIMED, "rider-a")
    again = await deliveries.claim("o1", "rider-a")
    assert again.status is DeliveryStatus.CLAIMED and len(events(deliveries)) == 3, "claiming again: no event"
    with pytest.raises(DomainError) as lost:
        await deliveries.claim("o1", "rider-b")
    assert lost.value.code == "DELIVERY_ALREADY_CLAIMED"
    assert (await delivery(deliveries)).rider_id == "rider-a"


async def test_a_second_claim_that_read_the_delivery_available_loses_on_its_fresh_read(
    deliveries: DeliveryService,
) -> None:
    await ready(deliveries)
    store = deliveries.store
    assert isinstance(store, Interfering)
    reads = store.reads[delivery_key("o1")]
    store.interfere(delivery_key("o1"), lambda: deliveries.claim("o1", "rider-a"))
    with pytest.raises(DomainError) as lost:
        await deliveries.claim("o1", "rider-b")  # read AVAILABLE; rider-a committed meanwhile
    assert lost.value.code == "DELIVERY_ALREADY_CLAIMED"
    assert store.reads[delivery_key("o1")] - reads == 3, "rider-b read, rider-a read, rider-b read again"
    winner = await delivery(deliveries)
    assert (winner.rider_id, winner.version) == ("rider-a", 3)
    claims = [e for e in events(deliveries) if e.data["delivery"]["status"] == "CLAIMED"]
    assert [e.data["delivery"]["rider_id"] for e in claims] == ["rider-a"]


async def test_only_the_claiming_rider_picks_up_and_delivers(deliveries: DeliveryService) -> None:
    await ready(deliveries)
    await deliveries.claim("o1", "rider-a")
    with pytest.raises(DomainError) as forbidden:
        await deliveries.pick_up("o1", "rider-b")
    assert forbidden.value.code == "FORBIDDEN"
    await deliveries.pick_up("o1", "rider-a")
    delivered = await deliveries.deliver("o1", "rider-a")
    assert delivered.status is DeliveryStatus.DELIVERED
    statuses = [e.data["delivery"]["status"] for e in events(deliveries)]
    assert statuses == ["WAITING", "AVAILABLE", "CLAIMED", "PICKED_UP", "DELIVERED"]
    with pytest.raises(DomainError) as missing:
        await deliveries.claim("nope", "rider-a")
    assert missing.value.code == "DELIVERY_NOT_FOUND"


async def test_a_cancelled_order_withdraws_its_delivery(deliveries: DeliveryService) -> None:
    await deliveries.on_order_status(order_status("CANCELLED"))  # no delivery yet: nothing to do
    assert events(deliveries) == []
    await ready(deliveries)
    await deliveries.on_order_status(order_status("CANCELLING"))
    await deliveries.on_order_status(order_status("CANCELLED"))
    assert (await delivery(deliveries)).status is DeliveryStatus.CANCELLED
    assert topics_of(events(deliveries)) == [topics.DELIVERY_STATUS_CHANGED] * 3
