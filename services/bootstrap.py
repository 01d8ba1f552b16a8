"""The one place that wires ports to adapters: the embedded platform (every service, one process)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.catalog.manifest import RestaurantResource, load_manifests
from services.delivery.board import SCHEMA as BOARD_SCHEMA
from services.delivery.board import SqlDeliveryBoard
from services.delivery.handlers import DeliveryService
from services.notification.feed import SCHEMA as FEED_SCHEMA
from services.notification.feed import RecordingWebhookBinding, SqlFeed, WebhookSender
from services.notification.handlers import NotificationService
from services.order.handlers import OrderService
from services.order.views import SCHEMA as ORDER_VIEW_SCHEMA
from services.order.views import SqlOrderViews
from services.payment.gateway import HttpPaymentGateway, PaymentGateway
from services.payment.handlers import PaymentService
from services.restaurant.handlers import RestaurantService
from services.runtime.auth import TokenIssuer, load_or_create_secret
from services.runtime.db import Database, PostgresDatabase, SqliteDatabase
from services.runtime.embedded.dispatcher import Dispatcher
from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.settings import Settings

log = logging.getLogger("baedal")

SERVICES = ("order", "payment", "restaurant", "delivery", "notification")
EXTRA_SCHEMA = {"order": ORDER_VIEW_SCHEMA, "delivery": BOARD_SCHEMA, "notification": FEED_SCHEMA}


def make_database(settings: Settings, service: str) -> Database:
    if settings.database_url:
        return PostgresDatabase(settings.database_url, f"{settings.schema_prefix}{service}")
    return SqliteDatabase(settings.data_dir / f"{service}.db", settings.sqlite_synchronous)


class Platform:
    """Every service of Baedal in one process, on the embedded runtime."""

    def __init__(
        self, settings: Settings, paused: set[str] | None = None, gateway: PaymentGateway | None = None
    ) -> None:
        self.settings = settings
        self.dbs = {name: ServiceDb(name, make_database(settings, name)) for name in SERVICES}
        self.order = OrderService(SqlStateStore(self.dbs["order"]), SqlOrderViews(self.dbs["order"]))
        self.gateway = gateway or HttpPaymentGateway(
            settings.paygate_url,
            timeout_s=settings.paygate_timeout_s,
            failure_threshold=settings.paygate_failure_threshold,
            recovery_timeout_s=settings.paygate_recovery_s,
        )
        self.payment = PaymentService(SqlStateStore(self.dbs["payment"]), self.gateway)
        self.restaurant = RestaurantService(SqlStateStore(self.dbs["restaurant"]))
        self.delivery = DeliveryService(SqlStateStore(self.dbs["delivery"]), SqlDeliveryBoard(self.dbs["delivery"]))
        self.notification = NotificationService(
            SqlStateStore(self.dbs["notification"]),
            SqlFeed(self.dbs["notification"]),
            RecordingWebhookBinding(self.dbs["notification"]),
        )
        self.webhook = WebhookSender(self.dbs["notification"], settings.notify_webhook)
        self.dispatcher = Dispatcher(self.dbs, settings, paused)
        services: dict[str, OrderService | PaymentService | RestaurantService | DeliveryService | NotificationService]
        services = {
            "order": self.order,
            "payment": self.payment,
            "restaurant": self.restaurant,
            "delivery": self.delivery,
            "notification": self.notification,
        }
        for name, service in services.items():
            for subscription, handler in service.subscriptions():
                self.dispatcher.subscribe(name, subscription, handler)
        projectors: list[tuple[str, OrderService | DeliveryService | NotificationService]] = [
            ("order", self.order),
            ("delivery", self.delivery),
            ("notification", self.notification),
        ]
        for name, projector in projectors:
            for subscription, batch_handler in projector.batch_subscriptions():
                self.dispatcher.subscribe_batch(name, subscription, batch_handler)
        self.tokens = TokenIssuer(load_or_create_secret(settings.data_dir), settings.token_ttl_s)
        self.started = False

    async def start(self) -> None:
        for name, db in self.dbs.items():
            await db.open(EXTRA_SCHEMA.get(name, ()))
        await self.dispatcher.start()
        self.webhook.start()
        self.started = True
        if self.settings.load_demo and not await self.restaurant.demo_loaded():
            await self.load_manifests()
            await self.restaurant.mark_demo_loaded()

    async def load_manifests(self) -> None:
        path = self.settings.demo_manifests
        if not path.exists():
            log.warning("no demo manifests at %s; the catalog starts empty", path)
            return
        for document in load_manifests(path):
            resource = RestaurantResource.model_validate(document)
            await self.restaurant.apply_manifest(resource)
            log.info("loaded demo restaurant %s", resource.name)

    async def stop(self) -> None:
        self.started = False
        await self.webhook.stop()
        await self.dispatcher.stop()
        for db in self.dbs.values():
            await db.database.close()

    async def ready(self) -> dict[str, bool]:
        status: dict[str, bool] = {}
        for name, db in self.dbs.items():
            try:
                await db.database.fetchone("SELECT 1")
                status[name] = self.started
            except Exception:
                status[name] = False
        return status

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Platform]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()
