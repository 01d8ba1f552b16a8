"""The app of one service on the Dapr runtime: its own process, its own sidecar.

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

from services.entrypoints.bootstrap import ServiceHost
from services.entrypoints.routes import SERVICE_ROUTERS
from services.runtime.settings import Settings
from services.runtime.web.api import BodySizeLimit, OneLineStartupFailure, probes
from services.runtime.web.openapi import new_app
from services.runtime.web.problems import install_error_handlers

log = logging.getLogger("baedal")


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

    app = new_app(f"Baedal {name} service", lifespan)
    app.state.platform = host
    app.state.services = host.services
    app.state.tokens = host.tokens
    router = SERVICE_ROUTERS[name]
    install_error_handlers(app, [*router.routes, *probes.routes])
    app.include_router(router)
    app.include_router(probes)
    host.subscriber.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(OneLineStartupFailure)
    return app
