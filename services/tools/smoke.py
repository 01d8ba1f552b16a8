"""``baedal smoke``: does a running platform take an order end to end? The chart's ``helm test`` runs it.

It waits for the gateway to be ready, applies a small auto-accepting test restaurant (as ``baedal
apply`` does), waits for the menu to reach the order service, then, as a new customer with just
enough money in the wallet, places one order and waits until the order is ACCEPTED and its payment
COMPLETED. The report names the step that did not happen in time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.runtime.auth import Role, TokenIssuer

RESTAURANT_ID = "smoke-test-kitchen"
PRICE = 9000
DELIVERY_FEE = 1000
RESTAURANT: dict[str, Any] = {
    "apiVersion": "baedal.io/v1",
    "kind": "Restaurant",
    "metadata": {"name": RESTAURANT_ID},
    "spec": {
        "displayName": "Smoke test kitchen (baedal smoke)",
        "open": True,
        "autoAccept": True,
        "acceptTimeoutSeconds": 300,
        "location": {"lat": 37.5665, "lon": 126.978},
        "deliveryFee": DELIVERY_FEE,
        "expressFee": DELIVERY_FEE,
        "owners": ["smoke-owner"],
        "menu": [{"id": "kimbap", "name": "김밥", "price": PRICE, "available": True}],
    },
}
POLL_S = 0.5


class SmokeFailed(Exception):
    """A step did not happen; the message says which and what was seen last."""


async def _until(what: str, check: Callable[[], Awaitable[str | None]], deadline: float) -> None:
    """Poll ``check`` (``None``: done, else what it saw) until done or the deadline."""
    seen = "nothing yet"
    while True:
        try:
            outcome = await check()
        except httpx.HTTPError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        if outcome is None:
            return
        seen = outcome
        if time.monotonic() >= deadline:
            raise SmokeFailed(f"{what}: not within the time allowed (last seen: {seen})")
        await asyncio.sleep(POLL_S)


def _answer(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text[:200]}"


async def smoke(client: httpx.AsyncClient, tokens: TokenIssuer, timeout_s: float) -> dict[str, Any]:
    """One order through the platform behind ``client``; the report (``ok``, the steps done)."""
    started = time.monotonic()
    deadline = started + timeout_s
    steps: list[str] = []
    report: dict[str, Any] = {"ok": False, "steps": steps}
    customer = f"smoke-{secrets.token_hex(4)}"
    admin = {"Authorization": f"Bearer {tokens.issue(Role.ADMIN, 'baedal-smoke', 600)}"}
    as_customer = {"Authorization": f"Bearer {tokens.issue(Role.CUSTOMER, customer, 600)}"}
    try:

        async def ready() -> str | None:
            response = await client.get("/readyz")
            return None if response.status_code == 200 else _answer(response)

        await _until("the gateway is ready", ready, deadline)
        steps.append("gateway ready")

        applied = await client.post("/admin/restaurants", json=RESTAURANT, headers=admin)
        if not applied.is_success and applied.status_code != 409:  # 409: the operator manages it
            raise SmokeFailed(f"applying {RESTAURANT_ID}: {_answer(applied)}")

        async def on_menu() -> str | None:
            response = await client.get(f"/restaurants/{RESTAURANT_ID}/menu")
            return None if response.status_code == 200 else _answer(response)

        await _until(f"{RESTAURANT_ID} is on the menu", on_menu, deadline)
        steps.append(f"{RESTAURANT_ID} on the menu")

        topped = await client.post(
            f"/wallets/{customer}/top-ups", json={"amount": PRICE + DELIVERY_FEE}, headers=as_customer
        )
        if not topped.is_success:
            raise SmokeFailed(f"topping up the wallet of {customer}: {_answer(topped)}")
        order = {
            "restaurant_id": RESTAURANT_ID,
            "items": [{"product_id": "kimbap", "quantity": 1, "unit_price": PRICE}],
            "delivery": {"address": "서울 중구 세종대로 110", "lat": 37.5663, "lon": 126.9779, "express": False},
            "payment": {"method": "wallet"},
            "total_price": PRICE + DELIVERY_FEE,
        }
        headers = {**as_customer, "Idempotency-Key": f"{customer}-1"}
        placed = await client.post("/orders", json=order, headers=headers)
        if placed.status_code != 202:
            raise SmokeFailed(f"placing the order: {_answer(placed)}")
        order_id = placed.json()["id"]
        report["order"] = order_id
        steps.append(f"order {order_id} placed")

        async def accepted() -> str | None:
            response = await client.get(f"/orders/{order_id}", headers=as_customer)
            status = response.json().get("status") if response.status_code == 200 else _answer(response)
            if status in ("CANCELLING", "CANCELLED"):
                raise SmokeFailed(f"order {order_id} was {status}: {response.text[:300]}")
            return None if status == "ACCEPTED" else str(status)

        await _until(f"order {order_id} is ACCEPTED", accepted, deadline)
        steps.append(f"order {order_id} ACCEPTED")

        async def paid() -> str | None:
            response = await client.get(f"/payments/{order_id}", headers=as_customer)
            status = response.json().get("status") if response.status_code == 200 else _answer(response)
            return None if status == "COMPLETED" else str(status)

        await _until(f"the payment of {order_id} is COMPLETED", paid, deadline)
        steps.append(f"payment of {order_id} COMPLETED")
        report["ok"] = True
    except SmokeFailed as exc:
        report["error"] = str(exc)
    report["seconds"] = round(time.monotonic() - started, 2)
    return report
