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
from services.runtime.events import Event, dumps, new_id
from services.runtime.ports import BatchHandler, DropEvent, Handler, StateStore, Subscription
from services.runtime.unit_of_work import UnitOfWork, run_step
from services.topics import DomainEvent

SOURCE = "order"


def order_key(order_id: str) -> str:
    return f"order:{order_id}"


def request_fingerprint(command: PlaceOrder) -> str:
    return hashlib.sha256(dumps(command.__dict__ | {"items": [i.__dict__ for i in command.items]}).encode()).hexdigest()


Change = Callable[[Order, str], list[DomainEvent]]
DELIVERY_TRANSITIONS: dict[str, Change] = {"PICKED_UP": Order.picked_up, "DELIVERED": Order.delivered}


def _not_found(order_id: str) -> Exception:
    return DomainError("ORDER_NOT_FOUND", f"order {order_id!r} does not exist")


def _unknown(order_id: str) -> Exception:
    return DropEvent(f"event for unknown order {order_id!r}")


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

        async def step(uow: UnitOfWork) -> tuple[Order, bool]:
            if idem_key is not None:
                earlier = await uow.get(idem_key)
                if earlier is not None:
                    return await self._replay(earlier.value, fingerprint), False
            menu = await self.menus.record(command.restaurant_id)
            order, events = place(new_id(), command, menu.value if menu else None, now_iso())
            uow.put(order_key(order.id), order.to_dict())  # a new id: created, never overwritten
            if idem_key is not None:  # read as missing: a concurrent first use of the key conflicts
                uow.put(idem_key, {"order_id": order.id, "fingerprint": fingerprint})
            uow.emit(order.id, events)
            return order, True

        return await run_step(self.store, step, SOURCE)

    async def _replay(self, earlier: dict[str, Any], fingerprint: str) -> Order:
        if earlier["fingerprint"] != fingerprint:
            raise DomainError("IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different order")
        order = await self.get(earlier["order_id"])
        assert order is not None, "an idempotency record always points at a stored order"
        return order

    async def get(self, order_id: str) -> Order | None:
        record = await self.store.get(order_key(order_id))
        return Order.from_dict(record.value) if record else None

    async def _change(self, order_id: str, change: Change, missing: Callable[[str], Exception]) -> Order:
        """Apply a change to a stored order with the events it causes. A customer's command raises
        DomainError when it is not allowed now; a saga event that is late or repeated causes no
        event and writes nothing (rule 3)."""

        async def step(uow: UnitOfWork) -> Order:
            record = await uow.get(order_key(order_id))
            if record is None:
                raise missing(order_id)
            order = Order.from_dict(record.value)
            events = change(order, now_iso())
            if events:
                uow.put(record.key, order.to_dict())
                uow.emit(order.id, events)
            return order

        return await run_step(self.store, step, SOURCE)

    async def cancel(self, order_id: str) -> Order:
        return await self._change(order_id, Order.request_cancel, _not_found)

    async def confirm(self, order_id: str) -> Order:
        return await self._change(order_id, Order.confirm, _not_found)

    async def menu(self, restaurant_id: str) -> projection.Entry | None:
        return await self.menus.live(restaurant_id)

    async def restaurants(self) -> list[projection.Entry]:
        return await self.menus.all_live()

    # ------------------------------------------------------------------ saga reactions

    async def _transition(self, order_id: str, change: Change) -> None:
        await self._change(order_id, change, _unknown)

    async def on_payment_completed(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.payment_completed)

    async def on_payment_failed(self, event: Event) -> None:
        reason = CancelReason(event.data.get("reason", CancelReason.PAYMENT_FAILED))
        await self._transition(event.data["order_id"], lambda o, now: o.payment_failed(reason, now))

    async def on_payment_refunded(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.payment_refunded)

    async def on_ticket_accepted(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.restaurant_accepted)

    async def on_ticket_rejected(self, event: Event) -> None:
        reason = CancelReason(event.data["reason"])
        await self._transition(event.data["order_id"], lambda o, now: o.restaurant_rejected(reason, now))

    async def on_cooking_started(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.cooking_started)

    async def on_ready(self, event: Event) -> None:
        await self._transition(event.data["order_id"], Order.cooking_finished)

    async def on_delivery_progress(self, event: Event) -> None:
        change = DELIVERY_TRANSITIONS.get(event.data["delivery"]["status"])
        if change is not None:
            await self._transition(event.data["delivery"]["order_id"], change)

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
