"""Every path of the order–payment–restaurant saga, end to end through HTTP, each ending with the
consistency audit. Runs on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from services.payment.handlers import wallet_key
from services.runtime.clock import parse_iso
from services.runtime.events import OutboundEvent
from services.runtime.ports import Put, Record, RetryLater, StateStore, Write
from services.runtime.settings import ChaosSettings
from tests.support.manifests import manifest
from tests.support.platform import Api, PlatformFactory, api_for, eventually, order_body

BIBIMBAP = order_body("hanok-bibimbap", [("bibimbap", 2, 9000)], fee=2500)  # manual accept, 20,500 KRW


async def test_happy_path_auto_accept(api: Api) -> None:
    await api.top_up("alice", 100_000)
    order_id = await api.place_ok("alice")
    order = await api.wait_status(order_id, "ACCEPTED")
    assert [h["status"] for h in order["history"]] == ["PENDING", "PAID", "ACCEPTED"]
    assert order["payment"] == {"method": "wallet", "status": "COMPLETED"}
    assert order["cancel_reason"] is None
    assert await api.balance("alice") == 100_000 - 39_000
    assert (await api.payment(order_id)) == {
        "order_id": order_id,
        "customer_id": "alice",
        "amount": 39_000,
        "method": "wallet",
        "status": "COMPLETED",
        "failure_reason": None,
    }
    await api.assert_consistent()


async def test_happy_path_manual_accept_by_owner(api: Api) -> None:
    await api.top_up("bob", 50_000)
    order_id = await api.place_ok("bob", BIBIMBAP)
    await api.wait_status(order_id, "PAID")
    queue = await api.request("GET", "/restaurants/hanok-bibimbap/orders?status=PAID", "owner", "owner-lee")
    assert queue.status_code == 200
    await _eventually(api, "owner-lee", order_id)

    accepted = await api.owner_decide("hanok-bibimbap", order_id, "accept", "owner-lee")
    assert accepted.status_code == 202, accepted.text
    order = await api.wait_status(order_id, "ACCEPTED")
    assert [h["status"] for h in order["history"]] == ["PENDING", "PAID", "ACCEPTED"]
    assert await api.balance("bob") == 50_000 - 20_500

    again = await api.request("POST", f"/restaurants/hanok-bibimbap/orders/{order_id}/reject", "owner", "owner-park")
    assert again.status_code == 409 and again.json()["code"] == "INVALID_STATE"
    await api.assert_consistent()


async def _eventually(api: Api, owner: str, order_id: str) -> None:
    async def queued() -> bool:
        queue = await api.request("GET", "/restaurants/hanok-bibimbap/orders", "owner", owner)
        return any(o["id"] == order_id for o in queue.json())

    await eventually(queued, what="the paid order reaching the owner's queue")


async def test_wallet_too_low_cancels_without_moving_money(api: Api) -> None:
    await api.top_up("carol", 10_000)
    order_id = await api.place_ok("carol")
    order = await api.wait_status(order_id, "CANCELLED")
    assert order["cancel_reason"] == "PAYMENT_FAILED"
    assert order["payment"]["status"] == "FAILED"
    payment = await api.payment(order_id)
    assert payment is not None and payment["status"] == "FAILED" and payment["failure_reason"] == "INSUFFICIENT_FUNDS"
    assert await api.balance("carol") == 10_000
    await api.assert_consistent()


async def test_a_wallet_pays_down_to_its_last_won_and_never_below(api: Api) -> None:
    await api.top_up("exact", 39_000)
    paid = await api.place_ok("exact")
    await api.wait_status(paid, "ACCEPTED")
    assert await api.balance("exact") == 0
    empty = await api.place_ok("exact")
    order = await api.wait_status(empty, "CANCELLED", "ACCEPTED")
    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")

    await api.top_up("short", 38_999)  # one won short
    short = await api.place_ok("short")
    order = await api.wait_status(short, "CANCELLED", "ACCEPTED")
    assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "PAYMENT_FAILED")
    assert (await api.payment(short) or {})["failure_reason"] == "INSUFFICIENT_FUNDS"
    assert await api.balance("short") == 38_999, "nothing moved"
    assert await api.balance("exact") == 0
    await api.assert_consistent()


async def test_owner_rejects_then_refund(api: Api) -> None:
    await api.top_up("dave", 30_000)
    order_id = await api.place_ok("dave", BIBIMBAP)
    await api.wait_status(order_id, "PAID")
    assert await api.balance("dave") == 30_000 - 20_500
    await _eventually(api, "owner-park", order_id)
    rejected = await api.owner_decide(
        "hanok-bibimbap", order_id, "reject", "owner-park", json={"reason": "out of rice"}
    )
    assert rejected.status_code == 202, rejected.text
    order = await api.wait_status(order_id, "CANCELLED")
    assert order["cancel_reason"] == "REJECTED"
    assert [h["status"] for h in order["history"]] == ["PENDING", "PAID", "CANCELLING", "CANCELLED"]
    assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert await api.balance("dave") == 30_000
    await api.assert_consistent()


async def test_customer_cancels_in_each_cancellable_state(api: Api) -> None:
    await api.top_up("erin", 200_000)
    # PAID: a manual restaurant keeps the order in PAID until the owner acts.
    paid = await api.place_ok("erin", BIBIMBAP)
    await api.wait_status(paid, "PAID")
    # ACCEPTED: auto-accept restaurant.
    accepted = await api.place_ok("erin")
    await api.wait_status(accepted, "ACCEPTED")
    for order_id in (paid, accepted):
        response = await api.request("POST", f"/orders/{order_id}/cancel", "customer", "erin")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "CANCELLING"
    for order_id in (paid, accepted):
        order = await api.wait_status(order_id, "CANCELLED")
        assert order["cancel_reason"] == "CUSTOMER_CANCELLED"
        assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert await api.balance("erin") == 200_000

    again = await api.request("POST", f"/orders/{paid}/cancel", "customer", "erin")
    assert again.status_code == 409 and again.json()["code"] == "INVALID_STATE"
    await api.assert_consistent()


class ChargesWaitForTheCancel:
    """The payment service's store, where charging a waiting customer's wallet fails for now
    (RetryLater: the dispatcher retries it later) until a payment record of theirs is written, which
    only the cancel can do first: so the cancel surely overtakes the payment, whatever the order of
    the queues."""

    def __init__(self, inner: StateStore, customers: Iterable[str]) -> None:
        self.inner = inner
        self.waiting = {wallet_key(customer): customer for customer in customers}

    async def get(self, key: str) -> Record | None:
        if key in self.waiting:
            raise RetryLater(f"{self.waiting[key]}'s payment waits for the cancel (test)")
        return await self.inner.get(key)

    async def scan(self, prefix: str) -> list[Record]:
        return await self.inner.scan(prefix)

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        await self.inner.commit(writes, events)
        for write in writes:
            if isinstance(write, Put) and write.key.startswith("payment:"):
                self.waiting.pop(wallet_key(write.value["customer_id"]), None)


async def test_a_cancel_that_overtakes_the_payment_voids_it(make_platform: PlatformFactory) -> None:
    """The customer cancels before the payment service has charged the order: the payment is
    voided, the late ``order.placed`` charges nothing, and the order ends CANCELLED."""
    platform = await make_platform()
    api = api_for(platform)
    await api.settle()
    customers = [f"frank-{n}" for n in range(5)]
    for customer in customers:
        await api.top_up(customer, 100_000)
    platform.payment.store = ChargesWaitForTheCancel(platform.payment.store, customers)
    ids = {customer: await api.place_ok(customer) for customer in customers}
    for customer, order_id in ids.items():
        response = await api.request("POST", f"/orders/{order_id}/cancel", "customer", customer)
        assert response.status_code == 202, response.text
    for customer, order_id in ids.items():
        order = await api.wait_status(order_id, "CANCELLED")
        assert order["cancel_reason"] == "CUSTOMER_CANCELLED"
        payment = await api.payment(order_id)
        assert payment is not None, order_id
        assert (payment["status"], payment["failure_reason"]) == ("FAILED", "CANCELLED_BEFORE_PAYMENT")
        assert await api.balance(customer) == 100_000
    await api.assert_consistent()


async def test_payment_completes_after_the_cancel_was_asked(make_platform: PlatformFactory) -> None:
    """Reordered delivery: the payment is taken, the cancel request overtakes the
    ``payment.completed`` event at the order service. The late payment is refunded."""
    platform = await make_platform(chaos=ChaosSettings(shuffle=True, max_delay_s=0.05))
    api = api_for(platform)
    await api.settle()
    await api.top_up("gina", 2_000_000)
    ids = []
    for _ in range(20):
        order_id = await api.place_ok("gina")
        cancel = await api.request("POST", f"/orders/{order_id}/cancel", "customer", "gina")
        assert cancel.status_code in (202, 409), cancel.text
        ids.append(order_id)
    await api.settle()
    for order_id in ids:
        order = await api.order(order_id)
        payment = await api.payment(order_id)
        if order["status"] == "CANCELLED":
            assert payment is None or payment["status"] in ("FAILED", "REFUNDED")
        else:
            assert order["status"] == "ACCEPTED" and payment is not None and payment["status"] == "COMPLETED"
    statuses = [(await api.order(o))["status"] for o in ids]
    spent = 39_000 * statuses.count("ACCEPTED")
    assert await api.balance("gina") == 2_000_000 - spent
    await api.assert_consistent()


async def test_accept_timeout_refunds_and_survives_restart(make_platform: PlatformFactory, tmp_path: Path) -> None:
    """A paid order nobody accepts is cancelled at ``acceptTimeoutSeconds`` and refunded, even
    when the platform was down when the deadline passed."""
    data_dir = tmp_path / "timer"
    platform = await make_platform(data_dir=data_dir)
    api = api_for(platform)
    await api.settle()
    manifest = _manual_restaurant("slow-kitchen", timeout_s=2)
    applied = await api.request("POST", "/admin/restaurants", json=manifest)
    assert applied.status_code == 200, applied.text
    await api.settle()
    await api.top_up("hana", 50_000)
    order_id = await api.place_ok("hana", order_body("slow-kitchen", [("soup", 1, 8000)], fee=1000))
    await api.wait_status(order_id, "PAID")

    async def opened() -> bool:
        return await platform.restaurant.ticket(order_id) is not None

    await eventually(opened, what="the ticket opening")
    ticket = await platform.restaurant.ticket(order_id)
    assert ticket is not None and ticket.accept_deadline is not None
    deadline = parse_iso(ticket.accept_deadline).timestamp()
    await platform.stop()  # down while the deadline passes

    async def passed() -> bool:
        return time.time() > deadline

    await eventually(passed, what="the accept deadline passing")
    restarted = await make_platform(data_dir=data_dir)
    api = api_for(restarted)
    order = await api.wait_status(order_id, "CANCELLED", timeout=20)
    assert order["cancel_reason"] == "ACCEPT_TIMEOUT"
    assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
    assert await api.balance("hana") == 50_000
    late = await api.request("POST", f"/restaurants/slow-kitchen/orders/{order_id}/accept", "owner", "owner-slow")
    assert late.status_code == 409 and late.json()["code"] == "INVALID_STATE"
    await api.assert_consistent()


def _manual_restaurant(name: str, timeout_s: int) -> dict[str, object]:
    return manifest(
        name,
        displayName=name,
        autoAccept=False,
        acceptTimeoutSeconds=timeout_s,
        deliveryFee=1000,
        expressFee=2000,
        owners=["owner-slow"],
        menu=[{"id": "soup", "name": "국밥", "price": 8000, "available": True}],
    )
