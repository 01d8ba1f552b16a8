"""The card-gateway adapters' common guard, and the adapter over HTTP (embedded runtime).

Every call carries the order id as idempotency key, has a timeout, and passes through a circuit
breaker (the maintained ``circuitbreaker`` package): after ``failure_threshold`` failures in a row
the breaker opens and calls fail at once with :class:`GatewayUnavailable`, so a struggling gateway
is not buried under retries and customers hear "try again later" within a second; after
``recovery_timeout`` one trial call goes through (half-open) and a success closes it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from circuitbreaker import CircuitBreaker, CircuitBreakerError

from services.payment.cards import ChargeResult, GatewayUnavailable
from services.runtime.settings import Settings

Post = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Guard:
    """The limits every card-gateway adapter keeps (``BAEDAL_PAYGATE_*``)."""

    timeout_s: float = 1.0
    failure_threshold: int = 5
    recovery_timeout_s: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> Guard:
        return cls(settings.paygate_timeout_s, settings.paygate_failure_threshold, settings.paygate_recovery_s)


class GuardedGateway:
    """The card-gateway calls behind the circuit breaker, over any transport: ``post(path, body)``
    answers the gateway's JSON or raises :class:`GatewayUnavailable`."""

    def __init__(self, post: Post, guard: Guard) -> None:
        self.breaker = CircuitBreaker(
            failure_threshold=guard.failure_threshold,
            recovery_timeout=guard.recovery_timeout_s,
            expected_exception=GatewayUnavailable,
            name="payment-gateway",
        )
        # The decorated call checks the circuit first (``call_async`` alone only records outcomes).
        self._guarded_post = self.breaker.decorate(post)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self._guarded_post(path, body)
            return result
        except CircuitBreakerError as exc:
            raise GatewayUnavailable("circuit open: the payment gateway is failing") from exc

    async def charge(self, idempotency_key: str, card_token: str, amount: int) -> ChargeResult:
        result = await self._call(
            "/charges", {"idempotency_key": idempotency_key, "card_token": card_token, "amount": amount}
        )
        return ChargeResult(result["status"] == "approved", result["charge_id"])

    async def refund(self, idempotency_key: str) -> None:
        await self._call("/refunds", {"idempotency_key": idempotency_key})


class HttpPaymentGateway(GuardedGateway):
    """Embedded: straight to the gateway over HTTP."""

    def __init__(
        self, base_url: str, guard: Guard = Guard(), transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=guard.timeout_s, transport=transport)
        super().__init__(self._post, guard)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise GatewayUnavailable(f"gateway answered {response.status_code}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def close(self) -> None:
        await self._client.aclose()
