"""The saga's steps chained without a platform: every service on its own in-memory store, and a
small bus handing each committed event to the consumers subscribed to it (routing rules
included), until nothing is left. Timers wait until the test fires them."""

from __future__ import annotations

from typing import Any

import pytest

from services import topics
from services.delivery.handlers import DeliveryService
from services.entrypoints.bootstrap import wire
from services.notification.handlers import NotificationService
from services.order.domain import LineRequest, OrderStatus, PlaceOrder
from services.order.handlers import OrderService
from services.payment.handlers import PaymentService
from services.restaurant.handlers import RestaurantService
from services.runtime.events import OutboundEvent
from services.runtime.memory import MemoryStateStore
from services.runtime.ports import BatchHandler, Handler, Service, Subscription
from tests.unit.fakes import FakeBoard, FakeChannel, FakeFeed, FakeGateway, FakeViews, received, restaurant


class Saga:
    def __init__(self) -> None:
        self.gateway, self.feed, self.channel = FakeGateway(), FakeFeed(), FakeChannel()
        self.order = OrderService(MemoryStateStore(), FakeViews())
        self.payment = PaymentService(MemoryStateStore(), self.gateway)
        self.restaurant = RestaurantService(MemoryStateStore())
        self.delivery = DeliveryService(MemoryStateStore(), FakeBoard())
        self.notification = NotificationService(MemoryStateStore(), self.feed, self.channel)
        self.consumers: list[tuple[Subscription, Handler | None, BatchHandler | None]] = []
        self.seen: dict[int, int] = {}  # store id -> events handed out
        self.timers: list[OutboundEvent] = []
        services: list[Service] = [self.order, self.payment, self.restaurant, self.delivery, self.notification]
        for service in services:
            wire(
                service,
                lambda s, h: self.consumers.append((s, h, None)),
                lambda s, b: self.consumers.append((s, None, b)),
            )

    def stores(self) -> list[MemoryStateStore]:
        services = (self.order, self.payment, self.restaurant, self.delivery)
        return [s.store for s in services if isinstance(s.store, MemoryStateStore)]

    async def publish(self, event: OutboundEvent) -> None:
        for subscription, handler, batch in self.consumers:
            if subscription.topic != event.topic:
                continue
            if subscription.match is not None and not subscription.match(event.data):
                continue
            if handler is not None:
                await handler(received(event))
            elif batch is not None:
                await batch([received(event)])

    async def settle(self) -> None:
        """Deliver every committed event (but timers) until the saga stands still."""
        while True:
            fresh: list[OutboundEvent] = []
            for store in self.stores():
                fresh += store.events[self.seen.get(id(store), 0) :]
                self.seen[id(store)] = len(store.events)
            if not fresh:
                return
            for event in fresh:
                if event.deliver_at is not None:
                    self.timers.append(event)
                else:
                    await self.publish(event)

    async def fire_timers(self) -> None:
        timers, self.timers = self.timers, []
        for timer in timers:
            await self.publish(timer)
        await self.settle()

    async def place(self, method: str = "wallet", restaurant_id: str = "seoul-chicken") -> str:
        command = PlaceOrder(
            customer_id="mina",
            restaurant_id=restaurant_id,
            items=(LineRequest("noodles", 2, 7000),),
            delivery={"address": "서울 1", "lat": 37.5, "lon": 127.0, "express": False},
            payment_method=method,
            total_price=17000,
            card_token="tok_visa" if method == "card" else None,
        )
        order, _ = await self.order.place(command, None)
        await self.settle()
        return order.id

    async def status(self, order_id: str) -> OrderStatus:
        order = await self.order.get(order_id)
        assert order is not None
        return order.status

    def sent(self, order_id: str) -> list[Any]:
        return [data["status"] for _, data in self.channel.sent if data["order_id"] == order_id]


@pytest.fixture
async def saga() -> Saga:
    saga = Saga()
    catalog = [restaurant("seoul-chicken"), restaurant("hanok", autoAccept=False, owners=["owner-kim"])]
    for entry in catalog:
        await saga.publish(OutboundEvent(topic=entry.topic, data=entry.data, source="restaurant", id=entry.id))
    return saga


async def test_a_wallet_order_is_paid_accepted_and_opens_its_delivery(saga: Saga) -> None:
    await saga.payment.top_up("mina", 20000)
    order_id = await saga.place()
    assert await saga.status(order_id) is OrderStatus.ACCEPTED
    assert (await saga.payment.wallet("mina")).balance == 3000
    opened = await saga.delivery.get(order_id)
    assert opened is not None and opened.status == "WAITING"
    assert saga.sent(order_id) == ["PENDING", "PAID", "ACCEPTED"], "the customer told at every step"
    assert [n.recipient for n in saga.feed.notifications if n.recipient.startswith("owner:")] == ["owner:owner-new"]


async def test_a_card_order_rejected_by_the_owner_is_refunded_at_the_gateway(saga: Saga) -> None:
    order_id = await saga.place("card", "hanok")
    assert await saga.status(order_id) is OrderStatus.PAID
    assert saga.gateway.charges == [(order_id, "tok_visa", 17000)]
    await saga.restaurant.reject("hanok", order_id, "out of rice")
    await saga.settle()
    order = await saga.order.get(order_id)
    assert order is not None
    assert (order.status, order.cancel_reason, order.payment["status"]) == ("CANCELLED", "REJECTED", "REFUNDED")
    assert saga.gateway.refunds == [order_id]
    await saga.fire_timers()  # the accept deadline finds the ticket decided
    assert await saga.status(order_id) is OrderStatus.CANCELLED


async def test_an_order_nobody_accepts_in_time_is_cancelled_and_refunded(saga: Saga) -> None:
    await saga.payment.top_up("mina", 17000)
    order_id = await saga.place("wallet", "hanok")
    assert (await saga.payment.wallet("mina")).balance == 0
    await saga.fire_timers()
    order = await saga.order.get(order_id)
    assert order is not None and (order.status, order.cancel_reason) == ("CANCELLED", "ACCEPT_TIMEOUT")
    assert (await saga.payment.wallet("mina")).balance == 17000


async def test_a_customers_cancel_after_payment_gives_the_money_back(saga: Saga) -> None:
    await saga.payment.top_up("mina", 17000)
    order_id = await saga.place("wallet", "hanok")
    await saga.order.cancel(order_id)
    await saga.settle()
    assert await saga.status(order_id) is OrderStatus.CANCELLED
    assert (await saga.payment.wallet("mina")).balance == 17000
    ticket = await saga.restaurant.ticket(order_id)
    assert ticket is not None and ticket.status == "CANCELLED"
    assert saga.sent(order_id) == ["PENDING", "PAID", "CANCELLING", "CANCELLED"]
    assert topics.ORDER_CANCEL_REQUESTED in [e.topic for e in saga.order.store.events]  # type: ignore[attr-defined]
