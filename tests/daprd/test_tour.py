"""The README's tour on real sidecars, through the Dapr gateway: the same requests in the same
order, each answer what the README promises; instead of the README's ``sleep 1`` every step waits
for the state it needs (on Dapr a saga step takes about a second: the outbox's own delay)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from tests.daprd.conftest import DaprdApi
from tests.integration.test_notifications import Webhook
from tests.support import EXAMPLES
from tests.support.daprd import DaprdCluster
from tests.support.platform import ORDER_BODY, eventually

BIBIMBAP = {
    "restaurant_id": "hanok-bibimbap",
    "items": [{"product_id": "bibimbap", "quantity": 1, "unit_price": 9000}],
    "delivery": {"address": "서울 종로구 1", "lat": 37.57, "lon": 126.98, "express": False},
    "payment": {"method": "wallet"},
    "total_price": 11500,
}


def baedal(cluster: DaprdCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``baedal`` command, pointed at the Dapr gateway and the run's signing secret."""
    command = [sys.executable, "-m", "services", *args]
    env = cluster.app_env("gateway", cluster.apps["gateway"].ports) | {"BAEDAL_DATA_DIR": str(cluster.cli_data_dir)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


async def test_the_readme_tour_through_the_dapr_gateway(
    api: DaprdApi, daprd_cluster: DaprdCluster, webhook: tuple[Webhook, Any]
) -> None:
    gateway = daprd_cluster.url("gateway")
    applied = await asyncio.to_thread(baedal, daprd_cluster, "apply", "-f", str(EXAMPLES), "--url", gateway)
    assert applied.returncode == 0, applied.stderr
    assert "restaurant.baedal.io/seoul-chicken" in applied.stdout

    # The catalog needs no token.
    restaurants = (await api.client.get("/restaurants")).json()
    assert "seoul-chicken" in {r["id"] for r in restaurants}
    menu = (await api.client.get("/restaurants/seoul-chicken/menu")).json()
    assert menu["restaurant"]["id"] == "seoul-chicken"

    # Tokens as the tour mints them.
    token = await asyncio.to_thread(baedal, daprd_cluster, "token", "customer", "cust-1")
    assert token.returncode == 0, token.stderr
    customer = {"Authorization": f"Bearer {token.stdout.strip()}"}

    topped = await api.client.post("/wallets/cust-1/top-ups", json={"amount": 100000}, headers=customer)
    assert topped.status_code == 200 and topped.json()["balance"] == 100000, topped.text

    # 202 = durably stored; the same Idempotency-Key gives the same order, not a second one.
    idem = customer | {"Idempotency-Key": "lunch-1"}
    placed = await api.client.post("/orders", json=ORDER_BODY, headers=idem)
    assert placed.status_code == 202, placed.text
    order = placed.json()["id"]
    again = await api.client.post("/orders", json=ORDER_BODY, headers=idem)
    assert again.status_code in (200, 202) and again.json()["id"] == order, again.text

    first = await api.wait_status(order, "ACCEPTED", timeout=30)
    assert [h["status"] for h in first["history"]] == ["PENDING", "PAID", "ACCEPTED"]
    payment = (await api.client.get(f"/payments/{order}", headers=customer)).json()
    assert (payment["status"], payment["amount"]) == ("COMPLETED", 39000)
    assert (await api.client.get("/wallets/cust-1", headers=customer)).json()["balance"] == 61000

    # hanok-bibimbap is manual: the order waits in PAID until its owner accepts.
    placed = await api.client.post("/orders", json=BIBIMBAP, headers=customer)
    assert placed.status_code == 202, placed.text
    order2 = placed.json()["id"]
    await api.wait_status(order2, "PAID", timeout=30)
    owner = api.headers("owner", "owner-lee")

    async def in_the_owners_queue() -> bool:
        queue = await api.client.get("/restaurants/hanok-bibimbap/orders?status=PAID", headers=owner)
        return [o["id"] for o in queue.json()] == [order2]

    await eventually(in_the_owners_queue, timeout=30, what="the order in the owner's queue")
    accepted = await api.owner_decide("hanok-bibimbap", order2, "accept", "owner-lee")
    assert accepted.status_code == 202, accepted.text
    assert (await api.wait_status(order2, "ACCEPTED", timeout=30))["history"][-1]["status"] == "ACCEPTED"

    # Cancel it: the refund comes first, then CANCELLED (CUSTOMER_CANCELLED); the money is back.
    cancel = await api.client.post(f"/orders/{order2}/cancel", headers=customer)
    assert cancel.status_code == 202 and cancel.json()["status"] == "CANCELLING", cancel.text
    cancelled = await api.wait_status(order2, "CANCELLED", timeout=30)
    assert cancelled["cancel_reason"] == "CUSTOMER_CANCELLED"
    assert (await api.client.get(f"/payments/{order2}", headers=customer)).json()["status"] == "REFUNDED"
    assert (await api.client.get("/wallets/cust-1", headers=customer)).json()["balance"] == 61000

    # The owner of seoul-chicken cooks; the order becomes READY and visible to riders nearby.
    for verb in ("start-cooking", "finish-cooking"):
        cooked = await api.owner_decide("seoul-chicken", order, verb, "owner-kim")
        assert cooked.status_code == 202, (verb, cooked.text)
    await api.wait_status(order, "READY", timeout=30)
    rider = api.headers("rider", "rider-jo")

    async def on_the_board() -> bool:
        board = await api.client.get("/deliveries/available?lat=37.4979&lon=127.0276&radius_km=3", headers=rider)
        return order in {d["order_id"] for d in board.json()}

    await eventually(on_the_board, timeout=30, what="the delivery on the riders' board")

    # A rider claims it, picks it up and delivers it; the customer confirms.
    steps = []
    for verb in ("claim", "pick-up", "deliver"):
        response = await api.client.post(f"/deliveries/{order}/{verb}", headers=rider)
        assert response.status_code == 200, (verb, response.text)
        steps.append(response.json()["status"])
    assert steps == ["CLAIMED", "PICKED_UP", "DELIVERED"]
    await api.wait_status(order, "DELIVERED", timeout=30)
    confirmed = await api.client.post(f"/orders/{order}/confirm", headers=customer)
    assert confirmed.status_code == 202, confirmed.text
    done = await api.wait_status(order, "COMPLETED", timeout=30)
    assert [h["status"] for h in done["history"]] == [
        "PENDING", "PAID", "ACCEPTED", "COOKING", "READY", "PICKED_UP", "DELIVERED", "COMPLETED",
    ]  # fmt: skip

    # Every status change was a notification, in the feed and through the notify output binding.
    async def notified() -> bool:
        feed = (await api.client.get("/notifications", headers=customer)).json()
        return {(n["order_id"], n["status"]) for n in feed} >= {(order2, "CANCELLED"), (order, "COMPLETED")}

    await eventually(notified, timeout=30, what="the customer's notifications")
    await eventually(
        lambda: _sent(webhook[0], order), timeout=30, what="the COMPLETED message through the notify binding"
    )

    # Check every consistency invariant across the services.
    await api.settle()
    audited = await asyncio.to_thread(baedal, daprd_cluster, "audit", "--url", gateway)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    report = json.loads(audited.stdout)
    assert report["ok"] is True and report["violations"] == []


async def _sent(hook: Webhook, order_id: str) -> bool:
    return any(m.get("order_id") == order_id and m.get("status") == "COMPLETED" for m in hook.received)
