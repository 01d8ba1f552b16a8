"""The order service: placing and cancelling orders, and reacting to the saga's events."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from services import topics
from services.catalog import projection
from services.catalog.replica import CatalogReplica
from services.order.domain import CancelReason, Order, PlaceOrder, place
from services.order.views import OrderViews
from services.runtime.clock import now_iso
from services.runtime.errors import DomainError
from services.runtime.events import Event, OutboundEvent, dumps, new_id
from services.runtime.ports import BatchHandler, DropEvent, Handler, Put, StateStore, Subscription, retry_on_conflict

SOURCE = "order"


def order_key(order_id: str) -> str:
    return f"order:{order_id}"


def _event(topic: str, order: Order, data: dict[str, Any]) -> OutboundEvent:
    return OutboundEvent(topic=topic, data=data, source=SOURCE, subject=order.id)


def status_changed(order: Order) -> OutboundEvent:
    return _event(topics.ORDER_STATUS_CHANGED, order, {"order": order.view(), "version": order.version})


def placed(order: Order, card_token: str | None) -> OutboundEvent:
    return _event(
        topics.ORDER_PLACED,
        order,
        {
            "order_id": order.id,
            "customer_id": order.customer_id,
            "restaurant_id": order.restaurant_id,
            "amount": order.total_price,
            "payment": {"method": order.payment["method"], "card_token": card_token},
        },
    )


def paid(order: Order) -> OutboundEvent:
    return _event(
        topics.ORDER_PAID,
        order,
        {
            "order_id": order.id,
            "customer_id": order.customer_id,
            "restaurant_id": order.restaurant_id,
            "total_price": order.total_price,
            "items": order.items,
            "delivery": order.delivery,
        },
    )


def cancel_requested(order: Order) -> OutboundEvent:
    assert order.cancel_reason is not None
    return _event(
        topics.ORDER_CANCEL_REQUESTED,
        order,
        {
            "order_id": order.id,
            "customer_id": order.customer_id,
            "restaurant_id": order.restaurant_id,
            "amount": order.total_price,
            "method": order.payment["method"],
            "reason": order.cancel_reason.value,
        },
    )


def request_fingerprint(command: PlaceOrder) -> str:
    return hashlib.sha256(dumps(command.__dict__ | {"items": [i.__dict__ for i in command.items]}).encode()).hexdigest()


Change = Callable[[Order, str], bool]
DELIVERY_TRANSITIONS: dict[str, Change] = {"PICKED_UP": Order.picked_up, "DELIVERED": Order.delivered}
FollowUp = Callable[[Order], list[OutboundEvent]]


class OrderService:
    def __init__(self, store: StateStore, views: OrderViews) -> None:
        self.store = store
        self.views = views
        self.menus = CatalogReplica(store, "menu:")  # the menu read store (CQRS)

    # ------------------------------------------------------------------ commands

    async def place(self, command: PlaceOrder, idempotency_key: str | None) -> tuple[Order, bool]:
        """Validate against the menu read store and store the order with its events.

        Returns the order and whether it was created now (False: an idempotent replay)."""
        fingerprint = request_fingerprint(command)
        idem_key = f"idem:{command.customer_id}:{idempotency_key}" if idempotency_key else None

        async def attempt() -> tuple[Order, bool]:
            if idem_key is not None:
                earlier = await self.store.get(idem_key)
                if earlier is not None:
                    return await self._replay(earlier.value, fingerprint), False
            menu = await self.menus.record(command.restaurant_id)
            order = place(new_id(), command, menu.value if menu else None, now_iso())
            writes = [Put(order_key(order.id), order.to_dict(), None)]
            if idem_key is not None:
                writes.append(Put(idem_key, {"order_id": order.id, "fingerprint": fingerprint}, None))
            await self.store.commit(writes, [placed(order, command.card_token), status_changed(order)])
            return order, True

        return await retry_on_conflict(attempt)

    async def _replay(self, earlier: dict[str, Any], fingerprint: str) -> Order:
        if earlier["fingerprint"] != fingerprint:
            raise DomainError("IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different order")
        order = await self.get(earlier["order_id"])
        assert order is not None, "an idempotency record always points at a stored order"
        return order

    async def get(self, order_id: str) -> Order | None:
        record = await self.store.get(order_key(order_id))
        return Order.from_dict(record.value) if record else None

    async def _command(
        self, order_id: str, act: Callable[[Order, str], None], follow_up: FollowUp | None = None
    ) -> Order:
        """A customer's command on an order; ``act`` raises DomainError when it is not allowed now."""

        async def attempt() -> Order:
            record = await self.store.get(order_key(order_id))
            if record is None:
                raise DomainError("ORDER_NOT_FOUND", f"order {order_id!r} does not exist")
            order = Order.from_dict(record.value)
            act(order, now_iso())
            events = [status_changed(order), *(follow_up(order) if follow_up else [])]
            await self.store.commit([Put(record.key, order.to_dict(), record.etag)], events)
            return order

        return await retry_on_conflict(attempt)

    async def cancel(self, order_id: str) -> Order:
        return await self._command(order_id, Order.request_cancel, lambda o: [cancel_requested(o)])

    async def menu(self, restaurant_id: str) -> projection.Entry | None:
        return await self.menus.live(restaurant_id)

    async def restaurants(self) -> list[projection.Entry]:
        return await self.menus.all_live()

    # ------------------------------------------------------------------ saga reactions

    async def _transition(self, order_id: str, change: Change, follow_up: FollowUp | None = None) -> None:
        """Apply a guarded state change; a late or repeated event changes nothing (rule 3)."""

        async def attempt() -> None:
            record = await self.store.get(order_key(order_id))
            if record is None:
                raise DropEvent(f"event for unknown order {order_id!r}")
            order = Order.from_dict(record.value)
            if not change(order, now_iso()):
                return
            events = [status_changed(order), *(follow_up(order) if follow_up else [])]
            await self.store.commit([Put(record.key, order.to_dict(), record.etag)], events)

        await retry_on_conflict(attempt)

    async def on_payment_completed(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.payment_completed, lambda o: [paid(o)])

    async def on_payment_failed(self, event: Event) -> None:
        reason = CancelReason(event.data.get("reason", CancelReason.PAYMENT_FAILED))
        await self._transition(event.data["order_id"], lambda o, now: o.payment_failed(reason, now))

    async def on_payment_refunded(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.payment_refunded)

    async def on_ticket_accepted(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.restaurant_accepted)

    async def on_ticket_rejected(self, event: Event) -> None:
        reason = CancelReason(event.data["reason"])
        await self._transition(
            event.data["order_id"], lambda o, now: o.restaurant_rejected(reason, now), lambda o: [cancel_requested(o)]
        )

    async def on_cooking_started(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.cooking_started)

    async def on_ready(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.cooking_finished)

    async def on_delivery_progress(self, event: Event) -> None:
        change = DELIVERY_TRANSITIONS.get(event.data["delivery"]["status"])
        if change is not None:
            await self._transition(event.data["delivery"]["order_id"], change)

    async def confirm(self, order_id: str) -> Order:
        return await self._command(order_id, Order.confirm)

    async def on_status_changed(self, events: Sequence[Event]) -> None:
        await self.views.apply([(e.data["order"], int(e.data["version"])) for e in events])

    def batch_subscriptions(self) -> list[tuple[Subscription, BatchHandler]]:
        return [(Subscription(topics.ORDER_STATUS_CHANGED, "order-views"), self.on_status_changed)]

    def subscriptions(self) -> list[tuple[Subscription, Handler]]:
        return [
            (Subscription(topics.PAYMENT_COMPLETED, "order-on-payment-completed"), self.on_payment_completed),
            (Subscription(topics.PAYMENT_FAILED, "order-on-payment-failed"), self.on_payment_failed),
            (Subscription(topics.PAYMENT_REFUNDED, "order-on-payment-refunded"), self.on_payment_refunded),
            (Subscription(topics.TICKET_ACCEPTED, "order-on-ticket-accepted"), self.on_ticket_accepted),
            (Subscription(topics.TICKET_REJECTED, "order-on-ticket-rejected"), self.on_ticket_rejected),
            (Subscription(topics.TICKET_COOKING_STARTED, "order-on-cooking-started"), self.on_cooking_started),
            (Subscription(topics.TICKET_READY, "order-on-ready"), self.on_ready),
            (
                Subscription(
                    topics.DELIVERY_STATUS_CHANGED,
                    "order-on-delivery-progress",
                    lambda data: data["delivery"]["status"] in DELIVERY_TRANSITIONS,
                ),
                self.on_delivery_progress,
            ),
            (Subscription(topics.CATALOG_UPSERTED, "order-menu-upserted"), self.menus.on_upserted),
            (Subscription(topics.CATALOG_DELETED, "order-menu-deleted"), self.menus.on_deleted),
            (Subscription(topics.RESTAURANT_AVAILABILITY, "order-menu-availability"), self.menus.on_availability),
        ]
