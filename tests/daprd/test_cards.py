"""Card payments through daprd's ``paygate`` HTTP output binding to the card-gateway simulator (its
own process), and the circuit breaker when the gateway is down: orders fail fast with "try again
later", the gateway is no longer called, and card orders pay again once it is back."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.daprd.conftest import DaprdApi
from tests.support.platform import eventually, order_body

RECOVERY_S = 3.0  # BAEDAL_PAYGATE_RECOVERY_S of the payment service in this suite


def card(token: str) -> dict[str, Any]:
    return order_body() | {"payment": {"method": "card", "card_token": token}}


def knobs(url: str, **values: Any) -> None:
    assert httpx.put(f"{url}/knobs", json=values, timeout=5).status_code == 200


def calls(url: str) -> int:
    count: int = httpx.get(f"{url}/stats", timeout=5).json()["calls"]
    return count


def ledger(url: str, order_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/charges/{order_id}", timeout=5)
    assert response.status_code == 200, response.text
    charge: dict[str, Any] = response.json()
    return charge


async def test_a_card_order_is_charged_and_refunded_through_the_binding(api: DaprdApi, paygate: str) -> None:
    order_id = await api.place_ok("card-1", card("tok_visa"))
    order = await api.wait_status(order_id, "ACCEPTED", timeout=30)
    assert order["payment"] == {"method": "card", "status": "COMPLETED"}
    assert (ledger(paygate, order_id)["status"], ledger(paygate, order_id)["amount"]) == ("approved", 39_000)
    assert await api.balance("card-1") == 0, "no wallet money moved"

    cancel = await api.request("POST", f"/orders/{order_id}/cancel", "customer", "card-1")
    assert cancel.status_code == 202, cancel.text
    await api.wait_status(order_id, "CANCELLED", timeout=30)
    assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert ledger(paygate, order_id)["status"] == "refunded", "the card itself was credited"


async def test_a_declined_card_cancels_the_order(api: DaprdApi) -> None:
    order_id = await api.place_ok("card-2", card("tok_declined"))
    order = await api.wait_status(order_id, "CANCELLED", timeout=30)
    assert order["cancel_reason"] == "PAYMENT_FAILED"
    assert (await api.payment(order_id) or {})["failure_reason"] == "CARD_DECLINED"


async def test_the_breaker_opens_while_the_gateway_is_down_and_closes_when_it_is_back(
    api: DaprdApi, paygate: str
) -> None:
    knobs(paygate, down=True)
    for _ in range(3):  # these reach the gateway and fail: the breakers count them
        order_id = await api.place_ok("card-3", card("tok_visa"))
        order = await api.wait_status(order_id, "CANCELLED", timeout=30)
        assert order["cancel_reason"] == "PAYMENT_UNAVAILABLE"

    before = calls(paygate)
    started = time.monotonic()
    for _ in range(3):  # open: refused at once, the gateway is not even called
        order_id = await api.place_ok("card-3", card("tok_visa"))
        order = await api.wait_status(order_id, "CANCELLED", timeout=30)
        assert order["cancel_reason"] == "PAYMENT_UNAVAILABLE"
        assert (await api.payment(order_id) or {})["failure_reason"] == "GATEWAY_UNAVAILABLE"
    if time.monotonic() - started < RECOVERY_S:  # all within the open interval: none reached the gateway
        assert calls(paygate) == before, "fail fast while the circuit is open"
    notes = (await api.request("GET", "/notifications", "customer", "card-3")).json()
    assert any("try again later" in n["message"] for n in notes if n["status"] == "CANCELLED")

    knobs(paygate)  # the gateway is back: after the open interval, a trial call closes the circuit
    recovered = time.monotonic() + RECOVERY_S

    async def open_interval_over() -> bool:
        return time.monotonic() > recovered

    await eventually(open_interval_over, timeout=RECOVERY_S + 1, what="the open interval ending")
    order_id = await api.place_ok("card-3", card("tok_visa"))
    assert (await api.wait_status(order_id, "ACCEPTED", timeout=30))["payment"]["status"] == "COMPLETED"
    again = await api.place_ok("card-3", card("tok_visa"))
    await api.wait_status(again, "ACCEPTED", timeout=30)
    assert await api.balance("card-3") == 0
