"""The delivery service: a delivery per accepted order, riders' search, claim, pick-up, drop-off."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from services import topics
from services.catalog.replica import CatalogReplica
from services.delivery.board import DeliveryBoard
from services.delivery.domain import Delivery, DeliveryStatus, open_delivery, rank
from services.runtime.clock import now_iso
from services.runtime.errors import DomainError
from services.runtime.events import Event
from services.runtime.ports import BatchHandler, Handler, RetryLater, StateStore, Subscription
from services.runtime.unit_of_work import UnitOfWork, run_step
from services.topics import DomainEvent

SOURCE = "delivery"
SEARCH_LIMIT = 50

Change = Callable[[Delivery, str], list[DomainEvent]]


def delivery_key(order_id: str) -> str:
    return f"delivery:{order_id}"


class DeliveryService:
    def __init__(self, store: StateStore, board: DeliveryBoard) -> None:
        self.store = store
        self.board = board
        self.restaurants = CatalogReplica(store, "restaurant:")  # pickup locations

    async def get(self, order_id: str) -> Delivery | None:
        record = await self.store.get(delivery_key(order_id))
        return Delivery.from_dict(record.value) if record else None

    async def available(self, origin: dict[str, float], radius_km: float) -> list[dict[str, Any]]:
        return rank(await self.board.near(origin, radius_km), origin, radius_km)[:SEARCH_LIMIT]

    async def _change(self, order_id: str, change: Change, must_exist: bool) -> Delivery | None:
        """Apply a change to a stored delivery with the event it causes (none: nothing written).
        A missing delivery is DELIVERY_NOT_FOUND for a rider's command, nothing to do for a reaction."""

        async def step(uow: UnitOfWork) -> Delivery | None:
            record = await uow.get(delivery_key(order_id))
            if record is None:
                if must_exist:
                    raise DomainError("DELIVERY_NOT_FOUND", f"no delivery {order_id!r}")
                return None
            delivery = Delivery.from_dict(record.value)
            events = change(delivery, now_iso())
            if events:
                uow.put(record.key, delivery.to_dict())
                uow.emit(delivery.order_id, events)
            return delivery

        return await run_step(self.store, step, SOURCE)

    # ------------------------------------------------------------------ rider commands

    async def _act(self, order_id: str, act: Change) -> Delivery:
        delivery = await self._change(order_id, act, must_exist=True)
        assert delivery is not None
        return delivery

    async def claim(self, order_id: str, rider_id: str) -> Delivery:
        """First wins: the ETag guard lets exactly one of two simultaneous claims commit; the other
        re-reads and finds the delivery claimed."""
        return await self._act(order_id, lambda d, now: d.claim(rider_id, now))

    async def pick_up(self, order_id: str, rider_id: str) -> Delivery:
        return await self._act(order_id, lambda d, now: d.pick_up(rider_id, now))

    async def deliver(self, order_id: str, rider_id: str) -> Delivery:
        return await self._act(order_id, lambda d, now: d.deliver(rider_id, now))

    # ------------------------------------------------------------------ reactions

    async def on_order_status(self, event: Event) -> None:
        """ACCEPTED opens the delivery, READY shows it to riders, a cancel withdraws it."""
        order = event.data["order"]
        status = order["status"]
        if status in ("ACCEPTED", "COOKING"):
            await self._open(order, ready=False)
        elif status == "READY":
            await self._open(order, ready=True)
        elif status in ("CANCELLING", "CANCELLED"):
            await self._change(order["id"], Delivery.cancel, must_exist=False)

    async def _open(self, order: dict[str, Any], ready: bool) -> None:
        async def step(uow: UnitOfWork) -> None:
            record = await uow.get(delivery_key(order["id"]))
            now = now_iso()
            if record is not None:
                delivery = Delivery.from_dict(record.value)
                events = delivery.make_available(now) if ready else []
            else:
                restaurant = await self.restaurants.live(order["restaurant_id"])
                if restaurant is None:
                    raise RetryLater(f"restaurant {order['restaurant_id']!r} not in the delivery service's catalog yet")
                delivery, events = open_delivery(order, restaurant["spec"]["location"], ready, now)
            if events:
                uow.put(delivery_key(delivery.order_id), delivery.to_dict())
                uow.emit(delivery.order_id, events)

        await run_step(self.store, step, SOURCE)

    async def on_board_changes(self, events: Sequence[Event]) -> None:
        await self.board.apply([(e.data["delivery"], int(e.data["version"])) for e in events])

    def subscriptions(self) -> list[tuple[Subscription, Handler]]:
        return [
            (
                Subscription(
                    topics.ORDER_STATUS_CHANGED, "delivery-on-order-status", _order_status_in(OPENS_OR_CLOSES)
                ),
                self.on_order_status,
            ),
            (Subscription(topics.CATALOG_UPSERTED, "delivery-catalog-upserted"), self.restaurants.on_upserted),
            (Subscription(topics.CATALOG_DELETED, "delivery-catalog-deleted"), self.restaurants.on_deleted),
        ]

    def batch_subscriptions(self) -> list[tuple[Subscription, BatchHandler]]:
        return [(Subscription(topics.DELIVERY_STATUS_CHANGED, "delivery-board", on_the_board), self.on_board_changes)]


# What the delivery service reacts to (routing rules: other events are never even queued).
OPENS_OR_CLOSES = frozenset({"ACCEPTED", "COOKING", "READY", "CANCELLING", "CANCELLED"})


def _order_status_in(statuses: frozenset[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda data: data["order"]["status"] in statuses


def on_the_board(data: dict[str, Any]) -> bool:
    """A WAITING delivery is not for riders yet; every later state matters to the board."""
    return bool(data["delivery"]["status"] != DeliveryStatus.WAITING)
