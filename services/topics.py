"""Every topic in the system (the event catalogue in docs/events.md describes each payload)."""

from services.catalog.reconcile import AVAILABILITY, DELETED, UPSERTED

CATALOG_UPSERTED = UPSERTED
CATALOG_DELETED = DELETED
RESTAURANT_AVAILABILITY = AVAILABILITY

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
