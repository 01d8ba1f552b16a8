"""The restaurant service: tickets (accept/reject/timeout/cancel), owner availability changes, and
the embedded catalog source behind ``baedal apply``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from services import topics
from services.catalog import projection
from services.catalog.manifest import RestaurantResource
from services.catalog.reconcile import Publish, reconcile, reconcile_removal
from services.catalog.replica import CatalogReplica
from services.restaurant.domain import RejectReason, Ticket, TicketStatus, change_availability
from services.runtime.clock import epoch, now_iso
from services.runtime.errors import DomainError
from services.runtime.events import Event, OutboundEvent, dumps, new_id
from services.runtime.ports import BatchHandler, Handler, Put, RetryLater, StateStore, Subscription
from services.runtime.unit_of_work import UnitOfWork, run_step
from services.topics import DomainEvent

SOURCE = "restaurant"
DEMO_MARKER = "bootstrap:demo-catalog"


def ticket_key(order_id: str) -> str:
    return f"ticket:{order_id}"


def manifest_key(restaurant_id: str) -> str:
    return f"manifest:{restaurant_id}"


def _new_ticket(
    order: dict[str, Any], status: TicketStatus, total_price: int, items: list[dict[str, Any]], now: str
) -> Ticket:
    """A new ticket for the order an event names (``order.paid``, or a cancel's tombstone)."""
    return Ticket(
        order_id=order["order_id"],
        restaurant_id=order["restaurant_id"],
        customer_id=order["customer_id"],
        status=status,
        total_price=total_price,
        items=items,
        created_at=now,
        updated_at=now,
    )


def _with_bookkeeping(uow: UnitOfWork, key: str, state: dict[str, Any]) -> Publish:
    """The reconcile step's publish port for ``baedal apply``: the catalog event goes out in the
    same commit as the manifest bookkeeping ``state`` (written under ``key``)."""

    async def publish(event: OutboundEvent) -> None:
        uow.put(key, state)
        uow.publish(event)

    return publish


class RestaurantService:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.catalog = CatalogReplica(store, "restaurant:")  # owners, auto-accept, timeouts, overrides

    async def restaurant(self, restaurant_id: str) -> projection.Entry | None:
        return await self.catalog.live(restaurant_id)

    async def ticket(self, order_id: str) -> Ticket | None:
        record = await self.store.get(ticket_key(order_id))
        return Ticket.from_dict(record.value) if record else None

    # ------------------------------------------------------------------ owner commands

    async def _decide(
        self, restaurant_id: str, order_id: str, decide: Callable[[Ticket, str], list[DomainEvent]]
    ) -> Ticket:
        async def step(uow: UnitOfWork) -> Ticket:
            record = await uow.get(ticket_key(order_id))
            if record is None or record.value["restaurant_id"] != restaurant_id:
                raise DomainError("ORDER_NOT_FOUND", f"no paid order {order_id!r} at restaurant {restaurant_id!r}")
            ticket = Ticket.from_dict(record.value)
            events = decide(ticket, now_iso())
            uow.put(record.key, ticket.to_dict())
            uow.emit(ticket.order_id, events)
            return ticket

        return await run_step(self.store, step, SOURCE)

    async def accept(self, restaurant_id: str, order_id: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, Ticket.accept)

    async def reject(self, restaurant_id: str, order_id: str, message: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, lambda t, now: t.reject(RejectReason.REJECTED, message, now))

    async def start_cooking(self, restaurant_id: str, order_id: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, Ticket.start_cooking)

    async def finish_cooking(self, restaurant_id: str, order_id: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, Ticket.finish_cooking)

    async def change_availability(
        self, restaurant_id: str, *, open_: bool | None = None, product: tuple[str, bool] | None = None
    ) -> projection.Entry:
        """Owner overrides (closing early, sold out); published as the full override state."""

        async def step(uow: UnitOfWork) -> projection.Entry:
            record = await uow.get(self.catalog.key(restaurant_id))
            entry, events = change_availability(restaurant_id, record.value if record else None, open_, product)
            uow.put(self.catalog.key(restaurant_id), entry)
            uow.emit(restaurant_id, events)
            return entry

        return await run_step(self.store, step, SOURCE)

    # ------------------------------------------------------------------ embedded catalog source

    async def apply_manifest(self, resource: RestaurantResource) -> dict[str, Any]:
        """Play the Kubernetes API server's part for ``baedal apply``: a new ``generation`` when the
        spec changed, then the shared reconcile step publishes the snapshot."""
        spec_hash = hashlib.sha256(dumps(resource.spec_snapshot()).encode()).hexdigest()

        async def step(uow: UnitOfWork) -> dict[str, Any]:
            record = await uow.get(manifest_key(resource.name))
            current = await self._own_manifest(resource.name, record.value if record else None)
            if current and not current["deleted"] and current["spec_hash"] == spec_hash:
                return {**current, "changed": False}
            live = current is not None and not current["deleted"]
            uid: str = current["uid"] if live and current else new_id()
            generation: int = current["generation"] + 1 if live and current else 1
            state = {"uid": uid, "generation": generation, "spec_hash": spec_hash, "deleted": False}
            publish = _with_bookkeeping(uow, manifest_key(resource.name), state)
            await reconcile(resource, uid, generation, publish, SOURCE)
            return {**state, "changed": True}

        return await run_step(self.store, step, SOURCE)

    async def delete_manifest(self, restaurant_id: str) -> bool:
        async def step(uow: UnitOfWork) -> bool:
            record = await uow.get(manifest_key(restaurant_id))
            current = await self._own_manifest(restaurant_id, record.value if record else None)
            if record is None or current is None or current["deleted"]:
                return False
            state = {**current, "deleted": True}
            publish = _with_bookkeeping(uow, record.key, state)
            await reconcile_removal(restaurant_id, state["uid"], state["generation"], publish, SOURCE)
            return True

        return await run_step(self.store, step, SOURCE)

    async def _own_manifest(self, restaurant_id: str, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
        """This service's manifest bookkeeping, checked against the catalog it receives.

        Another publisher (the Kubernetes operator) uses its own uids. While its incarnation is
        live, ``baedal apply`` refuses to touch the restaurant rather than publish generations that
        consumers would ignore; once that incarnation has buried ours, ours counts as deleted."""
        record = await self.catalog.record(restaurant_id)
        entry = record.value if record else projection.empty_entry(restaurant_id)
        ours = manifest["uid"] if manifest else None
        if projection.is_live(entry) and entry["uid"] != ours:
            raise DomainError(
                "MANAGED_BY_OPERATOR",
                f"restaurant {restaurant_id!r} is managed by the Kubernetes operator; change it with kubectl",
            )
        if manifest and not manifest["deleted"] and ours in entry["tombstones"]:
            return {**manifest, "deleted": True}
        return manifest

    async def publish_catalog_event(self, event: OutboundEvent) -> None:
        """The embedded publish port of an outside catalog source (the operator): this service's
        outbox carries the event to every subscriber, exactly like a ``baedal apply`` snapshot."""
        await self.store.commit([], [event])

    async def demo_loaded(self) -> bool:
        return await self.store.get(DEMO_MARKER) is not None

    async def mark_demo_loaded(self) -> None:
        """Set once every demo manifest is applied; a crash before re-applies them all (idempotent)."""
        if not await self.demo_loaded():
            await self.store.commit([Put(DEMO_MARKER, {"at": now_iso()}, None)])

    # ------------------------------------------------------------------ saga reactions

    async def on_order_paid(self, event: Event) -> None:
        """Open a ticket: accepted at once for auto-accept restaurants, else it waits for the owner
        with a durable deadline timer."""
        data = event.data

        async def step(uow: UnitOfWork) -> None:
            if await uow.get(ticket_key(data["order_id"])) is not None:
                return
            record = await self.catalog.record(data["restaurant_id"])
            if record is None:
                raise RetryLater(f"restaurant {data['restaurant_id']!r} not in this service's catalog yet")
            now = now_iso()
            ticket = _new_ticket(data, TicketStatus.PENDING, int(data["total_price"]), data["items"], now)
            events = ticket.open(record.value, now, epoch())
            uow.put(ticket_key(ticket.order_id), ticket.to_dict())
            uow.emit(ticket.order_id, events)

        await run_step(self.store, step, SOURCE)

    async def on_accept_deadline(self, event: Event) -> None:
        async def step(uow: UnitOfWork) -> None:
            record = await uow.get(ticket_key(event.data["order_id"]))
            if record is None:
                return
            ticket = Ticket.from_dict(record.value)
            events = ticket.time_out(now_iso())
            if events:
                uow.put(record.key, ticket.to_dict())
                uow.emit(ticket.order_id, events)

        await run_step(self.store, step, SOURCE)

    async def on_cancel_requested(self, event: Event) -> None:
        """Cancel the ticket; with no ticket yet, leave a CANCELLED one so that an ``order.paid``
        overtaken by this cancel cannot open (and auto-accept) a ticket later. No event: the order
        service already announced the cancel."""
        data = event.data

        async def step(uow: UnitOfWork) -> None:
            record = await uow.get(ticket_key(data["order_id"]))
            now = now_iso()
            if record is None:
                tombstone = _new_ticket(data, TicketStatus.CANCELLED, int(data["amount"]), [], now)
                uow.put(ticket_key(data["order_id"]), tombstone.to_dict())
                return
            ticket = Ticket.from_dict(record.value)
            if ticket.cancel(now):
                uow.put(record.key, ticket.to_dict())

        await run_step(self.store, step, SOURCE)

    def batch_subscriptions(self) -> list[tuple[Subscription, BatchHandler]]:
        return []

    def subscriptions(self) -> list[tuple[Subscription, Handler]]:
        return [
            (Subscription(topics.CATALOG_UPSERTED, "restaurant-catalog-upserted"), self.catalog.on_upserted),
            (Subscription(topics.CATALOG_DELETED, "restaurant-catalog-deleted"), self.catalog.on_deleted),
            (Subscription(topics.ORDER_PAID, "restaurant-on-order-paid"), self.on_order_paid),
            (Subscription(topics.TICKET_ACCEPT_DEADLINE, "restaurant-accept-deadline"), self.on_accept_deadline),
            (Subscription(topics.ORDER_CANCEL_REQUESTED, "restaurant-on-cancel-requested"), self.on_cancel_requested),
        ]
