"""The payment service's steps on the in-memory store: charging on ``order.placed`` (wallet or card,
through a fake gateway), refunding or voiding on ``order.cancel-requested``, and a top-up racing a
charge."""

from __future__ import annotations

from typing import Any

import pytest

from services import topics
from services.payment.cards import GatewayUnavailable
from services.payment.domain import FailureReason, PaymentStatus
from services.payment.handlers import SOURCE, PaymentService, payment_key, wallet_key
from services.runtime.events import Event, OutboundEvent
from tests.unit.fakes import FakeGateway, Interfering, incoming, topics_of

ORDER = {"customer_id": "mina", "restaurant_id": "seoul-chicken"}


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def payments(gateway: FakeGateway) -> PaymentService:
    return PaymentService(Interfering(), gateway)


def events(service: PaymentService) -> list[OutboundEvent]:
    return service.store.events  # type: ignore[attr-defined, no-any-return]


def order_placed(order_id: str = "o1", amount: int = 17000, method: str = "wallet", token: str | None = None) -> Event:
    payment = {"method": method, "card_token": token}
    return incoming(topics.ORDER_PLACED, order_id, **ORDER, order_id=order_id, amount=amount, payment=payment)


def cancel_requested(order_id: str = "o1", amount: int = 17000, method: str = "wallet") -> Event:
    reason = "CUSTOMER_CANCELLED"
    return incoming(
        topics.ORDER_CANCEL_REQUESTED, order_id, **ORDER, order_id=order_id, amount=amount, method=method, reason=reason
    )


async def balance(service: PaymentService) -> int:
    return (await service.wallet("mina")).balance


async def outcome(service: PaymentService, order_id: str = "o1") -> tuple[PaymentStatus, FailureReason | None]:
    payment = await service.payment(order_id)
    assert payment is not None
    return payment.status, payment.failure_reason


def the_event(service: PaymentService) -> tuple[str, dict[str, Any]]:
    (event,) = events(service)
    assert (event.source, event.subject) == (SOURCE, "o1")
    return event.topic, event.data


# ------------------------------------------------------------------ charging


async def test_a_wallet_that_covers_the_order_pays_it(payments: PaymentService) -> None:
    await payments.top_up("mina", 20000)
    await payments.on_order_placed(order_placed())
    assert await balance(payments) == 3000
    assert await outcome(payments) == (PaymentStatus.COMPLETED, None)
    assert the_event(payments) == (
        topics.PAYMENT_COMPLETED,
        {"order_id": "o1", "customer_id": "mina", "amount": 17000, "method": "wallet"},
    )
    await payments.on_order_placed(order_placed())  # redelivered: never a second debit
    assert await balance(payments) == 3000 and len(events(payments)) == 1


async def test_a_wallet_short_of_the_amount_fails_and_nothing_moves(payments: PaymentService) -> None:
    await payments.top_up("mina", 10000)
    await payments.on_order_placed(order_placed())
    assert await balance(payments) == 10000
    assert await outcome(payments) == (PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS)
    topic, data = the_event(payments)
    assert topic == topics.PAYMENT_FAILED
    assert (data["reason"], data["failure_reason"]) == ("PAYMENT_FAILED", "INSUFFICIENT_FUNDS")


async def test_an_approved_card_pays_through_the_gateway(payments: PaymentService, gateway: FakeGateway) -> None:
    await payments.on_order_placed(order_placed(method="card", token="tok_visa"))
    assert gateway.charges == [("o1", "tok_visa", 17000)], "the order id is the idempotency key"
    assert await outcome(payments) == (PaymentStatus.COMPLETED, None)
    assert the_event(payments) == (
        topics.PAYMENT_COMPLETED,
        {"order_id": "o1", "customer_id": "mina", "amount": 17000, "method": "card"},
    )
    assert await payments.store.get(wallet_key("mina")) is None, "a card payment leaves the wallet alone"
    await payments.on_order_placed(order_placed(method="card", token="tok_visa"))
    assert len(gateway.charges) == 1, "a redelivered order.placed is not charged again"


@pytest.mark.parametrize(
    ("approve", "available", "failure", "reason"),
    [
        (False, True, FailureReason.CARD_DECLINED, "PAYMENT_FAILED"),
        (True, False, FailureReason.GATEWAY_UNAVAILABLE, "PAYMENT_UNAVAILABLE"),
    ],
)
async def test_a_declined_card_or_an_unavailable_gateway_fails_the_payment(
    payments: PaymentService, gateway: FakeGateway, approve: bool, available: bool, failure: FailureReason, reason: str
) -> None:
    gateway.approve, gateway.available = approve, available
    await payments.on_order_placed(order_placed(method="card", token="tok_visa"))
    assert await outcome(payments) == (PaymentStatus.FAILED, failure)
    topic, data = the_event(payments)
    assert topic == topics.PAYMENT_FAILED
    assert data == {
        "order_id": "o1",
        "customer_id": "mina",
        "amount": 17000,
        "method": "card",
        "reason": reason,
        "failure_reason": failure.value,
    }


async def test_a_top_up_committed_between_the_wallet_read_and_the_charge_is_not_lost(
    payments: PaymentService,
) -> None:
    """The charge read the wallet (20,000), then a top-up of 5,000 committed: the charge's commit
    conflicts, and it runs again from a fresh read (25,000) instead of writing 3,000 over it."""
    store = payments.store
    assert isinstance(store, Interfering)
    await payments.top_up("mina", 20000)

    async def top_up_meanwhile() -> None:
        await PaymentService(store, FakeGateway()).top_up("mina", 5000)

    store.interfere(wallet_key("mina"), top_up_meanwhile)
    await payments.on_order_placed(order_placed())
    assert store.reads[payment_key("o1")] == 2, "the charge ran twice, each time from its first read"
    wallet = await payments.wallet("mina")
    assert (wallet.balance, wallet.topped_up) == (20000 + 5000 - 17000, 25000)
    assert topics_of(events(payments)) == [topics.PAYMENT_COMPLETED], "one charge, one event"


# ------------------------------------------------------------------ cancelling


async def test_a_cancel_refunds_a_wallet_payment_once(payments: PaymentService) -> None:
    await payments.top_up("mina", 20000)
    await payments.on_order_placed(order_placed())
    events(payments).clear()
    await payments.on_cancel_requested(cancel_requested())
    assert await balance(payments) == 20000
    assert await outcome(payments) == (PaymentStatus.REFUNDED, None)
    assert the_event(payments) == (
        topics.PAYMENT_REFUNDED,
        {"order_id": "o1", "customer_id": "mina", "amount": 17000, "method": "wallet"},
    )
    await payments.on_cancel_requested(cancel_requested())  # redelivered
    assert await balance(payments) == 20000 and len(events(payments)) == 1


async def test_a_cancel_refunds_a_card_payment_at_the_gateway(payments: PaymentService, gateway: FakeGateway) -> None:
    await payments.on_order_placed(order_placed(method="card", token="tok_visa"))
    events(payments).clear()
    gateway.available = False
    with pytest.raises(GatewayUnavailable):  # redelivered later; nothing is written meanwhile
        await payments.on_cancel_requested(cancel_requested(method="card"))
    assert await outcome(payments) == (PaymentStatus.COMPLETED, None) and events(payments) == []
    gateway.available = True
    await payments.on_cancel_requested(cancel_requested(method="card"))
    assert gateway.refunds == ["o1"]
    assert await outcome(payments) == (PaymentStatus.REFUNDED, None)
    assert the_event(payments)[0] == topics.PAYMENT_REFUNDED
    await payments.on_cancel_requested(cancel_requested(method="card"))
    assert gateway.refunds == ["o1"], "a refunded payment is not refunded again"


async def test_a_cancel_before_the_charge_voids_it_and_the_late_order_placed_charges_nothing(
    payments: PaymentService, gateway: FakeGateway
) -> None:
    await payments.on_cancel_requested(cancel_requested(method="card"))
    assert await outcome(payments) == (PaymentStatus.FAILED, FailureReason.CANCELLED_BEFORE_PAYMENT)
    topic, data = the_event(payments)
    assert (topic, data["reason"], data["failure_reason"]) == (
        topics.PAYMENT_FAILED,
        "PAYMENT_FAILED",
        "CANCELLED_BEFORE_PAYMENT",
    )
    await payments.on_order_placed(order_placed(method="card", token="tok_visa"))
    assert gateway.charges == [] and len(events(payments)) == 1
    assert (await payments.store.get(payment_key("o1"))) is not None
