"""Restaurant tickets: the restaurant's side of an order. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.runtime.errors import DomainError


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

    def _require(self, *allowed: TicketStatus) -> None:
        if self.status not in allowed:
            raise DomainError("INVALID_STATE", f"the order is {self.status.value} at the restaurant")

    def accept(self, now: str) -> None:
        self._require(TicketStatus.PENDING)
        self.status = TicketStatus.ACCEPTED
        self.updated_at = now

    def start_cooking(self, now: str) -> None:
        self._require(TicketStatus.ACCEPTED)
        self.status = TicketStatus.COOKING
        self.updated_at = now

    def finish_cooking(self, now: str) -> None:
        self._require(TicketStatus.COOKING)
        self.status = TicketStatus.READY
        self.updated_at = now

    def reject(self, reason: RejectReason, message: str, now: str) -> None:
        self._require(TicketStatus.PENDING)
        self.status = TicketStatus.REJECTED
        self.reason = reason.value
        self.message = message
        self.updated_at = now

    def time_out(self, now: str) -> bool:
        """The accept deadline passed: reject if still undecided, else nothing happens."""
        if self.status is not TicketStatus.PENDING:
            return False
        self.reject(RejectReason.ACCEPT_TIMEOUT, "not accepted in time", now)
        return True

    def cancel(self, now: str) -> bool:
        if self.status not in CANCELLABLE:
            return False
        self.status = TicketStatus.CANCELLED
        self.updated_at = now
        return True
