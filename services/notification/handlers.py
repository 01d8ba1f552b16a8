"""The notification service: feeds for customers, owners and riders, and the outbound channel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from services import topics
from services.catalog.replica import CatalogReplica
from services.notification.domain import Notification, for_order_status, for_paid_order, for_ready_delivery
from services.notification.feed import Feed
from services.runtime.clock import now_iso
from services.runtime.events import Event
from services.runtime.ports import BatchHandler, Handler, OutputBinding, StateStore, Subscription


class NotificationService:
    def __init__(self, store: StateStore, feed: Feed, channel: OutputBinding) -> None:
        self.feed = feed
        self.channel = channel  # the customer's message channel (KakaoTalk in the seeds)
        self.restaurants = CatalogReplica(store, "restaurant:")  # who owns what

    async def on_order_status(self, events: Sequence[Event]) -> None:
        now = now_iso()
        notes = [for_order_status(e.id, e.data["order"], now) for e in events]
        await self.feed.add(notes)
        for note in notes:
            await self.channel.invoke("create", asdict(note))

    async def on_order_paid(self, event: Event) -> None:
        entry = await self.restaurants.live(event.data["restaurant_id"])
        owners = entry["spec"]["owners"] if entry else []
        await self.feed.add(for_paid_order(event.id, event.data, owners, now_iso()))

    async def on_delivery_status(self, events: Sequence[Event]) -> None:
        now = now_iso()
        alerts = [for_ready_delivery(e.id, e.data["delivery"], now) for e in events]
        await self.feed.add([a for a in alerts if isinstance(a, Notification)])

    def subscriptions(self) -> list[tuple[Subscription, Handler]]:
        return [
            (Subscription(topics.ORDER_PAID, "notify-owners"), self.on_order_paid),
            (Subscription(topics.CATALOG_UPSERTED, "notify-catalog-upserted"), self.restaurants.on_upserted),
            (Subscription(topics.CATALOG_DELETED, "notify-catalog-deleted"), self.restaurants.on_deleted),
        ]

    def batch_subscriptions(self) -> list[tuple[Subscription, BatchHandler]]:
        return [
            (Subscription(topics.ORDER_STATUS_CHANGED, "notify-customers"), self.on_order_status),
            (
                Subscription(
                    topics.DELIVERY_STATUS_CHANGED,
                    "notify-riders",
                    lambda data: data["delivery"]["status"] == "AVAILABLE",
                ),
                self.on_delivery_status,
            ),
        ]
