"""The restaurant service's steps on the in-memory store: the ticket ``order.paid`` opens (accepted
at once, or waiting for the owner with an accept-deadline timer), the owner's decisions and the
deadline, a cancel's tombstone, and the owner's availability overrides."""

from __future__ import annotations

import pytest

from services import topics
from services.restaurant.domain import Ticket, TicketStatus
from services.restaurant.handlers import SOURCE, RestaurantService, ticket_key
from services.runtime.clock import epoch, parse_iso
from services.runtime.errors import DomainError
from services.runtime.events import Event, OutboundEvent
from services.runtime.memory import MemoryStateStore
from services.runtime.ports import RetryLater
from tests.unit.fakes import incoming, removed, restaurant, topics_of

ITEMS = [{"product_id": "noodles", "name": "국수", "quantity": 1, "unit_price": 7000}]


@pytest.fixture
async def restaurants() -> RestaurantService:
    service = RestaurantService(MemoryStateStore())
    await service.catalog.on_upserted(restaurant("seoul-chicken"))
    await service.catalog.on_upserted(restaurant("hanok", autoAccept=False, acceptTimeoutSeconds=60))
    return service


def events(service: RestaurantService) -> list[OutboundEvent]:
    return service.store.events  # type: ignore[attr-defined, no-any-return]


def order_paid(restaurant_id: str = "seoul-chicken", order_id: str = "o1") -> Event:
    delivery = {"address": "서울 1", "lat": 37.5, "lon": 127.0, "express": False}
    return incoming(
        topics.ORDER_PAID,
        order_id,
        order_id=order_id,
        customer_id="mina",
        restaurant_id=restaurant_id,
        total_price=10000,
        items=ITEMS,
        delivery=delivery,
    )


def cancel_requested(restaurant_id: str = "hanok", order_id: str = "o1") -> Event:
    return incoming(
        topics.ORDER_CANCEL_REQUESTED,
        order_id,
        order_id=order_id,
        customer_id="mina",
        restaurant_id=restaurant_id,
        amount=10000,
        method="wallet",
        reason="CUSTOMER_CANCELLED",
    )


def deadline(order_id: str = "o1") -> Event:
    return incoming(topics.TICKET_ACCEPT_DEADLINE, order_id, order_id=order_id)


async def ticket(service: RestaurantService, order_id: str = "o1") -> Ticket:
    found = await service.ticket(order_id)
    assert found is not None
    return found


async def test_an_auto_accept_restaurant_accepts_the_paid_order_at_once(restaurants: RestaurantService) -> None:
    await restaurants.on_order_paid(order_paid())
    opened = await ticket(restaurants)
    assert (opened.status, opened.total_price, opened.items, opened.accept_deadline) == (
        TicketStatus.ACCEPTED,
        10000,
        ITEMS,
        None,
    )
    (accepted,) = events(restaurants)
    assert (accepted.topic, accepted.source, accepted.subject) == (topics.TICKET_ACCEPTED, SOURCE, "o1")
    assert accepted.data == {"order_id": "o1", "restaurant_id": "seoul-chicken"}
    await restaurants.on_order_paid(order_paid())  # redelivered
    assert len(events(restaurants)) == 1


async def test_a_manual_restaurant_waits_for_its_owner_until_a_durable_deadline(
    restaurants: RestaurantService,
) -> None:
    before = epoch()
    await restaurants.on_order_paid(order_paid("hanok"))
    after = epoch()
    waiting = await ticket(restaurants)
    assert waiting.status is TicketStatus.PENDING
    (timer,) = events(restaurants)
    assert (timer.topic, timer.data, timer.subject) == (topics.TICKET_ACCEPT_DEADLINE, {"order_id": "o1"}, "o1")
    assert timer.deliver_at is not None and before + 60 <= timer.deliver_at <= after + 60
    assert waiting.accept_deadline is not None
    assert parse_iso(waiting.accept_deadline).timestamp() == pytest.approx(timer.deliver_at, abs=1e-5)

    await restaurants.on_accept_deadline(deadline())
    timed_out = await ticket(restaurants)
    assert (timed_out.status, timed_out.reason) == (TicketStatus.REJECTED, "ACCEPT_TIMEOUT")
    rejected = events(restaurants)[-1]
    assert rejected.topic == topics.TICKET_REJECTED and rejected.data == {
        "order_id": "o1",
        "restaurant_id": "hanok",
        "reason": "ACCEPT_TIMEOUT",
        "message": "not accepted in time",
    }
    with pytest.raises(DomainError) as late:
        await restaurants.accept("hanok", "o1")
    assert late.value.code == "INVALID_STATE"


async def test_the_owner_accepting_in_time_makes_the_deadline_a_no_op(restaurants: RestaurantService) -> None:
    await restaurants.on_order_paid(order_paid("hanok"))
    with pytest.raises(DomainError) as elsewhere:
        await restaurants.accept("seoul-chicken", "o1")
    assert elsewhere.value.code == "ORDER_NOT_FOUND"
    accepted = await restaurants.accept("hanok", "o1")
    assert accepted.status is TicketStatus.ACCEPTED and (await ticket(restaurants)).status is TicketStatus.ACCEPTED
    await restaurants.on_accept_deadline(deadline())
    assert topics_of(events(restaurants)) == [topics.TICKET_ACCEPT_DEADLINE, topics.TICKET_ACCEPTED]
    await restaurants.start_cooking("hanok", "o1")
    await restaurants.finish_cooking("hanok", "o1")
    assert topics_of(events(restaurants))[-2:] == [topics.TICKET_COOKING_STARTED, topics.TICKET_READY]


async def test_the_owner_rejecting_publishes_the_reason(restaurants: RestaurantService) -> None:
    await restaurants.on_order_paid(order_paid("hanok"))
    await restaurants.reject("hanok", "o1", "out of rice")
    assert events(restaurants)[-1].data == {
        "order_id": "o1",
        "restaurant_id": "hanok",
        "reason": "REJECTED",
        "message": "out of rice",
    }


async def test_a_restaurant_not_in_the_catalog_yet_means_retry_later(restaurants: RestaurantService) -> None:
    with pytest.raises(RetryLater):
        await restaurants.on_order_paid(order_paid("unknown"))
    assert await restaurants.store.get(ticket_key("o1")) is None and events(restaurants) == []


async def test_a_restaurant_removed_after_the_order_rejects_it(restaurants: RestaurantService) -> None:
    await restaurants.catalog.on_deleted(removed("seoul-chicken"))
    await restaurants.on_order_paid(order_paid())
    assert (await ticket(restaurants)).status is TicketStatus.REJECTED
    (rejected,) = events(restaurants)
    assert (rejected.topic, rejected.data["message"]) == (topics.TICKET_REJECTED, "the restaurant no longer exists")


async def test_a_cancel_before_the_ticket_leaves_a_tombstone_that_the_late_order_paid_respects(
    restaurants: RestaurantService,
) -> None:
    await restaurants.on_cancel_requested(cancel_requested("seoul-chicken"))
    tombstone = await ticket(restaurants)
    assert (tombstone.status, tombstone.total_price) == (TicketStatus.CANCELLED, 10000)
    await restaurants.on_order_paid(order_paid("seoul-chicken"))
    assert (await ticket(restaurants)).status is TicketStatus.CANCELLED, "not opened, not auto-accepted"
    assert events(restaurants) == [], "the cancel publishes nothing: the order service announced it"


async def test_a_cancel_cancels_an_open_ticket_once(restaurants: RestaurantService) -> None:
    await restaurants.on_order_paid(order_paid("hanok"))
    await restaurants.on_cancel_requested(cancel_requested())
    cancelled = await restaurants.store.get(ticket_key("o1"))
    assert cancelled is not None and cancelled.value["status"] == "CANCELLED"
    await restaurants.on_cancel_requested(cancel_requested())
    assert await restaurants.store.get(ticket_key("o1")) == cancelled, "a repeated cancel writes nothing"
    await restaurants.on_accept_deadline(deadline())
    assert topics_of(events(restaurants)) == [topics.TICKET_ACCEPT_DEADLINE]


async def test_the_owners_overrides_are_published_as_the_whole_override_state(restaurants: RestaurantService) -> None:
    entry = await restaurants.change_availability("hanok", product=("noodles", False))
    assert (entry["sold_out"], entry["override_seq"]) == (["noodles"], 1)
    entry = await restaurants.change_availability("hanok", open_=False)
    assert (entry["closed"], entry["sold_out"], entry["override_seq"]) == (True, ["noodles"], 2)
    stored = await restaurants.catalog.record("hanok")
    assert stored is not None and stored.value == entry
    first, second = events(restaurants)
    assert (second.topic, second.subject, second.data) == (
        topics.RESTAURANT_AVAILABILITY,
        "hanok",
        {"restaurant_id": "hanok", "uid": "uid-hanok", "seq": 2, "closed": True, "sold_out": ["noodles"]},
    )
    assert first.data["seq"] == 1
    with pytest.raises(DomainError) as refused:
        await restaurants.change_availability("hanok", product=("pizza", False))
    assert refused.value.code == "PRODUCT_NOT_FOUND"
    with pytest.raises(DomainError) as missing:
        await restaurants.change_availability("nowhere", open_=True)
    assert missing.value.code == "RESTAURANT_NOT_FOUND"
    assert len(events(restaurants)) == 2
