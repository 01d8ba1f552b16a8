"""Every compensation of the saga on real sidecars: a wallet too low, an owner who rejects, an owner
who never answers, and a customer who cancels, also while the saga races on; and the races on
first writes that PostgreSQL v2 answers differently from the fake (a racing Idempotency-Key, a
racing first top-up). Each ends with the audit clean (the ``api`` fixture)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.daprd.conftest import DaprdApi, wait_menu
from tests.support.manifests import manifest
from tests.support.platform import ORDER_BODY, order_body

BIBIMBAP = order_body("hanok-bibimbap", [("bibimbap", 1, 9000)], fee=2500)  # manual accept, 11,500 KRW


async def test_a_wallet_too_low_cancels_and_moves_no_money(api: DaprdApi) -> None:
    await api.top_up("low-1", 1_000)
    order_id = await api.place_ok("low-1")
    order = await api.wait_status(order_id, "CANCELLED", timeout=30)
    assert order["cancel_reason"] == "PAYMENT_FAILED"
    payment = await api.payment(order_id)
    assert payment is not None and (payment["status"], payment["failure_reason"]) == ("FAILED", "INSUFFICIENT_FUNDS")
    assert await api.balance("low-1") == 1_000


async def test_an_owner_who_rejects_refunds_the_customer(api: DaprdApi) -> None:
    await api.top_up("rej-1", 50_000)
    order_id = await api.place_ok("rej-1", BIBIMBAP)
    await api.wait_status(order_id, "PAID", timeout=30)
    rejected = await api.owner_decide("hanok-bibimbap", order_id, "reject", "owner-lee", json={"reason": "busy"})
    assert rejected.status_code == 202, rejected.text
    order = await api.wait_status(order_id, "CANCELLED", timeout=30)
    assert order["cancel_reason"] == "REJECTED"
    assert [h["status"] for h in order["history"]] == ["PENDING", "PAID", "CANCELLING", "CANCELLED"]
    assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert await api.balance("rej-1") == 50_000


async def test_an_owner_who_never_answers_times_out_and_refunds(api: DaprdApi) -> None:
    """The accept deadline is a timer: kept by the restaurant service until due (not redelivered
    until then), it cancels the order when it fires; the owner's late accept is refused."""
    restaurant = manifest(
        "daprd-slow-kitchen",
        autoAccept=False,
        acceptTimeoutSeconds=2,
        deliveryFee=1000,
        owners=["owner-slow"],
        menu=[{"id": "soup", "name": "국밥", "price": 8000, "available": True}],
    )
    assert (await api.request("POST", "/admin/restaurants", json=restaurant)).status_code == 200
    await wait_menu(api, "daprd-slow-kitchen")
    await api.top_up("slow-1", 50_000)
    order_id = await api.place_ok("slow-1", order_body("daprd-slow-kitchen", [("soup", 1, 8000)], fee=1000))
    await api.wait_status(order_id, "PAID", timeout=30)
    order = await api.wait_status(order_id, "CANCELLED", timeout=30)
    assert order["cancel_reason"] == "ACCEPT_TIMEOUT"
    assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert await api.balance("slow-1") == 50_000
    late = await api.request("POST", f"/restaurants/daprd-slow-kitchen/orders/{order_id}/accept", "owner", "owner-slow")
    assert late.status_code == 409 and late.json()["code"] == "INVALID_STATE", late.text


async def test_a_customer_cancels_a_paid_and_an_accepted_order(api: DaprdApi) -> None:
    await api.top_up("cxl-1", 200_000)
    paid = await api.place_ok("cxl-1", BIBIMBAP)
    accepted = await api.place_ok("cxl-1")
    await api.wait_status(paid, "PAID", timeout=30)
    await api.wait_status(accepted, "ACCEPTED", timeout=30)
    for order_id in (paid, accepted):
        response = await api.request("POST", f"/orders/{order_id}/cancel", "customer", "cxl-1")
        assert response.status_code == 202 and response.json()["status"] == "CANCELLING", response.text
    for order_id in (paid, accepted):
        order = await api.wait_status(order_id, "CANCELLED", timeout=30)
        assert order["cancel_reason"] == "CUSTOMER_CANCELLED"
        assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert await api.balance("cxl-1") == 200_000
    again = await api.request("POST", f"/orders/{paid}/cancel", "customer", "cxl-1")
    assert again.status_code == 409 and again.json()["code"] == "INVALID_STATE"


async def test_cancels_racing_the_payment_the_owner_and_the_kitchen_each_have_one_outcome(api: DaprdApi) -> None:
    """Cancels sent at once after the order (racing its payment), together with the owner's accept,
    and together with start-cooking: each order ends either cancelled with the money back, or going
    on and paid; never both, never stuck (the audit checks the rest)."""
    customer = "race-1"
    await api.top_up(customer, 1_000_000)

    async def cancel(order_id: str) -> int:
        return (await api.request("POST", f"/orders/{order_id}/cancel", "customer", customer)).status_code

    # 1. against the payment: cancel the moment the order is acknowledged
    early = [await api.place_ok(customer) for _ in range(3)]
    assert set(await asyncio.gather(*(cancel(o) for o in early))) == {202}
    # 2. against the owner's accept
    manual = [await api.place_ok(customer, BIBIMBAP) for _ in range(3)]
    for order_id in manual:
        await api.wait_status(order_id, "PAID", timeout=30)
    accepts, cancels = await asyncio.gather(
        asyncio.gather(*(api.owner_decide("hanok-bibimbap", o, "accept", "owner-lee") for o in manual)),
        asyncio.gather(*(cancel(o) for o in manual)),
    )
    assert {r.status_code for r in accepts} <= {202, 409} and set(cancels) <= {202, 409}
    # 3. against the kitchen: from COOKING on, the customer can no longer cancel
    cooking = [await api.place_ok(customer) for _ in range(3)]
    for order_id in cooking:
        await api.wait_status(order_id, "ACCEPTED", timeout=30)
    starts, cancels = await asyncio.gather(
        asyncio.gather(*(api.owner_decide("seoul-chicken", o, "start-cooking", "owner-kim") for o in cooking)),
        asyncio.gather(*(cancel(o) for o in cooking)),
    )
    assert {r.status_code for r in starts} <= {202, 409} and set(cancels) <= {202, 409}

    await api.settle()
    spent = 0
    for order_id in [*early, *manual, *cooking]:
        order = await api.order(order_id)
        payment = await api.payment(order_id)
        if order["status"] == "CANCELLED":
            assert order["cancel_reason"] == "CUSTOMER_CANCELLED", order
            assert payment is None or payment["status"] in ("FAILED", "REFUNDED"), payment
        else:
            assert order["status"] in ("ACCEPTED", "COOKING"), order
            assert payment is not None and payment["status"] == "COMPLETED"
            spent += order["total_price"]
    for order_id in cooking:
        order = await api.order(order_id)
        statuses = [h["status"] for h in order["history"]]
        assert not ("COOKING" in statuses and order["status"] == "CANCELLED"), "cooked, then cancelled"
    assert await api.balance(customer) == 1_000_000 - spent


async def test_racing_requests_with_one_idempotency_key_make_one_order(api: DaprdApi) -> None:
    """The first write of ``idem:<customer>:<key>`` races: PostgreSQL v2 answers the losers "no
    item was updated" (not an ETag error); they must still get the winner's order, not a 500.
    The key holds daprd's separator ``||``, which daprd refuses in a state key."""
    await api.top_up("idem-1", 100_000)
    headers = {"Idempotency-Key": "lunch||race"}
    responses = await asyncio.gather(
        *(api.request("POST", "/orders", "customer", "idem-1", json=ORDER_BODY, headers=headers) for _ in range(6))
    )
    assert {r.status_code for r in responses} <= {200, 202}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1, "one order for one key"
    order_id = responses[0].json()["id"]
    await api.wait_status(order_id, "ACCEPTED", timeout=30)
    assert await api.balance("idem-1") == 100_000 - 39_000


async def test_racing_first_top_ups_all_count(api: DaprdApi) -> None:
    """The wallet does not exist yet: every concurrent top-up races to create it."""
    amounts = [1_000 * (n + 1) for n in range(6)]

    async def top_up(amount: int) -> Any:
        return await api.request("POST", "/wallets/first-1/top-ups", "customer", "first-1", json={"amount": amount})

    responses = await asyncio.gather(*(top_up(a) for a in amounts))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert await api.balance("first-1") == sum(amounts)
