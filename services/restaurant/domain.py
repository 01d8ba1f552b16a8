"""Restaurant tickets, the restaurant's side of an order, and the owner's availability overrides.
Pure: no I/O. Every decision returns the events it causes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services import topics
from services.catalog import projection
from services.runtime.clock import iso_at
from services.runtime.errors import DomainError
from services.topics import DomainEvent


class TicketStatus(StrEnum):
    PENDING = "PENDING"  # paid, waiting for the owner
    ACCEPTED = "ACCEPTED"
    COOKING = "COOKING"
    READY = "READY"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"  # the customer cancelled


class RejectReason(StrEnum):
    REJECTED = "REJECTED"
    ACCEPT_TIMEOUT = "ACCEPT_TIMEOUT"


# The order service decides whether a customer may cancel (until cooking starts). A cancel it
# accepted can still meet a ticket whose cooking started meanwhile; the customer's cancel wins.
CANCELLABLE = frozenset({TicketStatus.PENDING, TicketStatus.ACCEPTED, TicketStatus.COOKING, TicketStatus.READY})
# The event announcing each state the order service follows; any other state is ``ticket.rejected``.
PROGRESS_TOPICS = {
    TicketStatus.ACCEPTED: topics.TICKET_ACCEPTED,
    TicketStatus.COOKING: topics.TICKET_COOKING_STARTED,
    TicketStatus.READY: topics.TICKET_READY,
}


@dataclass
class Ticket:
    order_id: str
    restaurant_id: str
    customer_id: str
    status: TicketStatus
    total_price: int
    items: list[dict[str, Any]]
    created_at: str
    updated_at: str
    accept_deadline: str | None = None
    reason: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # shallow: asdict deep-copies, and these are serialised at once

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ticket:
        values = dict(data)
        values["status"] = TicketStatus(values["status"])
        return cls(**values)

    def decision(self) -> DomainEvent:
        """The event announcing the ticket's state to the order service (see PROGRESS_TOPICS)."""
        data = {"order_id": self.order_id, "restaurant_id": self.restaurant_id}
        if self.status in PROGRESS_TOPICS:
            return DomainEvent(PROGRESS_TOPICS[self.status], data)
        return DomainEvent(topics.TICKET_REJECTED, {**data, "reason": self.reason, "message": self.message})

    def _require(self, *allowed: TicketStatus) -> None:
        if self.status not in allowed:
            raise DomainError("INVALID_STATE", f"the order is {self.status.value} at the restaurant")

    def open(self, entry: projection.Entry, now: str, now_s: float) -> list[DomainEvent]:
        """A new (PENDING) ticket meets its restaurant's catalog entry (``now_s``: the epoch time of
        ``now``). An auto-accept restaurant accepts it at once; a restaurant removed after the order
        was placed rejects it (nobody will cook it: refund); otherwise it waits for the owner until
        a durable ``ticket.accept-deadline`` timer fires."""
        if not projection.is_live(entry):
            return self.reject(RejectReason.REJECTED, "the restaurant no longer exists", now)
        if entry["spec"]["auto_accept"]:
            return self.accept(now)
        due = now_s + entry["spec"]["accept_timeout_seconds"]
        self.accept_deadline = iso_at(due)
        return [DomainEvent(topics.TICKET_ACCEPT_DEADLINE, {"order_id": self.order_id}, deliver_at=due)]

    def accept(self, now: str) -> list[DomainEvent]:
        self._require(TicketStatus.PENDING)
        self.status = TicketStatus.ACCEPTED
        self.updated_at = now
        return [self.decision()]

    def start_cooking(self, now: str) -> list[DomainEvent]:
        self._require(TicketStatus.ACCEPTED)
        self.status = TicketStatus.COOKING
        self.updated_at = now
        return [self.decision()]

    def finish_cooking(self, now: str) -> list[DomainEvent]:
        self._require(TicketStatus.COOKING)
        self.status = TicketStatus.READY
        self.updated_at = now
        return [self.decision()]

    def reject(self, reason: RejectReason, message: str, now: str) -> list[DomainEvent]:
        self._require(TicketStatus.PENDING)
        self.status = TicketStatus.REJECTED
        self.reason = reason.value
        self.message = message
        self.updated_at = now
        return [self.decision()]

    def time_out(self, now: str) -> list[DomainEvent]:
        """The accept deadline passed: reject if still undecided, else nothing happens."""
        if self.status is not TicketStatus.PENDING:
            return []
        return self.reject(RejectReason.ACCEPT_TIMEOUT, "not accepted in time", now)

    def cancel(self, now: str) -> bool:
        """The customer's cancel (the order service announced it: no event). False if the ticket
        was already over."""
        if self.status not in CANCELLABLE:
            return False
        self.status = TicketStatus.CANCELLED
        self.updated_at = now
        return True


def change_availability(
    restaurant_id: str, entry: projection.Entry | None, open_: bool | None, product: tuple[str, bool] | None
) -> tuple[projection.Entry, list[DomainEvent]]:
    """The owner's overrides (closing early, a product sold out) on the restaurant's catalog entry,
    published as the whole override state with a new ``seq``."""
    if entry is None or not projection.is_live(entry):
        raise DomainError("RESTAURANT_NOT_FOUND", f"restaurant {restaurant_id!r} does not exist")
    entry = dict(entry)
    if open_ is not None:
        entry["closed"] = not open_
    if product is not None:
        product_id, available = product
        if product_id not in {item["id"] for item in entry["spec"]["menu"]}:
            raise DomainError("PRODUCT_NOT_FOUND", f"product {product_id!r} is not on the menu")
        sold_out = set(entry["sold_out"])
        (sold_out.discard if available else sold_out.add)(product_id)
        entry["sold_out"] = sorted(sold_out)
    entry["override_seq"] += 1
    event = DomainEvent(
        topics.RESTAURANT_AVAILABILITY,
        {
            "restaurant_id": restaurant_id,
            "uid": entry["uid"],
            "seq": entry["override_seq"],
            "closed": entry["closed"],
            "sold_out": entry["sold_out"],
        },
    )
    return entry, [event]
