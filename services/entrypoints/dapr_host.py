"""The wiring of one service on the Dapr runtime: its own process, its own sidecar.

``BAEDAL_RUNTIME=dapr uvicorn services.entrypoints.apps.<name>:app`` runs service ``<name>`` (order, payment,
restaurant, delivery, notification) with the same domain and handler code as ``baedal up``; only
the adapters differ: state, outbox and inbox on a Dapr state store, pub/sub through Dapr
subscriptions, notifications and the card gateway through Dapr output bindings. Query-side views
(and the state store's key directory) stay in the service's own SQL database, shared by its
replicas in the cluster (``BAEDAL_DATABASE_URL``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.entrypoints.bootstrap import EXTRA_SCHEMA, SERVICES, build_service, make_database, token_issuer, wire
from services.entrypoints.gateway import SERVICE_ROUTERS
from services.runtime.dapr.paygate import DaprPaymentGateway
from services.runtime.dapr.sidecar import DaprOutputBinding, Sidecar
from services.runtime.dapr.state import DIRECTORY_SCHEMA, DaprStateStore, KeyDirectory
from services.runtime.dapr.subscriber import DaprSubscriber
from services.runtime.embedded.storage import ServiceDb
from services.runtime.process import stop_requested
from services.runtime.settings import Settings
from services.runtime.web.api import BodySizeLimit, OneLineStartupFailure, probes
from services.runtime.web.problems import install_error_handlers

log = logging.getLogger("baedal")


class ServiceHost:
    """One service on Dapr adapters. The routers find the service as ``app.state.platform.<name>``."""

    def __init__(self, name: str, settings: Settings) -> None:
        if name not in SERVICES:
            raise ValueError(f"no service {name!r}; services: {', '.join(SERVICES)}")
        self.name = name
        self.settings = settings
        dapr = settings.dapr
        self.sidecar = Sidecar(dapr.sidecar_timeout_s)
        self.db = ServiceDb(name, make_database(settings, name))
        self.store = DaprStateStore(self.sidecar, name, dapr.store_of(name), KeyDirectory(self.db), dapr.retention_s)
        gateway = DaprPaymentGateway(
            self.sidecar,
            dapr.paygate_binding,
            timeout_s=settings.paygate_timeout_s,
            failure_threshold=settings.paygate_failure_threshold,
            recovery_timeout_s=settings.paygate_recovery_s,
        )
        self.service = build_service(
            name, self.store, self.db, gateway, DaprOutputBinding(self.sidecar, dapr.notify_binding)
        )
        setattr(self, name, self.service)
        self.subscriber = DaprSubscriber(name, self.store, dapr.pubsub)
        wire(self.service, self.subscriber.subscribe, self.subscriber.subscribe_batch)
        self.tokens = token_issuer(settings)
        self.started = False

    async def start(self) -> None:
        await self.db.open([*EXTRA_SCHEMA.get(self.name, ()), *DIRECTORY_SCHEMA])
        with stop_requested() as stop:  # SIGTERM while daprd is not there yet: stop now
            await self.sidecar.connect(stop)
        self.started = True
        log.info("%s is up behind its Dapr sidecar; it reads %s", self.name, ", ".join(self.subscriber.streams()))

    async def stop(self) -> None:
        self.started = False
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


def create_service_app(name: str, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.runtime != "dapr":
        raise RuntimeError(
            f"services.entrypoints.apps.{name} runs one service behind its Dapr sidecar: set BAEDAL_RUNTIME=dapr. "
            "To run every service in one process, use `baedal up`."
        )
    host = ServiceHost(name, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await host.start()
        try:
            yield
        finally:  # uvicorn has drained in-flight requests (and event deliveries) by now
            await host.stop()

    app = FastAPI(title=f"Baedal {name} service", version="1.0", lifespan=lifespan)
    app.state.platform = host
    app.state.tokens = host.tokens
    router = SERVICE_ROUTERS[name]
    install_error_handlers(app, [*router.routes, *probes.routes])
    app.include_router(router)
    app.include_router(probes)
    host.subscriber.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(OneLineStartupFailure)
    return app
