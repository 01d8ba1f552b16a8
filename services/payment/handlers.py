"""The payment service: wallets, charging new orders, refunds and voids on cancellation."""

from __future__ import annotations

from typing import Any

from services import topics
from services.payment.cards import GatewayUnavailable, PaymentGateway
from services.payment.domain import Made, Payment, PaymentStatus, Wallet, card_payment, pay_from_wallet, refund, void
from services.runtime.events import Event
from services.runtime.ports import BatchHandler, Handler, StateStore, Subscription
from services.runtime.unit_of_work import UnitOfWork, run_step

SOURCE = "payment"


def wallet_key(customer_id: str) -> str:
    return f"wallet:{customer_id}"


def payment_key(order_id: str) -> str:
    return f"payment:{order_id}"


async def _wallet(reader: StateStore | UnitOfWork, customer_id: str) -> Wallet:
    """The customer's wallet, empty until the first top-up."""
    record = await reader.get(wallet_key(customer_id))
    return Wallet(**record.value) if record else Wallet(customer_id)


class PaymentService:
    def __init__(self, store: StateStore, gateway: PaymentGateway) -> None:
        self.store = store
        self.gateway = gateway

    async def wallet(self, customer_id: str) -> Wallet:
        return await _wallet(self.store, customer_id)

    async def top_up(self, customer_id: str, amount: int) -> Wallet:
        async def step(uow: UnitOfWork) -> Wallet:
            wallet = await _wallet(uow, customer_id)
            wallet.top_up(amount)
            uow.put(wallet_key(customer_id), wallet.to_dict())
            return wallet

        return await run_step(self.store, step, SOURCE)

    async def payment(self, order_id: str) -> Payment | None:
        record = await self.store.get(payment_key(order_id))
        return Payment.from_dict(record.value) if record else None

    # ------------------------------------------------------------------ saga reactions

    async def on_order_placed(self, event: Event) -> None:
        data = event.data

        async def step(uow: UnitOfWork) -> None:
            if await uow.get(payment_key(data["order_id"])) is not None:
                return  # already charged, failed, or voided by an earlier cancel
            if data["payment"]["method"] == "card":
                payment, events = await self._charge_card(data)
                uow.put(payment_key(payment.order_id), payment.to_dict())
            else:
                wallet = await _wallet(uow, data["customer_id"])
                payment, events = pay_from_wallet(wallet, data["order_id"], int(data["amount"]))
                uow.put(payment_key(payment.order_id), payment.to_dict())
                if payment.status is PaymentStatus.COMPLETED:
                    uow.put(wallet_key(wallet.customer_id), wallet.to_dict())
            uow.emit(payment.order_id, events)

        await run_step(self.store, step, SOURCE)

    async def _charge_card(self, data: dict[str, Any]) -> Made:
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

        async def step(uow: UnitOfWork) -> None:
            record = await uow.get(payment_key(data["order_id"]))
            if record is None:
                payment, events = void(data["order_id"], data["customer_id"], int(data["amount"]), data["method"])
                uow.put(payment_key(payment.order_id), payment.to_dict())
                uow.emit(payment.order_id, events)
                return
            payment = Payment.from_dict(record.value)
            if payment.method == "card" and payment.status is PaymentStatus.COMPLETED:
                await self.gateway.refund(payment.order_id)  # GatewayUnavailable: redelivered later
            wallet = await _wallet(uow, payment.customer_id)
            events = refund(wallet, payment)
            if events:
                uow.put(record.key, payment.to_dict())
                uow.put(wallet_key(wallet.customer_id), wallet.to_dict())
                uow.emit(payment.order_id, events)

        await run_step(self.store, step, SOURCE)

    def batch_subscriptions(self) -> list[tuple[Subscription, BatchHandler]]:
        return []

    def subscriptions(self) -> list[tuple[Subscription, Handler]]:
        return [
            (Subscription(topics.ORDER_PLACED, "payment-on-order-placed"), self.on_order_placed),
            (Subscription(topics.ORDER_CANCEL_REQUESTED, "payment-on-cancel-requested"), self.on_cancel_requested),
        ]
