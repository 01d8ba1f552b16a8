"""Wallets and payments. Pure: no I/O.

A payment announces each status it reaches with one event, its :meth:`Payment.outcome`: making a
payment returns it with that event, a refund returns the refund's."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services import topics
from services.runtime.errors import DomainError
from services.topics import DomainEvent

MAX_TOP_UP = 10_000_000


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"


class FailureReason(StrEnum):
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    CANCELLED_BEFORE_PAYMENT = "CANCELLED_BEFORE_PAYMENT"
    CARD_DECLINED = "CARD_DECLINED"
    GATEWAY_UNAVAILABLE = "GATEWAY_UNAVAILABLE"


@dataclass
class Wallet:
    customer_id: str
    balance: int = 0
    topped_up: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # shallow: asdict deep-copies, and these are serialised at once

    def top_up(self, amount: int) -> None:
        if amount <= 0 or amount > MAX_TOP_UP:
            raise DomainError("VALIDATION_ERROR", f"a top-up must be between 1 and {MAX_TOP_UP} KRW")
        self.balance += amount
        self.topped_up += amount


@dataclass
class Payment:
    order_id: str
    customer_id: str
    amount: int
    method: str
    status: PaymentStatus
    failure_reason: FailureReason | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # shallow: asdict deep-copies, and these are serialised at once

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Payment:
        values = dict(data)
        values["status"] = PaymentStatus(values["status"])
        reason = values.get("failure_reason")
        values["failure_reason"] = FailureReason(reason) if reason else None
        return cls(**values)

    def outcome(self) -> DomainEvent:
        """The event announcing this payment's status to the order service: COMPLETED →
        ``payment.completed``, REFUNDED → ``payment.refunded``, anything else → ``payment.failed``
        with the order's cancel reason."""
        data: dict[str, Any] = {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "amount": self.amount,
            "method": self.method,
        }
        if self.status is PaymentStatus.COMPLETED:
            return DomainEvent(topics.PAYMENT_COMPLETED, data)
        if self.status is PaymentStatus.REFUNDED:
            return DomainEvent(topics.PAYMENT_REFUNDED, data)
        unavailable = self.failure_reason is FailureReason.GATEWAY_UNAVAILABLE
        data |= {
            "reason": "PAYMENT_UNAVAILABLE" if unavailable else "PAYMENT_FAILED",
            "failure_reason": self.failure_reason,
        }
        return DomainEvent(topics.PAYMENT_FAILED, data)


Made = tuple[Payment, list[DomainEvent]]  # a new payment, with its outcome event


def _made(payment: Payment) -> Made:
    return payment, [payment.outcome()]


def pay_from_wallet(wallet: Wallet, order_id: str, amount: int) -> Made:
    """Charge the wallet if it covers the amount; otherwise a FAILED payment and nothing moves."""
    if wallet.balance < amount:
        return _made(
            Payment(
                order_id, wallet.customer_id, amount, "wallet", PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS
            )
        )
    wallet.balance -= amount
    return _made(Payment(order_id, wallet.customer_id, amount, "wallet", PaymentStatus.COMPLETED))


def card_payment(order_id: str, customer_id: str, amount: int, approved: bool | None) -> Made:
    """The gateway's answer: approved, declined (False), or none at all (None: unavailable)."""
    if approved:
        return _made(Payment(order_id, customer_id, amount, "card", PaymentStatus.COMPLETED))
    reason = FailureReason.CARD_DECLINED if approved is False else FailureReason.GATEWAY_UNAVAILABLE
    return _made(Payment(order_id, customer_id, amount, "card", PaymentStatus.FAILED, reason))


def void(order_id: str, customer_id: str, amount: int, method: str) -> Made:
    """The order was cancelled before its payment was taken: record that it never will be."""
    return _made(
        Payment(order_id, customer_id, amount, method, PaymentStatus.FAILED, FailureReason.CANCELLED_BEFORE_PAYMENT)
    )


def refund(wallet: Wallet, payment: Payment) -> list[DomainEvent]:
    """Give a completed payment back (to the wallet it came from; a card's money goes back through
    the gateway), then ``payment.refunded``. No event if there is nothing (more) to refund."""
    if payment.status is not PaymentStatus.COMPLETED:
        return []
    if payment.method == "wallet":
        wallet.balance += payment.amount
    payment.status = PaymentStatus.REFUNDED
    return [payment.outcome()]
