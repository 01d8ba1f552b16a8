"""The order service's steps on the in-memory store: placing (with its idempotent replay), the
customer's cancel, and the order following payment and ticket events."""

from __future__ import annotations

import pytest

from services import topics
from services.order.domain import LineRequest, Order, OrderStatus, PlaceOrder
from services.order.handlers import SOURCE, OrderService, order_key
from services.runtime.errors import DomainError
from services.runtime.events import OutboundEvent
from services.runtime.ports import DropEvent
from tests.unit.fakes import FakeViews, Interfering, incoming, restaurant, topics_of


def command(customer: str = "mina", quantity: int = 2, method: str = "wallet", token: str | None = None) -> PlaceOrder:
    return PlaceOrder(
        customer_id=customer,
        restaurant_id="seoul-chicken",
        items=(LineRequest("noodles", quantity, 7000),),
        delivery={"address": "서울 강남구 1", "lat": 37.5, "lon": 127.0, "express": False},
        payment_method=method,
        total_price=quantity * 7000 + 3000,
        card_token=token,
    )


@pytest.fixture
async def orders() -> OrderService:
    service = OrderService(Interfering(), FakeViews())
    await service.menus.on_upserted(restaurant("seoul-chicken"))
    return service


def events(service: OrderService) -> list[OutboundEvent]:
    return service.store.events  # type: ignore[attr-defined, no-any-return]


async def stored(service: OrderService, order_id: str) -> Order:
    order = await service.get(order_id)
    assert order is not None
    return order


async def placed_order(service: OrderService, **kwargs: object) -> Order:
    order, created = await service.place(command(**kwargs), None)  # type: ignore[arg-type]
    assert created
    return order


async def paid_order(service: OrderService) -> Order:
    order = await placed_order(service)
    await service.on_payment_completed(incoming(topics.PAYMENT_COMPLETED, order_id=order.id))
    return await stored(service, order.id)


# ------------------------------------------------------------------ placing


async def test_placing_stores_a_pending_order_with_its_placed_and_status_events(orders: OrderService) -> None:
    order, created = await orders.place(command(method="card", token="tok_visa"), None)
    assert created and order.status is OrderStatus.PENDING and order.total_price == 17000
    assert (await stored(orders, order.id)).to_dict() == order.to_dict()
    placed, changed = events(orders)
    assert (placed.topic, placed.source, placed.subject) == (topics.ORDER_PLACED, SOURCE, order.id)
    assert placed.data == {
        "order_id": order.id,
        "customer_id": "mina",
        "restaurant_id": "seoul-chicken",
        "amount": 17000,
        "payment": {"method": "card", "card_token": "tok_visa"},
    }
    assert (changed.topic, changed.data["version"], changed.data["order"]["status"]) == (
        topics.ORDER_STATUS_CHANGED,
        1,
        "PENDING",
    )
    assert "card_token" not in str(await orders.store.scan("order:")), "the token is never stored"


async def test_a_replay_with_the_same_key_returns_the_same_order_and_publishes_nothing(orders: OrderService) -> None:
    first, created = await orders.place(command(), "key-1")
    published = len(events(orders))
    again, created_again = await orders.place(command(), "key-1")
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert len(events(orders)) == published
    assert len(await orders.store.scan("order:")) == 1


async def test_a_key_reused_for_another_request_is_refused_and_changes_nothing(orders: OrderService) -> None:
    await orders.place(command(quantity=1), "key-1")
    published = len(events(orders))
    with pytest.raises(DomainError) as refused:
        await orders.place(command(quantity=3), "key-1")
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert len(events(orders)) == published and len(await orders.store.scan("order:")) == 1
    other, created = await orders.place(command(quantity=3), "key-2")
    assert created and other.total_price == 24000


async def test_a_key_first_used_by_a_concurrent_request_makes_this_one_a_replay(orders: OrderService) -> None:
    store = orders.store
    assert isinstance(store, Interfering)
    competitor = OrderService(store, FakeViews())
    competitor.menus = orders.menus
    raced: list[Order] = []

    async def the_same_request_elsewhere() -> None:
        raced.append((await competitor.place(command(), "key-1"))[0])

    store.interfere("idem:mina:key-1", the_same_request_elsewhere)
    order, created = await orders.place(command(), "key-1")
    assert not created and order.id == raced[0].id, "re-run from a fresh read: the key is taken, a replay"
    assert len(await store.scan("order:")) == 1
    assert topics_of(events(orders)) == [topics.ORDER_PLACED, topics.ORDER_STATUS_CHANGED]


async def test_an_order_for_a_closed_restaurant_is_refused_and_nothing_is_written(orders: OrderService) -> None:
    await orders.menus.on_upserted(restaurant("seoul-chicken", generation=2, open=False))
    with pytest.raises(DomainError) as refused:
        await orders.place(command(), "key-1")
    assert refused.value.code == "RESTAURANT_CLOSED"
    assert await orders.store.scan("order:") == [] and await orders.store.scan("idem:") == []
    assert events(orders) == []


# ------------------------------------------------------------------ following the saga


async def test_payment_completed_makes_the_order_paid_and_publishes_order_paid(orders: OrderService) -> None:
    order = await placed_order(orders)
    events(orders).clear()
    completed = incoming(topics.PAYMENT_COMPLETED, order_id=order.id)
    await orders.on_payment_completed(completed)
    paid = await stored(orders, order.id)
    assert paid.status is OrderStatus.PAID and paid.payment["status"] == "COMPLETED" and paid.version == 2
    changed, paid_event = events(orders)
    assert (changed.data["order"]["status"], changed.data["version"]) == ("PAID", 2)
    assert paid_event.topic == topics.ORDER_PAID and paid_event.subject == order.id
    assert paid_event.data == {
        "order_id": order.id,
        "customer_id": "mina",
        "restaurant_id": "seoul-chicken",
        "total_price": 17000,
        "items": [{"product_id": "noodles", "name": "국수", "quantity": 2, "unit_price": 7000}],
        "delivery": {"address": "서울 강남구 1", "lat": 37.5, "lon": 127.0, "express": False},
    }
    await orders.on_payment_completed(completed)  # redelivered
    assert len(events(orders)) == 2 and (await stored(orders, order.id)).version == 2


@pytest.mark.parametrize(("reason", "expected"), [("PAYMENT_FAILED", "PAYMENT_FAILED"), (None, "PAYMENT_FAILED")])
async def test_payment_failed_cancels_a_pending_order(orders: OrderService, reason: str | None, expected: str) -> None:
    order = await placed_order(orders)
    data = {"order_id": order.id} | ({"reason": reason} if reason else {})
    await orders.on_payment_failed(incoming(topics.PAYMENT_FAILED, **data))
    failed = await stored(orders, order.id)
    assert (failed.status, failed.cancel_reason, failed.payment["status"]) == (
        OrderStatus.CANCELLED,
        expected,
        "FAILED",
    )
    assert topics_of(events(orders))[-1] == topics.ORDER_STATUS_CHANGED


async def test_an_unavailable_gateway_cancels_with_its_own_reason(orders: OrderService) -> None:
    order = await placed_order(orders)
    await orders.on_payment_failed(incoming(topics.PAYMENT_FAILED, order_id=order.id, reason="PAYMENT_UNAVAILABLE"))
    assert (await stored(orders, order.id)).cancel_reason == "PAYMENT_UNAVAILABLE"


async def test_ticket_accepted_moves_a_paid_order_on(orders: OrderService) -> None:
    order = await paid_order(orders)
    events(orders).clear()
    await orders.on_ticket_accepted(incoming(topics.TICKET_ACCEPTED, order_id=order.id, restaurant_id="r"))
    assert (await stored(orders, order.id)).status is OrderStatus.ACCEPTED
    assert topics_of(events(orders)) == [topics.ORDER_STATUS_CHANGED]


async def test_ticket_rejected_starts_the_refund_with_a_cancel_request(orders: OrderService) -> None:
    order = await paid_order(orders)
    events(orders).clear()
    rejected = incoming(
        topics.TICKET_REJECTED, order_id=order.id, restaurant_id="r", reason="ACCEPT_TIMEOUT", message="late"
    )
    await orders.on_ticket_rejected(rejected)
    cancelling = await stored(orders, order.id)
    assert (cancelling.status, cancelling.cancel_reason) == (OrderStatus.CANCELLING, "ACCEPT_TIMEOUT")
    changed, cancel = events(orders)
    assert changed.data["order"]["status"] == "CANCELLING"
    assert cancel.topic == topics.ORDER_CANCEL_REQUESTED and cancel.data == {
        "order_id": order.id,
        "customer_id": "mina",
        "restaurant_id": "seoul-chicken",
        "amount": 17000,
        "method": "wallet",
        "reason": "ACCEPT_TIMEOUT",
    }
    await orders.on_ticket_accepted(incoming(topics.TICKET_ACCEPTED, order_id=order.id, restaurant_id="r"))
    assert len(events(orders)) == 2, "a late acceptance changes nothing"
    await orders.on_payment_refunded(incoming(topics.PAYMENT_REFUNDED, order_id=order.id))
    refunded = await stored(orders, order.id)
    assert (refunded.status, refunded.payment["status"]) == (OrderStatus.CANCELLED, "REFUNDED")


async def test_an_event_for_an_unknown_order_is_dropped(orders: OrderService) -> None:
    with pytest.raises(DropEvent):
        await orders.on_ticket_accepted(incoming(topics.TICKET_ACCEPTED, order_id="nope", restaurant_id="r"))


# ------------------------------------------------------------------ the customer's commands


async def test_the_customers_cancel_publishes_the_cancel_request(orders: OrderService) -> None:
    order = await paid_order(orders)
    events(orders).clear()
    cancelled = await orders.cancel(order.id)
    assert (cancelled.status, cancelled.cancel_reason) == (OrderStatus.CANCELLING, "CUSTOMER_CANCELLED")
    assert (await stored(orders, order.id)).status is OrderStatus.CANCELLING
    assert topics_of(events(orders)) == [topics.ORDER_STATUS_CHANGED, topics.ORDER_CANCEL_REQUESTED]
    assert events(orders)[1].data["reason"] == "CUSTOMER_CANCELLED"


async def test_a_cancel_once_cooking_is_refused_and_writes_nothing(orders: OrderService) -> None:
    order = await paid_order(orders)
    for topic in (topics.TICKET_ACCEPTED, topics.TICKET_COOKING_STARTED):
        handler = orders.on_ticket_accepted if topic == topics.TICKET_ACCEPTED else orders.on_cooking_started
        await handler(incoming(topic, order_id=order.id, restaurant_id="r"))
    before = (await orders.store.get(order_key(order.id)), len(events(orders)))
    with pytest.raises(DomainError) as refused:
        await orders.cancel(order.id)
    assert refused.value.code == "INVALID_STATE"
    assert (await orders.store.get(order_key(order.id)), len(events(orders))) == before
    with pytest.raises(DomainError) as missing:
        await orders.cancel("nope")
    assert missing.value.code == "ORDER_NOT_FOUND"
