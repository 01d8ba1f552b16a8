"""The API's dependencies, typed and in one place: who is calling, and which service answers.

The routers of every service read these (``Orders``, ``CurrentPrincipal``, ...), never
``app.state`` directly. An app says what it hosts by setting ``app.state.services`` (a
:class:`Services`) and ``app.state.tokens`` (the :class:`TokenIssuer`): all five services in the
embedded platform, one on Dapr.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.delivery.handlers import DeliveryService
from services.notification.feed import Feed
from services.notification.handlers import NotificationService
from services.order.handlers import OrderService
from services.payment.handlers import PaymentService
from services.restaurant.handlers import RestaurantService
from services.runtime.auth import Principal, TokenIssuer
from services.runtime.errors import ApiError
from services.runtime.ports import Service


@dataclass
class Services:
    """The services one process hosts; the others are ``None``."""

    order: OrderService | None = None
    payment: PaymentService | None = None
    restaurant: RestaurantService | None = None
    delivery: DeliveryService | None = None
    notification: NotificationService | None = None

    def hosted(self) -> dict[str, Service]:
        return {f.name: service for f in fields(self) if (service := getattr(self, f.name)) is not None}

    @staticmethod
    def combine(parts: Iterable[Services]) -> Services:
        """Every service that one of ``parts`` hosts."""
        combined = Services()
        for part in parts:
            combined = replace(combined, **{name: s for name, s in vars(part).items() if s is not None})
        return combined


S = TypeVar("S")


def _hosted(service: S | None, name: str) -> S:
    if service is None:  # a router is only mounted next to its service: this is a wiring bug
        raise RuntimeError(f"the {name} service is not hosted in this process")
    return service


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def order_service(request: Request) -> OrderService:
    return _hosted(_services(request).order, "order")


async def payment_service(request: Request) -> PaymentService:
    return _hosted(_services(request).payment, "payment")


async def restaurant_service(request: Request) -> RestaurantService:
    return _hosted(_services(request).restaurant, "restaurant")


async def delivery_service(request: Request) -> DeliveryService:
    return _hosted(_services(request).delivery, "delivery")


async def notification_feed(request: Request) -> Feed:
    return _hosted(_services(request).notification, "notification").feed


# Only for the OpenAPI document (the bearer-JWT scheme, and a security requirement on every
# operation that needs a token); the header is read below, so that every failure is our own 401.
_bearer = HTTPBearer(scheme_name="bearerAuth", bearerFormat="JWT", auto_error=False, description="baedal token")


async def current_principal(
    request: Request, _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    # async on purpose: FastAPI runs a sync dependency in a thread pool, a thread hop per request.
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "UNAUTHORIZED", "missing bearer token (Authorization: Bearer <JWT>)")
    tokens: TokenIssuer = request.app.state.tokens
    return tokens.verify(token.strip())


Orders = Annotated[OrderService, Depends(order_service)]
Payments = Annotated[PaymentService, Depends(payment_service)]
Restaurants = Annotated[RestaurantService, Depends(restaurant_service)]
Deliveries = Annotated[DeliveryService, Depends(delivery_service)]
Notifications = Annotated[Feed, Depends(notification_feed)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
