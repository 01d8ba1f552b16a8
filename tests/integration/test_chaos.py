"""Chaos: the dispatcher duplicates, reorders and delays deliveries and makes handlers fail
transiently, while 500 concurrent orders of mixed outcomes run. Everything settles and every
invariant holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.runtime.settings import ChaosSettings
from tests.support.platform import Api, PlatformFactory, api_for, gather_limited, order_body

CHAOS = ChaosSettings(duplicate_rate=0.3, max_delay_s=0.05, failure_rate=0.2, shuffle=True)
ORDERS = 500
CHICKEN = order_body()  # 39,000
BIBIMBAP = order_body("hanok-bibimbap", [("bibimbap", 1, 9000)], fee=2500)  # 11,500, manual accept


KINDS = ["happy", "poor", "manual-accept", "manual-reject", "cancel", "complete", "card", "card-declined"]


def plan(i: int) -> tuple[str, str, dict[str, Any]]:
    """(kind, customer, body) for the i-th order: a mix of every saga and lifecycle outcome."""
    kind = KINDS[i % len(KINDS)]
    if kind == "poor":
        return kind, f"poor-{i % 10}", CHICKEN
    if kind.startswith("card"):
        token = "tok_declined" if kind == "card-declined" else "tok_visa"
        return kind, f"card-{i % 10}", CHICKEN | {"payment": {"method": "card", "card_token": token}}
    body = BIBIMBAP if kind.startswith("manual") else CHICKEN
    return kind, f"rich-{i % 40}", body


EXPECTED = {
    "happy": ("ACCEPTED", None),
    "poor": ("CANCELLED", "PAYMENT_FAILED"),
    "manual-accept": ("ACCEPTED", None),
    "manual-reject": ("CANCELLED", "REJECTED"),
    "cancel": ("CANCELLED", "CUSTOMER_CANCELLED"),
    "complete": ("COMPLETED", None),
    "card": ("ACCEPTED", None),
    "card-declined": ("CANCELLED", "PAYMENT_FAILED"),
}


@pytest.mark.slow
async def test_mixed_orders_under_chaos_keep_every_invariant(make_platform: PlatformFactory, paygate: str) -> None:
    platform = await make_platform(chaos=CHAOS, max_attempts=30, paygate_url=paygate)
    api = api_for(platform)
    await api.settle()
    for n in range(40):
        await api.top_up(f"rich-{n}", 10_000_000)
    for n in range(10):
        await api.top_up(f"poor-{n}", 1_000)

    plans = [plan(i) for i in range(ORDERS)]
    ids: list[str] = await gather_limited((api.place_ok(customer, body) for _, customer, body in plans), limit=100)
    await gather_limited(
        (_act(api, kind, customer, oid) for (kind, customer, _), oid in zip(plans, ids, strict=True)), limit=50
    )
    await api.settle(timeout=180)

    spent: dict[str, int] = {}
    for (kind, customer, body), order_id in zip(plans, ids, strict=True):
        order = await api.order(order_id)
        assert (order["status"], order["cancel_reason"]) == EXPECTED[kind], (kind, order)
        if order["status"] in ("ACCEPTED", "COMPLETED") and body["payment"]["method"] == "wallet":
            spent[customer] = spent.get(customer, 0) + body["total_price"]
    for n in range(40):
        assert await api.balance(f"rich-{n}") == 10_000_000 - spent.get(f"rich-{n}", 0)
    for n in range(10):
        assert await api.balance(f"poor-{n}") == 1_000
    await api.assert_consistent()


async def _act(api: Api, kind: str, customer: str, order_id: str) -> None:
    if kind == "cancel":
        response = await api.request("POST", f"/orders/{order_id}/cancel", "customer", customer)
        assert response.status_code == 202, response.text
    elif kind == "complete":
        await _deliver_to_the_door(api, customer, order_id)
    elif kind.startswith("manual"):
        await api.wait_status(order_id, "PAID", timeout=120, poll=0.25)
        verb = "accept" if kind == "manual-accept" else "reject"
        response = await api.owner_decide("hanok-bibimbap", order_id, verb, "owner-lee", timeout=120)
        assert response.status_code == 202, response.text


async def _deliver_to_the_door(api: Api, customer: str, order_id: str) -> None:
    """Owner cooks, a rider claims, picks up and delivers, the customer confirms."""
    await api.wait_status(order_id, "ACCEPTED", timeout=120, poll=0.25)
    for verb in ("start-cooking", "finish-cooking"):
        response = await api.owner_decide("seoul-chicken", order_id, verb, "owner-kim", timeout=120)
        assert response.status_code == 202, response.text
        await api.wait_status(order_id, "COOKING" if verb == "start-cooking" else "READY", timeout=120, poll=0.25)
    for verb in ("claim", "pick-up", "deliver"):
        for _ in range(600):  # the delivery opens once the READY status reaches the delivery service
            response = await api.request("POST", f"/deliveries/{order_id}/{verb}", "rider", f"rider-{order_id[:4]}")
            if response.status_code not in (404, 409):
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 200, (verb, response.text)
    await api.wait_status(order_id, "DELIVERED", timeout=120, poll=0.25)
    confirmed = await api.request("POST", f"/orders/{order_id}/confirm", "customer", customer)
    assert confirmed.status_code == 202, confirmed.text
