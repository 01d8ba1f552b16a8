"""The routing table (method + path → service), derived from the services' routers.

Embedded, the gateway includes every router in one app. On Dapr the same table tells the gateway
which service to forward each request to (two services share the ``/restaurants/{id}/...``
prefix, which a plain Ingress cannot split). A route added to a router is routed at once.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.routing import APIRoute

from services.delivery.api import router as delivery_router
from services.notification.api import router as notification_router
from services.order.api import router as order_router
from services.payment.api import router as payment_router
from services.restaurant.api import router as restaurant_router

SERVICE_ROUTERS: dict[str, APIRouter] = {
    "order": order_router,
    "payment": payment_router,
    "restaurant": restaurant_router,
    "delivery": delivery_router,
    "notification": notification_router,
}

ROUTES: list[tuple[str, str, str]] = [
    (method, route.path, service)
    for service, router in SERVICE_ROUTERS.items()
    for route in router.routes
    if isinstance(route, APIRoute)
    for method in sorted(route.methods or ())
]

_PATTERNS = [
    (method, re.compile("^" + re.sub(r"\{[^/}]+\}", "[^/]+", path) + "$"), service) for method, path, service in ROUTES
]


def service_for(method: str, path: str) -> str | None:
    """The service that answers ``method path``, by the routing table (None: no such route)."""
    for route_method, pattern, service in _PATTERNS:
        if route_method == method and pattern.match(path):
            return service
    return None
