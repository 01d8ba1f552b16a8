"""The one place that wires ports to adapters, for both runtimes.

- :class:`Platform`: every service in one process on the embedded runtime (SQL state stores with
  their outbox, the in-process dispatcher, the card gateway over HTTP, the webhook channel);
- :class:`ServiceHost`: one service in its own process behind its Dapr sidecar (Dapr state store,
  outbox and subscriptions, output bindings for the card gateway and the channel);
- :func:`catalog_publisher`: how the Restaurant operator reaches the catalog in either runtime.

A service is built the same way on both: :data:`FACTORIES` names the constructor, the runtime
supplies the :class:`Adapters`. Nothing else in the code picks an adapter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from services.catalog.manifest import RestaurantResource, load_manifests
from services.delivery.handlers import DeliveryService
from services.deps import Services
from services.entrypoints.engine import EngineProcess
from services.notification.handlers import NotificationService
from services.order.handlers import OrderService
from services.payment.cards import PaymentGateway
from services.payment.handlers import PaymentService
from services.restaurant.handlers import RestaurantService
from services.restaurant_operator.config import OperatorConfig
from services.restaurant_operator.publisher import CatalogPublisher
from services.runtime.auth import TokenIssuer, admin_tokens, load_or_create_secret
from services.runtime.dapr.catalog_publisher import DaprCatalogPublisher
from services.runtime.dapr.outbox import SCHEMA as OUTBOX_SCHEMA
from services.runtime.dapr.outbox import OutboxRelay
from services.runtime.dapr.paygate import DaprPaymentGateway
from services.runtime.dapr.sidecar import DaprOutputBinding, Sidecar
from services.runtime.dapr.state import DIRECTORY_SCHEMA, DaprStateStore, KeyDirectory
from services.runtime.dapr.subscriber import DaprSubscriber
from services.runtime.dapr.timers import SCHEMA as TIMERS_SCHEMA
from services.runtime.dapr.timers import TimerTable
from services.runtime.embedded.catalog_publisher import EmbeddedCatalogPublisher
from services.runtime.embedded.chaos import ChaosDelivery
from services.runtime.embedded.dispatcher import Dispatcher
from services.runtime.embedded.peer import Peer, Wake
from services.runtime.embedded.storage import ServiceDb, SqlStateStore
from services.runtime.embedded.webhook import OUTBOUND_SCHEMA, RecordingWebhookBinding, WebhookSender
from services.runtime.failures import CouldNotRun
from services.runtime.paygate import Guard, HttpPaymentGateway
from services.runtime.ports import BatchHandler, Handler, OutputBinding, Service, StateStore, Subscription
from services.runtime.process import stop_requested
from services.runtime.settings import Settings
from services.runtime.sql.db import Database, PostgresDatabase, SqliteDatabase
from services.runtime.sql.delivery_board import SCHEMA as BOARD_SCHEMA
from services.runtime.sql.delivery_board import SqlDeliveryBoard
from services.runtime.sql.notification_feed import SCHEMA as FEED_SCHEMA
from services.runtime.sql.notification_feed import SqlFeed
from services.runtime.sql.order_views import SCHEMA as ORDER_VIEW_SCHEMA
from services.runtime.sql.order_views import SqlOrderViews
from services.topics import PUBLISHERS, stream_of

log = logging.getLogger("baedal")

SERVICES = ("order", "payment", "restaurant", "delivery", "notification")
# Each service's SQL tables besides the state store's (its read models, the channel's queue).
EXTRA_SCHEMA = {"order": ORDER_VIEW_SCHEMA, "delivery": BOARD_SCHEMA, "notification": [*FEED_SCHEMA, *OUTBOUND_SCHEMA]}


@dataclass(frozen=True)
class Adapters:
    """What a service is built on; each runtime supplies its own."""

    store: StateStore
    db: ServiceDb  # the service's SQL database: read models (and, on Dapr, the key directory)
    gateway: PaymentGateway
    channel: OutputBinding


FACTORIES: dict[str, Callable[[Adapters], Services]] = {
    "order": lambda a: Services(order=OrderService(a.store, SqlOrderViews(a.db))),
    "payment": lambda a: Services(payment=PaymentService(a.store, a.gateway)),
    "restaurant": lambda a: Services(restaurant=RestaurantService(a.store)),
    "delivery": lambda a: Services(delivery=DeliveryService(a.store, SqlDeliveryBoard(a.db))),
    "notification": lambda a: Services(notification=NotificationService(a.store, SqlFeed(a.db), a.channel)),
}


def make_database(settings: Settings, service: str) -> Database:
    if settings.database_url:
        return PostgresDatabase(settings.database_url, f"{settings.schema_prefix}{service}")
    return SqliteDatabase(settings.data_dir / f"{service}.db", settings.sqlite_synchronous)


async def drop_schemas(url: str, prefix: str) -> None:
    """Remove every service's PostgreSQL schema under ``prefix`` (a throw-away run's data)."""
    for service in SERVICES:
        await PostgresDatabase(url, f"{prefix}{service}").drop_schema()


def wire(
    service: Service,
    subscribe: Callable[[Subscription, Handler], None],
    subscribe_batch: Callable[[Subscription, BatchHandler], None],
) -> None:
    """Register a service's consumers with a runtime's bus."""
    for subscription, handler in service.subscriptions():
        subscribe(subscription, handler)
    for subscription, batch_handler in service.batch_subscriptions():
        subscribe_batch(subscription, batch_handler)


def token_issuer(settings: Settings) -> TokenIssuer:
    """Tokens signed with the configured secret (the cluster's Secret), else the data dir's."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else load_or_create_secret(settings.data_dir)
    return TokenIssuer(secret, settings.token_ttl_s)


class Platform:
    """Every service of Baedal on the embedded runtime: in one process, or in two (``local`` names
    the services whose consumers run here, ``peer`` reaches the process that runs the others, and
    ``engine`` is that process when this one started it; see ``entrypoints/engine.py``)."""

    def __init__(
        self,
        settings: Settings,
        paused: set[str] | None = None,
        gateway: PaymentGateway | None = None,
        local: Collection[str] | None = None,
        peer: Peer | None = None,
        engine: EngineProcess | None = None,
    ) -> None:
        self.settings = settings
        self.dbs = {name: ServiceDb(name, make_database(settings, name)) for name in SERVICES}
        self.gateway = gateway or HttpPaymentGateway(settings.paygate_url, Guard.of(settings))
        self.services = Services.combine(
            FACTORIES[name](Adapters(SqlStateStore(db), db, self.gateway, RecordingWebhookBinding(db)))
            for name, db in self.dbs.items()
        )
        self.webhook = WebhookSender(self.dbs["notification"], settings.notify_webhook)
        chaos = ChaosDelivery(settings.chaos) if settings.chaos.enabled else None  # fault drills only
        self.dispatcher = Dispatcher(self.dbs, settings, paused, chaos, local, peer)
        self.peer = peer
        self.engine = engine
        self.peer_gone: Callable[[], None] = lambda: log.warning("the peer process is gone")
        self._engine_ready = asyncio.Event()
        self.engine_died: Callable[[int], None] = lambda code: None
        for name, service in self.services.hosted().items():
            wire(service, partial(self.dispatcher.subscribe, name), partial(self.dispatcher.subscribe_batch, name))
        self.tokens = token_issuer(settings)
        self.started = False

    # Every service is hosted here: typed access for the platform's own use and the tests.
    @property
    def order(self) -> OrderService:
        assert self.services.order is not None
        return self.services.order

    @property
    def payment(self) -> PaymentService:
        assert self.services.payment is not None
        return self.services.payment

    @property
    def restaurant(self) -> RestaurantService:
        assert self.services.restaurant is not None
        return self.services.restaurant

    @property
    def delivery(self) -> DeliveryService:
        assert self.services.delivery is not None
        return self.services.delivery

    @property
    def notification(self) -> NotificationService:
        assert self.services.notification is not None
        return self.services.notification

    async def start(self) -> None:
        for name, db in self.dbs.items():
            await db.open(EXTRA_SCHEMA.get(name, ()))
        if self.peer is not None:
            self.peer.listen(self._woken, lambda: self.peer_gone())
        await self.dispatcher.start()
        if "notification" in self.dispatcher.local:
            self.webhook.start()
        if self.engine is not None:  # after the schemas exist, so the engine never races to create them
            self.engine.start(lambda code: self.engine_died(code))
            await self.engine.wait_ready(self._engine_ready)  # else the demo catalog would wait for it
        elif self.peer is not None:
            self.peer.send(Wake.READY, "engine")
        self.started = True
        if self.settings.load_demo and not await self.restaurant.demo_loaded():
            await self.load_manifests()
            await self.restaurant.mark_demo_loaded()

    def _woken(self, wake: Wake, service: str) -> None:
        if wake is Wake.READY:
            self._engine_ready.set()
        else:
            self.dispatcher.woken(wake, service)

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
        if self.peer is not None:
            self.peer.close()  # first: the engine stopping now is no news
        if self.engine is not None:
            await self.engine.stop()
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


class ServiceHost:
    """One service on Dapr adapters, in its own process behind its own sidecar."""

    def __init__(self, name: str, settings: Settings) -> None:
        if name not in SERVICES:
            raise ValueError(f"no service {name!r}; services: {', '.join(SERVICES)}")
        self.name = name
        self.settings = settings
        dapr = settings.dapr
        self.sidecar = Sidecar(dapr.sidecar_timeout_s)
        self.db = ServiceDb(name, make_database(settings, name))
        stream = stream_of(name) if name in PUBLISHERS.values() else None
        outbox = OutboxRelay(self.sidecar, dapr.store_of(name), dapr.pubsub, stream, self.db)
        self.store = DaprStateStore(
            self.sidecar, name, dapr.store_of(name), KeyDirectory(self.db), outbox, dapr.retention_s
        )
        gateway = DaprPaymentGateway(self.sidecar, dapr.paygate_binding, Guard.of(settings))
        channel = DaprOutputBinding(self.sidecar, dapr.notify_binding)
        self.services = FACTORIES[name](Adapters(self.store, self.db, gateway, channel))
        self.subscriber = DaprSubscriber(name, self.store, dapr.pubsub, self.sidecar, TimerTable(self.db))
        wire(self.services.hosted()[name], self.subscriber.subscribe, self.subscriber.subscribe_batch)
        self.tokens = token_issuer(settings)
        self.started = False

    async def start(self) -> None:
        await self.db.open([*EXTRA_SCHEMA.get(self.name, ()), *DIRECTORY_SCHEMA, *OUTBOX_SCHEMA, *TIMERS_SCHEMA])
        with stop_requested() as stop:  # SIGTERM while daprd is not there yet: stop now
            await self.sidecar.connect(stop)
        self.store.outbox.start()
        self.subscriber.timers.start()
        self.started = True
        log.info("%s is up behind its Dapr sidecar; it reads %s", self.name, ", ".join(self.subscriber.streams()))

    async def stop(self) -> None:
        self.started = False
        await self.subscriber.timers.stop()
        await self.store.outbox.stop()
        await self.sidecar.close()
        await self.db.database.close()

    async def ready(self) -> dict[str, bool]:
        """Ready when its SQL database and its state store (through the sidecar) answer."""
        try:
            await self.db.database.fetchone("SELECT 1")
            await self.store.get("readiness-probe")
        except Exception as exc:
            log.warning("%s is not ready: %r", self.name, exc)
            return {self.name: False}
        return {self.name: self.started}


OPERATOR_TOKEN_SUBJECT = "restaurant-operator"
OPERATOR_TOKEN_TTL_S = 300


def operator_token(config: OperatorConfig) -> Callable[[], str]:
    """The configured token, or short-lived admin tokens signed with the platform's data dir secret."""
    if config.token:
        token = config.token
        return lambda: token
    return admin_tokens(config.data_dir, OPERATOR_TOKEN_SUBJECT, OPERATOR_TOKEN_TTL_S)


def catalog_publisher(config: OperatorConfig) -> CatalogPublisher:
    """The Restaurant operator's way to the catalog: HTTP to an embedded platform, or Dapr pub/sub."""
    if config.runtime == "embedded":
        return EmbeddedCatalogPublisher(config.url, operator_token(config), config.request_timeout_s)
    if config.runtime == "dapr":
        return DaprCatalogPublisher(config.dapr_pubsub)
    raise CouldNotRun(f"no catalog publisher for runtime {config.runtime!r} (known: embedded, dapr)")
