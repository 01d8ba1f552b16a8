"""Every topic in the system (the event catalogue in docs/events.md describes each payload), and
the pure form of an event a domain change causes. It imports only the standard library: every
layer may name a topic, and domain code may say what its changes publish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CATALOG_UPSERTED = "catalog.restaurant-upserted"
CATALOG_DELETED = "catalog.restaurant-deleted"
RESTAURANT_AVAILABILITY = "restaurant.availability-changed"

ORDER_PLACED = "order.placed"
ORDER_PAID = "order.paid"
ORDER_STATUS_CHANGED = "order.status-changed"
ORDER_CANCEL_REQUESTED = "order.cancel-requested"

PAYMENT_COMPLETED = "payment.completed"
PAYMENT_FAILED = "payment.failed"
PAYMENT_REFUNDED = "payment.refunded"

TICKET_ACCEPTED = "ticket.accepted"
TICKET_REJECTED = "ticket.rejected"
TICKET_ACCEPT_DEADLINE = "ticket.accept-deadline"
TICKET_COOKING_STARTED = "ticket.cooking-started"
TICKET_READY = "ticket.ready"

DELIVERY_STATUS_CHANGED = "delivery.status-changed"

# The service that publishes each kind of event (by the topic's first part). Each service's events
# share one stream on Dapr (``stream_of``); subscribers pick theirs by the event type.
PUBLISHERS = {
    "order": "order",
    "payment": "payment",
    "ticket": "restaurant",
    "catalog": "restaurant",
    "restaurant": "restaurant",
    "delivery": "delivery",
}


def publisher_of(topic: str) -> str:
    return PUBLISHERS[topic.split(".", 1)[0]]


def stream_of(service: str) -> str:
    """The pub/sub topic (Dapr) that carries every event ``service`` publishes."""
    return f"{service}-events"


def dead_letters_of(service: str) -> str:
    return f"{service}-dead-letters"


@dataclass(frozen=True)
class DomainEvent:
    """An event an aggregate's change causes, as pure data: ``topic`` and payload ``data`` (and
    ``deliver_at``, epoch seconds, for a durable timer). The handler's unit of work publishes it,
    as the service's ``OutboundEvent`` about the aggregate, once the change commits."""

    topic: str
    data: dict[str, Any]
    deliver_at: float | None = None
