"""The one place that wires ports to adapters: the embedded platform (every service, one process)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import cast

from services.catalog.manifest import RestaurantResource, load_manifests
from services.delivery.handlers import DeliveryService
from services.notification.handlers import NotificationService
from services.order.handlers import OrderService
from services.payment.gateway import PaymentGateway
from services.payment.handlers import PaymentService
from services.restaurant.handlers import RestaurantService
from services.runtime.auth import TokenIssuer, load_or_create_secret
from services.runtime.embedded.dispatcher import Dispatcher
from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.embedded.webhook import OUTBOUND_SCHEMA, RecordingWebhookBinding, WebhookSender
from services.runtime.paygate import HttpPaymentGateway
from services.runtime.ports import BatchHandler, Handler, OutputBinding, StateStore, Subscription
from services.runtime.settings import Settings
from services.runtime.sql.db import Database, PostgresDatabase, SqliteDatabase
from services.runtime.sql.delivery_board import SCHEMA as BOARD_SCHEMA
from services.runtime.sql.delivery_board import SqlDeliveryBoard
from services.runtime.sql.notification_feed import SCHEMA as FEED_SCHEMA
from services.runtime.sql.notification_feed import SqlFeed
from services.runtime.sql.order_views import SCHEMA as ORDER_VIEW_SCHEMA
from services.runtime.sql.order_views import SqlOrderViews

log = logging.getLogger("baedal")

SERVICES = ("order", "payment", "restaurant", "delivery", "notification")
EXTRA_SCHEMA = {"order": ORDER_VIEW_SCHEMA, "delivery": BOARD_SCHEMA, "notification": [*FEED_SCHEMA, *OUTBOUND_SCHEMA]}


def make_database(settings: Settings, service: str) -> Database:
    if settings.database_url:
        return PostgresDatabase(settings.database_url, f"{settings.schema_prefix}{service}")
    return SqliteDatabase(settings.data_dir / f"{service}.db", settings.sqlite_synchronous)


AnyService = OrderService | PaymentService | RestaurantService | DeliveryService | NotificationService


def build_service(
    name: str, store: StateStore, db: ServiceDb, gateway: PaymentGateway, channel: OutputBinding
) -> AnyService:
    """One service on the given adapters (the same for both runtimes but for the adapters)."""
    if name == "order":
        return OrderService(store, SqlOrderViews(db))
    if name == "payment":
        return PaymentService(store, gateway)
    if name == "restaurant":
        return RestaurantService(store)
    if name == "delivery":
        return DeliveryService(store, SqlDeliveryBoard(db))
    if name == "notification":
        return NotificationService(store, SqlFeed(db), channel)
    raise ValueError(f"no service {name!r}; services: {', '.join(SERVICES)}")


def wire(
    service: AnyService,
    subscribe: Callable[[Subscription, Handler], None],
    subscribe_batch: Callable[[Subscription, BatchHandler], None],
) -> None:
    """Register a service's consumers with a runtime's bus."""
    for subscription, handler in service.subscriptions():
        subscribe(subscription, handler)
    if isinstance(service, OrderService | DeliveryService | NotificationService):
        for subscription, batch_handler in service.batch_subscriptions():
            subscribe_batch(subscription, batch_handler)


def token_issuer(settings: Settings) -> TokenIssuer:
    """Tokens signed with the configured secret (the cluster's Secret), else the data dir's."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else load_or_create_secret(settings.data_dir)
    return TokenIssuer(secret, settings.token_ttl_s)


class Platform:
    """Every service of Baedal in one process, on the embedded runtime."""

    def __init__(
        self, settings: Settings, paused: set[str] | None = None, gateway: PaymentGateway | None = None
    ) -> None:
        self.settings = settings
        self.dbs = {name: ServiceDb(name, make_database(settings, name)) for name in SERVICES}
        self.gateway = gateway or HttpPaymentGateway(
            settings.paygate_url,
            timeout_s=settings.paygate_timeout_s,
            failure_threshold=settings.paygate_failure_threshold,
            recovery_timeout_s=settings.paygate_recovery_s,
        )
        built = {
            name: build_service(name, SqlStateStore(db), db, self.gateway, RecordingWebhookBinding(db))
            for name, db in self.dbs.items()
        }
        self.order = cast(OrderService, built["order"])
        self.payment = cast(PaymentService, built["payment"])
        self.restaurant = cast(RestaurantService, built["restaurant"])
        self.delivery = cast(DeliveryService, built["delivery"])
        self.notification = cast(NotificationService, built["notification"])
        self.webhook = WebhookSender(self.dbs["notification"], settings.notify_webhook)
        self.dispatcher = Dispatcher(self.dbs, settings, paused)
        for name, service in built.items():
            wire(
                service,
                partial(self.dispatcher.subscribe, name),
                partial(self.dispatcher.subscribe_batch, name),
            )
        self.tokens = token_issuer(settings)
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
