"""Card payments through the external gateway (the simulator, as a real process) and the circuit
breaker: approved, declined, too slow, down → fail fast → recovers by itself, refunds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from circuitbreaker import STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker

from services.runtime.paygate import GuardedGateway
from tests.support.platform import Api, PlatformFactory, api_for, eventually, order_body

pytestmark = pytest.mark.slow
TIMEOUT_S = 0.5
THRESHOLD = 3
RECOVERY_S = 3.0  # long enough that the fail-fast phase below cannot outlast the open circuit


def knobs(url: str, **values: Any) -> None:
    assert httpx.put(f"{url}/knobs", json=values, timeout=5).status_code == 200


def calls(url: str) -> int:
    count: int = httpx.get(f"{url}/stats", timeout=5).json()["calls"]
    return count


def charge(url: str, order_id: str) -> dict[str, Any]:
    """The charge as the gateway's ledger has it."""
    response = httpx.get(f"{url}/charges/{order_id}", timeout=5)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def breaker(api: Api) -> CircuitBreaker:
    gateway = api.platform.gateway
    assert isinstance(gateway, GuardedGateway)
    return gateway.breaker


def card(token: str) -> dict[str, Any]:
    return order_body() | {"payment": {"method": "card", "card_token": token}}


@pytest.fixture
async def api(make_platform: PlatformFactory, paygate: str) -> Api:
    platform = await make_platform(
        paygate_url=paygate,
        paygate_timeout_s=TIMEOUT_S,
        paygate_failure_threshold=THRESHOLD,
        paygate_recovery_s=RECOVERY_S,
    )
    client = api_for(platform)
    await client.settle()
    return client


async def test_approved_card_pays_without_touching_the_wallet(api: Api, paygate: str) -> None:
    order_id = await api.place_ok("card-ann", card("tok_visa"))
    order = await api.wait_status(order_id, "ACCEPTED")
    assert order["payment"] == {"method": "card", "status": "COMPLETED"}
    payment = await api.payment(order_id)
    assert payment is not None and payment["method"] == "card" and payment["status"] == "COMPLETED"
    assert await api.balance("card-ann") == 0
    taken = charge(paygate, order_id)
    assert (taken["status"], taken["amount"]) == ("approved", 39_000)

    cancel = await api.request("POST", f"/orders/{order_id}/cancel", "customer", "card-ann")
    assert cancel.status_code == 202
    await api.wait_status(order_id, "CANCELLED")
    assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert charge(paygate, order_id)["status"] == "refunded", "the card itself was credited"
    await api.assert_consistent()


async def test_declined_card_cancels_as_payment_failed(api: Api) -> None:
    order_id = await api.place_ok("card-bo", card("tok_declined"))
    order = await api.wait_status(order_id, "CANCELLED")
    assert order["cancel_reason"] == "PAYMENT_FAILED"
    payment = await api.payment(order_id)
    assert payment is not None and payment["failure_reason"] == "CARD_DECLINED"
    await api.assert_consistent()


async def test_a_gateway_slower_than_the_timeout_is_unavailable(api: Api, paygate: str) -> None:
    knobs(paygate, latency_ms=int(TIMEOUT_S * 3000))
    order_id = await api.place_ok("card-cy", card("tok_visa"))
    order = await api.wait_status(order_id, "CANCELLED", timeout=10)
    assert order["cancel_reason"] == "PAYMENT_UNAVAILABLE"
    assert (await api.payment(order_id) or {})["failure_reason"] == "GATEWAY_UNAVAILABLE"
    await api.assert_consistent()


async def test_breaker_opens_fails_fast_and_recovers_without_a_restart(api: Api, paygate: str) -> None:
    knobs(paygate, down=True)
    for _ in range(THRESHOLD):  # these reach the gateway and fail: the breaker counts them
        order_id = await api.place_ok("card-dae", card("tok_visa"))
        assert (await api.wait_status(order_id, "CANCELLED"))["cancel_reason"] == "PAYMENT_UNAVAILABLE"

    before = calls(paygate)
    for _ in range(5):  # open: refused at once, the gateway is not even called
        assert breaker(api).state == STATE_OPEN
        order_id = await api.place_ok("card-dae", card("tok_visa"))
        order = await api.wait_status(order_id, "CANCELLED")
        assert order["cancel_reason"] == "PAYMENT_UNAVAILABLE"
        assert calls(paygate) == before, "fail fast while the circuit is open: no call waits for the gateway"
    assert breaker(api).state == STATE_OPEN
    notes = (await api.request("GET", "/notifications", "customer", "card-dae")).json()
    assert any("try again later" in n["message"] for n in notes if n["status"] == "CANCELLED")

    knobs(paygate)  # the gateway comes back

    async def half_open() -> bool:  # the next call is a trial
        return bool(breaker(api).state == STATE_HALF_OPEN)

    await eventually(half_open, timeout=RECOVERY_S + 5, what="the circuit half-opening")
    order_id = await api.place_ok("card-dae", card("tok_visa"))
    assert (await api.wait_status(order_id, "ACCEPTED"))["payment"]["status"] == "COMPLETED"
    again = await api.place_ok("card-dae", card("tok_visa"))
    await api.wait_status(again, "ACCEPTED")
    assert await api.balance("card-dae") == 0, "no wallet money moved at any point"
    await api.assert_consistent()
