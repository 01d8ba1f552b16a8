"""The payment service: wallets, charging new orders, refunds and voids on cancellation."""

from __future__ import annotations

from typing import Any

from services import topics
from services.payment.domain import (
    FailureReason,
    Payment,
    PaymentStatus,
    Wallet,
    card_payment,
    pay_from_wallet,
    refund,
    void,
)
from services.payment.gateway import GatewayUnavailable, PaymentGateway
from services.runtime.events import Event, OutboundEvent
from services.runtime.ports import BatchHandler, Handler, Put, Record, StateStore, Subscription, retry_on_conflict

SOURCE = "payment"


def wallet_key(customer_id: str) -> str:
    return f"wallet:{customer_id}"


def payment_key(order_id: str) -> str:
    return f"payment:{order_id}"


def _outcome(payment: Payment) -> OutboundEvent:
    data: dict[str, Any] = {
        "order_id": payment.order_id,
        "customer_id": payment.customer_id,
        "amount": payment.amount,
        "method": payment.method,
    }
    if payment.status is PaymentStatus.COMPLETED:
        topic = topics.PAYMENT_COMPLETED
    elif payment.status is PaymentStatus.REFUNDED:
        topic = topics.PAYMENT_REFUNDED
    else:
        topic = topics.PAYMENT_FAILED
        unavailable = payment.failure_reason is FailureReason.GATEWAY_UNAVAILABLE
        data |= {
            "reason": "PAYMENT_UNAVAILABLE" if unavailable else "PAYMENT_FAILED",
            "failure_reason": payment.failure_reason,
        }
    return OutboundEvent(topic=topic, data=data, source=SOURCE, subject=payment.order_id)


class PaymentService:
    def __init__(self, store: StateStore, gateway: PaymentGateway) -> None:
        self.store = store
        self.gateway = gateway

    async def _wallet(self, customer_id: str) -> tuple[Wallet, Record | None]:
        record = await self.store.get(wallet_key(customer_id))
        return (Wallet(**record.value) if record else Wallet(customer_id)), record

    async def wallet(self, customer_id: str) -> Wallet:
        return (await self._wallet(customer_id))[0]

    async def top_up(self, customer_id: str, amount: int) -> Wallet:
        async def attempt() -> Wallet:
            wallet, record = await self._wallet(customer_id)
            wallet.top_up(amount)
            await self.store.commit([Put(wallet_key(customer_id), wallet.to_dict(), record.etag if record else None)])
            return wallet

        return await retry_on_conflict(attempt)

    async def payment(self, order_id: str) -> Payment | None:
        record = await self.store.get(payment_key(order_id))
        return Payment.from_dict(record.value) if record else None

    # ------------------------------------------------------------------ saga reactions

    async def on_order_placed(self, event: Event) -> None:
        data = event.data

        async def attempt() -> None:
            if await self.store.get(payment_key(data["order_id"])) is not None:
                return  # already charged, failed, or voided by an earlier cancel
            if data["payment"]["method"] == "card":
                payment = await self._charge_card(data)
                await self.store.commit(
                    [Put(payment_key(payment.order_id), payment.to_dict(), None)], [_outcome(payment)]
                )
                return
            wallet, record = await self._wallet(data["customer_id"])
            payment = pay_from_wallet(wallet, data["order_id"], int(data["amount"]))
            writes = [Put(payment_key(payment.order_id), payment.to_dict(), None)]
            if payment.status is PaymentStatus.COMPLETED:
                writes.append(Put(wallet_key(wallet.customer_id), wallet.to_dict(), record.etag if record else None))
            await self.store.commit(writes, [_outcome(payment)])

        await retry_on_conflict(attempt)

    async def _charge_card(self, data: dict[str, Any]) -> Payment:
        """The order id is the idempotency key: a redelivered order.placed (say, after a crash
        between the gateway's answer and our commit) gets the same answer, never a second charge."""
        order_id, amount = data["order_id"], int(data["amount"])
        try:
            result = await self.gateway.charge(order_id, data["payment"]["card_token"], amount)
        except GatewayUnavailable:
            return card_payment(order_id, data["customer_id"], amount, None)
        return card_payment(order_id, data["customer_id"], amount, result.approved)

    async def on_cancel_requested(self, event: Event) -> None:
        """Refund a completed payment; void one not taken yet so a late ``order.placed`` is a no-op.
        A FAILED or REFUNDED payment already had its outcome event published."""
        data = event.data

        async def attempt() -> None:
            record = await self.store.get(payment_key(data["order_id"]))
            if record is None:
                payment = void(data["order_id"], data["customer_id"], int(data["amount"]), data["method"])
                await self.store.commit(
                    [Put(payment_key(payment.order_id), payment.to_dict(), None)], [_outcome(payment)]
                )
                return
            payment = Payment.from_dict(record.value)
            if payment.method == "card" and payment.status is PaymentStatus.COMPLETED:
                await self.gateway.refund(payment.order_id)  # GatewayUnavailable: redelivered later
            wallet, wallet_record = await self._wallet(payment.customer_id)
            if not refund(wallet, payment):
                return
            await self.store.commit(
                [
                    Put(record.key, payment.to_dict(), record.etag),
                    Put(
                        wallet_key(wallet.customer_id), wallet.to_dict(), wallet_record.etag if wallet_record else None
                    ),
                ],
                [_outcome(payment)],
            )

        await retry_on_conflict(attempt)

    def batch_subscriptions(self) -> list[tuple[Subscription, BatchHandler]]:
        return []

    def subscriptions(self) -> list[tuple[Subscription, Handler]]:
        return [
            (Subscription(topics.ORDER_PLACED, "payment-on-order-placed"), self.on_order_placed),
            (Subscription(topics.ORDER_CANCEL_REQUESTED, "payment-on-cancel-requested"), self.on_cancel_requested),
        ]
