"""The order aggregate and its state machine. Pure: no I/O, no clock (callers pass ``now``).

Every change returns the events it causes (:class:`~services.topics.DomainEvent`): an empty list
when a late or repeated saga event changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services import topics
from services.catalog import projection
from services.runtime.errors import DomainError
from services.topics import DomainEvent


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    ACCEPTED = "ACCEPTED"
    COOKING = "COOKING"
    READY = "READY"
    PICKED_UP = "PICKED_UP"
    DELIVERED = "DELIVERED"
    COMPLETED = "COMPLETED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class CancelReason(StrEnum):
    PAYMENT_FAILED = "PAYMENT_FAILED"
    PAYMENT_UNAVAILABLE = "PAYMENT_UNAVAILABLE"
    REJECTED = "REJECTED"
    CUSTOMER_CANCELLED = "CUSTOMER_CANCELLED"
    ACCEPT_TIMEOUT = "ACCEPT_TIMEOUT"


CUSTOMER_CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.ACCEPTED})
# States in which the customer's money is (and must be) held by a COMPLETED payment.
PAID_STATES = frozenset(
    {
        OrderStatus.PAID,
        OrderStatus.ACCEPTED,
        OrderStatus.COOKING,
        OrderStatus.READY,
        OrderStatus.PICKED_UP,
        OrderStatus.DELIVERED,
        OrderStatus.COMPLETED,
    }
)
SETTLED_STATES = frozenset(OrderStatus) - {OrderStatus.PENDING, OrderStatus.CANCELLING}


@dataclass(frozen=True)
class LineRequest:
    product_id: str
    quantity: int
    unit_price: int


@dataclass(frozen=True)
class PlaceOrder:
    """A customer's order request, already shape-checked by the API layer."""

    customer_id: str
    restaurant_id: str
    items: tuple[LineRequest, ...]
    delivery: dict[str, Any]
    payment_method: str
    total_price: int
    card_token: str | None = None  # passed on to the payment service, never stored with the order


@dataclass
class Order:
    id: str
    customer_id: str
    restaurant_id: str
    status: OrderStatus
    items: list[dict[str, Any]]
    total_price: int
    delivery: dict[str, Any]
    payment: dict[str, Any]
    created_at: str
    updated_at: str
    cancel_reason: CancelReason | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    version: int = 1

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every nested value, on every saga step.
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "restaurant_id": self.restaurant_id,
            "status": self.status,
            "items": list(self.items),
            "total_price": self.total_price,
            "delivery": dict(self.delivery),
            "payment": dict(self.payment),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "cancel_reason": self.cancel_reason,
            "history": list(self.history),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Order:
        values = dict(data)
        values["status"] = OrderStatus(values["status"])
        reason = values.get("cancel_reason")
        values["cancel_reason"] = CancelReason(reason) if reason else None
        return cls(**values)

    def view(self) -> dict[str, Any]:
        """The public order view of the API contract."""
        data = self.to_dict()
        data.pop("version")
        return data

    # ------------------------------------------------------------------ the events it publishes

    def status_event(self) -> DomainEvent:
        """``order.status-changed``: the order as the API shows it, after every change."""
        return DomainEvent(topics.ORDER_STATUS_CHANGED, {"order": self.view(), "version": self.version})

    def placed_event(self, card_token: str | None) -> DomainEvent:
        """``order.placed``, for the payment service (the only place the card token travels)."""
        return DomainEvent(
            topics.ORDER_PLACED,
            {
                "order_id": self.id,
                "customer_id": self.customer_id,
                "restaurant_id": self.restaurant_id,
                "amount": self.total_price,
                "payment": {"method": self.payment["method"], "card_token": card_token},
            },
        )

    def paid_event(self) -> DomainEvent:
        """``order.paid``, for the restaurant: what to cook, and where it goes."""
        return DomainEvent(
            topics.ORDER_PAID,
            {
                "order_id": self.id,
                "customer_id": self.customer_id,
                "restaurant_id": self.restaurant_id,
                "total_price": self.total_price,
                "items": self.items,
                "delivery": self.delivery,
            },
        )

    def cancel_requested_event(self) -> DomainEvent:
        """``order.cancel-requested``, for the payment (refund or void) and the restaurant."""
        assert self.cancel_reason is not None
        return DomainEvent(
            topics.ORDER_CANCEL_REQUESTED,
            {
                "order_id": self.id,
                "customer_id": self.customer_id,
                "restaurant_id": self.restaurant_id,
                "amount": self.total_price,
                "method": self.payment["method"],
                "reason": self.cancel_reason.value,
            },
        )

    # ------------------------------------------------------------------ transitions

    def _move(self, status: OrderStatus, now: str) -> None:
        self.status = status
        self.updated_at = now
        self.history.append({"status": status.value, "at": now})
        self.version += 1

    def payment_completed(self, now: str) -> list[DomainEvent]:
        """PENDING → PAID, then ``order.paid``. Anything else is a late or repeated event and
        changes nothing (a cancelling order's money is refunded by the payment service, which saw
        the cancel too)."""
        if self.status is not OrderStatus.PENDING:
            return []
        self.payment["status"] = "COMPLETED"
        self._move(OrderStatus.PAID, now)
        return [self.status_event(), self.paid_event()]

    def payment_failed(self, reason: CancelReason, now: str) -> list[DomainEvent]:
        """No money moved: PENDING → CANCELLED, or CANCELLING → CANCELLED when the customer had
        already asked to cancel."""
        if self.status is OrderStatus.PENDING:
            self.cancel_reason = reason
        elif self.status is not OrderStatus.CANCELLING:
            return []
        self.payment["status"] = "FAILED"
        self._move(OrderStatus.CANCELLED, now)
        return [self.status_event()]

    def payment_refunded(self, now: str) -> list[DomainEvent]:
        if self.status is not OrderStatus.CANCELLING:
            return []
        self.payment["status"] = "REFUNDED"
        self._move(OrderStatus.CANCELLED, now)
        return [self.status_event()]

    def restaurant_accepted(self, now: str) -> list[DomainEvent]:
        if self.status is not OrderStatus.PAID:
            return []
        self._move(OrderStatus.ACCEPTED, now)
        return [self.status_event()]

    def restaurant_rejected(self, reason: CancelReason, now: str) -> list[DomainEvent]:
        """PAID → CANCELLING, then ``order.cancel-requested``: the money is refunded before the
        order is CANCELLED."""
        if self.status is not OrderStatus.PAID:
            return []
        self.cancel_reason = reason
        self._move(OrderStatus.CANCELLING, now)
        return [self.status_event(), self.cancel_requested_event()]

    def cooking_started(self, now: str) -> list[DomainEvent]:
        if self.status is not OrderStatus.ACCEPTED:
            return []
        self._move(OrderStatus.COOKING, now)
        return [self.status_event()]

    def cooking_finished(self, now: str) -> list[DomainEvent]:
        """→ READY; from ACCEPTED too when the 'started' event is still on its way (both steps are
        recorded, so the history shows every state; one event tells the result)."""
        if self.status is OrderStatus.ACCEPTED:
            self._move(OrderStatus.COOKING, now)
        if self.status is not OrderStatus.COOKING:
            return []
        self._move(OrderStatus.READY, now)
        return [self.status_event()]

    def picked_up(self, now: str) -> list[DomainEvent]:
        if self.status is not OrderStatus.READY:
            return []
        self._move(OrderStatus.PICKED_UP, now)
        return [self.status_event()]

    def delivered(self, now: str) -> list[DomainEvent]:
        if self.status is OrderStatus.READY:
            self._move(OrderStatus.PICKED_UP, now)
        if self.status is not OrderStatus.PICKED_UP:
            return []
        self._move(OrderStatus.DELIVERED, now)
        return [self.status_event()]

    def confirm(self, now: str) -> list[DomainEvent]:
        """The customer confirms receipt."""
        if self.status is not OrderStatus.DELIVERED:
            raise DomainError(
                "INVALID_STATE", f"only a DELIVERED order can be confirmed, this one is {self.status.value}"
            )
        self._move(OrderStatus.COMPLETED, now)
        return [self.status_event()]

    def request_cancel(self, now: str) -> list[DomainEvent]:
        """The customer's cancel, then ``order.cancel-requested``. Raises INVALID_STATE once cooking
        has started or it is over."""
        if self.status not in CUSTOMER_CANCELLABLE:
            raise DomainError("INVALID_STATE", f"an order in {self.status.value} can no longer be cancelled")
        self.cancel_reason = CancelReason.CUSTOMER_CANCELLED
        self._move(OrderStatus.CANCELLING, now)
        return [self.status_event(), self.cancel_requested_event()]


def place(
    order_id: str, command: PlaceOrder, entry: projection.Entry | None, now: str
) -> tuple[Order, list[DomainEvent]]:
    """Validate a request against the order service's own menu read store and build the order,
    with the events placing it causes: ``order.placed`` and its first ``order.status-changed``."""
    if not projection.is_live(entry):
        raise DomainError("RESTAURANT_NOT_FOUND", f"restaurant {command.restaurant_id!r} does not exist")
    assert entry is not None
    if not projection.effective_open(entry):
        raise DomainError("RESTAURANT_CLOSED", f"restaurant {command.restaurant_id!r} is not taking orders")
    menu = {item["id"]: item for item in projection.effective_items(entry)}
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in command.items:
        item = menu.get(line.product_id)
        if item is None:
            raise DomainError("PRODUCT_NOT_FOUND", f"product {line.product_id!r} is not on the menu")
        if not item["available"]:
            raise DomainError("PRODUCT_UNAVAILABLE", f"product {line.product_id!r} is sold out")
        if line.product_id in seen:
            raise DomainError("VALIDATION_ERROR", f"product {line.product_id!r} is listed twice")
        if line.unit_price != item["price"]:
            raise DomainError(
                "PRICE_MISMATCH",
                f"product {line.product_id!r} costs {item['price']} now, not {line.unit_price}",
            )
        seen.add(line.product_id)
        lines.append(
            {
                "product_id": line.product_id,
                "name": item["name"],
                "quantity": line.quantity,
                "unit_price": line.unit_price,
            }
        )
    spec = entry["spec"]
    fee = spec["express_fee"] if command.delivery.get("express") else spec["delivery_fee"]
    expected = sum(line.quantity * line.unit_price for line in command.items) + fee
    if command.total_price != expected:
        raise DomainError(
            "TOTAL_MISMATCH",
            f"total_price must be {expected} (items plus delivery fee {fee}), not {command.total_price}",
        )
    order = Order(
        id=order_id,
        customer_id=command.customer_id,
        restaurant_id=command.restaurant_id,
        status=OrderStatus.PENDING,
        items=lines,
        total_price=expected,
        delivery=dict(command.delivery),
        payment={"method": command.payment_method, "status": "PENDING"},
        created_at=now,
        updated_at=now,
        history=[{"status": OrderStatus.PENDING.value, "at": now}],
    )
    return order, [order.placed_event(command.card_token), order.status_event()]
