"""The restaurant service: tickets (accept/reject/timeout/cancel), owner availability changes, and
the embedded catalog source behind ``baedal apply``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from services import topics
from services.catalog import projection
from services.catalog.manifest import RestaurantResource
from services.catalog.reconcile import reconcile, reconcile_removal
from services.catalog.replica import CatalogReplica
from services.restaurant.domain import RejectReason, Ticket, TicketStatus
from services.runtime.clock import epoch, iso_at, now_iso
from services.runtime.errors import DomainError
from services.runtime.events import Event, OutboundEvent, dumps, new_id
from services.runtime.ports import BatchHandler, Handler, Put, RetryLater, StateStore, Subscription, retry_on_conflict

SOURCE = "restaurant"
DEMO_MARKER = "bootstrap:demo-catalog"


def ticket_key(order_id: str) -> str:
    return f"ticket:{order_id}"


def manifest_key(restaurant_id: str) -> str:
    return f"manifest:{restaurant_id}"


def _ticket_event(topic: str, ticket: Ticket, **extra: Any) -> OutboundEvent:
    data = {"order_id": ticket.order_id, "restaurant_id": ticket.restaurant_id, **extra}
    return OutboundEvent(topic=topic, data=data, source=SOURCE, subject=ticket.order_id)


PROGRESS_TOPICS = {
    TicketStatus.ACCEPTED: topics.TICKET_ACCEPTED,
    TicketStatus.COOKING: topics.TICKET_COOKING_STARTED,
    TicketStatus.READY: topics.TICKET_READY,
}


def _decision(ticket: Ticket) -> OutboundEvent:
    """The event announcing the ticket's new state to the order service."""
    if ticket.status in PROGRESS_TOPICS:
        return _ticket_event(PROGRESS_TOPICS[ticket.status], ticket)
    return _ticket_event(topics.TICKET_REJECTED, ticket, reason=ticket.reason, message=ticket.message)


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

    async def _decide(self, restaurant_id: str, order_id: str, decide: Callable[[Ticket, str], None]) -> Ticket:
        async def attempt() -> Ticket:
            record = await self.store.get(ticket_key(order_id))
            if record is None or record.value["restaurant_id"] != restaurant_id:
                raise DomainError("ORDER_NOT_FOUND", f"no paid order {order_id!r} at restaurant {restaurant_id!r}")
            ticket = Ticket.from_dict(record.value)
            decide(ticket, now_iso())
            await self.store.commit([Put(record.key, ticket.to_dict(), record.etag)], [_decision(ticket)])
            return ticket

        return await retry_on_conflict(attempt)

    async def accept(self, restaurant_id: str, order_id: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, lambda t, now: t.accept(now))

    async def reject(self, restaurant_id: str, order_id: str, message: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, lambda t, now: t.reject(RejectReason.REJECTED, message, now))

    async def start_cooking(self, restaurant_id: str, order_id: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, lambda t, now: t.start_cooking(now))

    async def finish_cooking(self, restaurant_id: str, order_id: str) -> Ticket:
        return await self._decide(restaurant_id, order_id, lambda t, now: t.finish_cooking(now))

    async def change_availability(
        self, restaurant_id: str, *, open_: bool | None = None, product: tuple[str, bool] | None = None
    ) -> projection.Entry:
        """Owner overrides (closing early, sold out); published as the full override state."""

        async def attempt() -> projection.Entry:
            record = await self.catalog.record(restaurant_id)
            if record is None or not projection.is_live(record.value):
                raise DomainError("RESTAURANT_NOT_FOUND", f"restaurant {restaurant_id!r} does not exist")
            entry = dict(record.value)
            if open_ is not None:
                entry["closed"] = not open_
            if product is not None:
                product_id, available = product
                if product_id not in {item["id"] for item in entry["spec"]["menu"]}:
                    raise DomainError("PRODUCT_NOT_FOUND", f"product {product_id!r} is not on the menu")
                sold_out = set(entry["sold_out"])
                (sold_out.discard if available else sold_out.add)(product_id)
                entry["sold_out"] = sorted(sold_out)
            entry["override_seq"] += 1
            event = OutboundEvent(
                topic=topics.RESTAURANT_AVAILABILITY,
                source=SOURCE,
                subject=restaurant_id,
                data={
                    "restaurant_id": restaurant_id,
                    "uid": entry["uid"],
                    "seq": entry["override_seq"],
                    "closed": entry["closed"],
                    "sold_out": entry["sold_out"],
                },
            )
            await self.store.commit([Put(record.key, entry, record.etag)], [event])
            return entry

        return await retry_on_conflict(attempt)

    # ------------------------------------------------------------------ embedded catalog source

    async def apply_manifest(self, resource: RestaurantResource) -> dict[str, Any]:
        """Play the Kubernetes API server's part for ``baedal apply``: a new ``generation`` when the
        spec changed, then the shared reconcile step publishes the snapshot."""
        spec_hash = hashlib.sha256(dumps(resource.spec_snapshot()).encode()).hexdigest()

        async def attempt() -> dict[str, Any]:
            record = await self.store.get(manifest_key(resource.name))
            current = await self._own_manifest(resource.name, record.value if record else None)
            if current and not current["deleted"] and current["spec_hash"] == spec_hash:
                return {**current, "changed": False}
            live = current is not None and not current["deleted"]
            uid: str = current["uid"] if live and current else new_id()
            generation: int = current["generation"] + 1 if live and current else 1
            state = {"uid": uid, "generation": generation, "spec_hash": spec_hash, "deleted": False}

            async def publish(event: OutboundEvent) -> None:
                await self.store.commit(
                    [Put(manifest_key(resource.name), state, record.etag if record else None)], [event]
                )

            await reconcile(resource, uid, generation, publish, SOURCE)
            return {**state, "changed": True}

        return await retry_on_conflict(attempt)

    async def delete_manifest(self, restaurant_id: str) -> bool:
        async def attempt() -> bool:
            record = await self.store.get(manifest_key(restaurant_id))
            current = await self._own_manifest(restaurant_id, record.value if record else None)
            if record is None or current is None or current["deleted"]:
                return False
            state = {**current, "deleted": True}

            async def publish(event: OutboundEvent) -> None:
                await self.store.commit([Put(record.key, state, record.etag)], [event])

            await reconcile_removal(restaurant_id, state["uid"], state["generation"], publish, SOURCE)
            return True

        return await retry_on_conflict(attempt)

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

        async def attempt() -> None:
            if await self.store.get(ticket_key(data["order_id"])) is not None:
                return
            record = await self.catalog.record(data["restaurant_id"])
            if record is None:
                raise RetryLater(f"restaurant {data['restaurant_id']!r} not in this service's catalog yet")
            now = now_iso()
            ticket = Ticket(
                order_id=data["order_id"],
                restaurant_id=data["restaurant_id"],
                customer_id=data["customer_id"],
                status=TicketStatus.PENDING,
                total_price=int(data["total_price"]),
                items=data["items"],
                created_at=now,
                updated_at=now,
            )
            events: list[OutboundEvent]
            if not projection.is_live(record.value):
                # Removed from the catalog after the order was placed: nobody will cook it; refund.
                ticket.reject(RejectReason.REJECTED, "the restaurant no longer exists", now)
                events = [_decision(ticket)]
            elif record.value["spec"]["auto_accept"]:
                ticket.accept(now)
                events = [_decision(ticket)]
            else:
                due = epoch() + record.value["spec"]["accept_timeout_seconds"]
                ticket.accept_deadline = iso_at(due)
                events = [
                    OutboundEvent(
                        topic=topics.TICKET_ACCEPT_DEADLINE,
                        source=SOURCE,
                        subject=ticket.order_id,
                        data={"order_id": ticket.order_id},
                        deliver_at=due,
                    )
                ]
            await self.store.commit([Put(ticket_key(ticket.order_id), ticket.to_dict(), None)], events)

        await retry_on_conflict(attempt)

    async def on_accept_deadline(self, event: Event) -> None:
        await self._ticket_change(event.data["order_id"], lambda t, now: t.time_out(now), publish=True)

    async def on_cancel_requested(self, event: Event) -> None:
        """Cancel the ticket; with no ticket yet, leave a CANCELLED one so that an ``order.paid``
        overtaken by this cancel cannot open (and auto-accept) a ticket later."""
        data = event.data

        def tombstone() -> Ticket:
            now = now_iso()
            return Ticket(
                order_id=data["order_id"],
                restaurant_id=data["restaurant_id"],
                customer_id=data["customer_id"],
                status=TicketStatus.CANCELLED,
                total_price=int(data["amount"]),
                items=[],
                created_at=now,
                updated_at=now,
            )

        await self._ticket_change(data["order_id"], lambda t, now: t.cancel(now), publish=False, missing=tombstone)

    async def _ticket_change(
        self,
        order_id: str,
        change: Callable[[Ticket, str], bool],
        publish: bool,
        missing: Callable[[], Ticket] | None = None,
    ) -> None:
        async def attempt() -> None:
            record = await self.store.get(ticket_key(order_id))
            if record is None:
                if missing is not None:
                    await self.store.commit([Put(ticket_key(order_id), missing().to_dict(), None)])
                return
            ticket = Ticket.from_dict(record.value)
            if not change(ticket, now_iso()):
                return
            await self.store.commit(
                [Put(record.key, ticket.to_dict(), record.etag)], [_decision(ticket)] if publish else []
            )

        await retry_on_conflict(attempt)

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
