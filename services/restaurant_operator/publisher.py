"""The publish port of the operator, and its adapters, chosen by configuration.

A :class:`CatalogPublisher` takes one catalog event and returns once the platform has it durably,
or raises :class:`PublishError`. The embedded adapter posts it to a running ``baedal up``
(``POST /admin/catalog/events``, which commits it through the restaurant service's outbox). A
cluster adapter publishes it on Dapr pub/sub through the operator's sidecar. :data:`ADAPTERS` maps
the runtime name (``BAEDAL_RUNTIME``) to the adapter; the handlers never know which one runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grpc
import httpx

from services.restaurant_operator.config import OperatorConfig
from services.runtime.auth import Role, TokenIssuer, load_secret
from services.runtime.dapr.sidecar import DaprPublisher, Sidecar, SidecarUnavailable
from services.runtime.events import OutboundEvent
from services.runtime.failures import CouldNotRun, response_detail

EVENTS_PATH = "/admin/catalog/events"
# An admin read with no side effects: answers only a token the platform accepts.
CHECK_PATH = "/admin/backlog"
TOKEN_SUBJECT = "restaurant-operator"
TOKEN_TTL_S = 300


class PublishError(Exception):
    """The platform did not take the event (yet): retry later."""


class PublishRejected(PublishError):
    """The platform refused the event: sending it again cannot help."""


class CatalogPublisher(Protocol):
    async def publish(self, event: OutboundEvent) -> None: ...


class EmbeddedCatalogPublisher:
    """Sends catalog events to a running embedded platform over HTTP."""

    def __init__(self, url: str, token: Callable[[], str], timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    async def publish(self, event: OutboundEvent) -> None:
        # A client per event: publishes are rare, and the operator's handlers may run in any loop.
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=self._timeout_s) as client:
                response = await client.post(
                    EVENTS_PATH, json=event.envelope(), headers={"Authorization": f"Bearer {self._token()}"}
                )
        except httpx.HTTPError as exc:
            raise PublishError(f"platform at {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return
        detail = response_detail(response)
        if response.status_code == 422:
            raise PublishRejected(detail)
        raise PublishError(f"platform at {self.url} answered {response.status_code}: {detail}")


def admin_token(config: OperatorConfig) -> Callable[[], str]:
    """The configured token, or short-lived admin tokens signed with the platform's data dir secret."""
    if config.token:
        token = config.token
        return lambda: token
    issuer = TokenIssuer(load_secret(config.data_dir))
    return lambda: issuer.issue(Role.ADMIN, TOKEN_SUBJECT, TOKEN_TTL_S)


def embedded_publisher(config: OperatorConfig) -> CatalogPublisher:
    return EmbeddedCatalogPublisher(config.url, admin_token(config), config.request_timeout_s)


def check_platform(config: OperatorConfig) -> None:
    """Fail at start, not at the first resource, when the platform is unreachable or refuses the
    token (:class:`httpx.HTTPError`). Later outages are retried: they show as ``Synced=False``."""
    headers = {"Authorization": f"Bearer {admin_token(config)()}"}
    with httpx.Client(base_url=config.url, timeout=config.request_timeout_s) as client:
        client.get(CHECK_PATH, headers=headers).raise_for_status()


class DaprCatalogPublisher:
    """In the cluster: catalog events straight onto Dapr pub/sub (the restaurant service's stream,
    where every catalog consumer already reads), through the operator pod's own sidecar."""

    def __init__(self, pubsub: str) -> None:
        self.pubsub = pubsub

    async def publish(self, event: OutboundEvent) -> None:
        # A connection per event: publishes are rare, and kopf's handlers may run in any loop.
        sidecar = Sidecar()
        try:
            await sidecar.connect()
            await DaprPublisher(sidecar, self.pubsub).publish(event)
        except grpc.RpcError as exc:  # DaprGrpcError is one too
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT):
                raise PublishRejected(f"Dapr refused the event: {exc}") from exc
            raise PublishError(f"Dapr did not take the event: {exc}") from exc
        except SidecarUnavailable as exc:
            raise PublishError(str(exc)) from exc
        finally:
            await sidecar.close()


def dapr_publisher(config: OperatorConfig) -> CatalogPublisher:
    return DaprCatalogPublisher(config.dapr_pubsub)


ADAPTERS: dict[str, Callable[[OperatorConfig], CatalogPublisher]] = {
    "embedded": embedded_publisher,
    "dapr": dapr_publisher,
}


def make_publisher(config: OperatorConfig) -> CatalogPublisher:
    try:
        factory = ADAPTERS[config.runtime]
    except KeyError:
        known = ", ".join(ADAPTERS)
        raise CouldNotRun(f"no catalog publisher for runtime {config.runtime!r} (known: {known})") from None
    return factory(config)
