"""The card port (the payment gateway of the card processor): charges and refunds, keyed by the order id.

Adapters: ``services.runtime.paygate`` (over HTTP, embedded) and ``services.runtime.dapr.paygate``
(through a Dapr output binding), both behind the same circuit breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class GatewayUnavailable(Exception):
    """The gateway did not answer in time, failed, or the breaker is open: try again later."""


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    charge_id: str


class PaymentGateway(Protocol):
    async def charge(self, idempotency_key: str, card_token: str, amount: int) -> ChargeResult: ...

    async def refund(self, idempotency_key: str) -> None: ...
