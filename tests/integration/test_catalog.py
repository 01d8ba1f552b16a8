"""The catalog end to end: manifests through the reconcile step into the order read store, owner
overrides, how the two combine, removal; and the audit catching a real violation."""

from __future__ import annotations

import copy
from typing import Any

from services.catalog.manifest import load_manifests
from services.payment.handlers import payment_key
from services.runtime.ports import Put
from tests.support import EXAMPLES
from tests.support.platform import Api, eventually, order_body


def chicken_manifest() -> dict[str, Any]:
    return next(m for m in load_manifests(EXAMPLES) if m["metadata"]["name"] == "seoul-chicken")


async def menu_item(api: Api, restaurant: str, product: str) -> dict[str, Any]:
    menu = (await api.client.get(f"/restaurants/{restaurant}/menu")).json()
    item: dict[str, Any] = next(i for i in menu["items"] if i["id"] == product)
    return item


async def test_apply_is_idempotent_and_a_change_bumps_the_generation(api: Api) -> None:
    manifest = chicken_manifest()
    same = await api.request("POST", "/admin/restaurants", json=manifest)
    assert same.json() == {"restaurant_id": "seoul-chicken", "generation": 1, "changed": False}

    changed = copy.deepcopy(manifest)
    changed["spec"]["menu"][0]["price"] = 18500
    response = await api.request("POST", "/admin/restaurants", json=changed)
    assert response.json() == {"restaurant_id": "seoul-chicken", "generation": 2, "changed": True}

    async def new_price() -> bool:
        return bool((await menu_item(api, "seoul-chicken", "fried"))["price"] == 18500)

    await eventually(new_price)
    await api.top_up("ivy", 100_000)
    stale = await api.place("ivy", order_body(lines=(("fried", 1, 18000),)))
    assert stale.status_code == 409 and stale.json()["code"] == "PRICE_MISMATCH"
    await api.place_ok("ivy", order_body(lines=(("fried", 1, 18500),)))
    await api.assert_consistent()


async def test_owner_sold_out_survives_a_manifest_change_until_lifted(api: Api) -> None:
    sold_out = await api.request(
        "PATCH", "/restaurants/seoul-chicken/menu/wings", "owner", "owner-kim", json={"available": False}
    )
    assert sold_out.status_code == 200, sold_out.text

    async def unavailable() -> bool:
        return not (await menu_item(api, "seoul-chicken", "wings"))["available"]

    await eventually(unavailable)
    changed = chicken_manifest()
    changed["spec"]["menu"][6]["price"] = 17500  # wings get dearer
    assert (await api.request("POST", "/admin/restaurants", json=changed)).json()["generation"] == 2

    async def repriced() -> bool:
        return bool((await menu_item(api, "seoul-chicken", "wings"))["price"] == 17500)

    await eventually(repriced)
    assert not (await menu_item(api, "seoul-chicken", "wings"))["available"], "the owner's sold-out still holds"

    lifted = await api.request(
        "PATCH", "/restaurants/seoul-chicken/menu/wings", "owner", "owner-kim", json={"available": True}
    )
    assert lifted.status_code == 200

    async def available() -> bool:
        return bool((await menu_item(api, "seoul-chicken", "wings"))["available"])

    await eventually(available)


async def test_closing_early_and_reopening(api: Api) -> None:
    await api.top_up("jay", 100_000)
    closed = await api.request("PATCH", "/restaurants/seoul-chicken", "owner", "owner-kim", json={"open": False})
    assert closed.json()["restaurant"]["open"] is False

    async def listed_closed() -> bool:
        listing = (await api.client.get("/restaurants")).json()
        return any(r["id"] == "seoul-chicken" and not r["open"] for r in listing)

    await eventually(listed_closed)
    listing = (await api.client.get("/restaurants")).json()
    assert listing[-1]["id"] == "seoul-chicken", "open restaurants come first"
    refused = await api.place("jay")
    assert refused.status_code == 409 and refused.json()["code"] == "RESTAURANT_CLOSED"

    await api.request("PATCH", "/restaurants/seoul-chicken", "owner", "owner-kim", json={"open": True})

    async def listed_open() -> bool:
        return (await api.place("jay")).status_code == 202

    await eventually(listed_open)
    await api.assert_consistent()


async def test_removed_restaurant_leaves_the_catalog_and_can_come_back_fresh(api: Api) -> None:
    await api.request("PATCH", "/restaurants/busan-tteokbokki", "owner", "owner-choi", json={"open": False})
    removed = await api.request("DELETE", "/admin/restaurants/busan-tteokbokki")
    assert removed.status_code == 200

    async def gone() -> bool:
        return (await api.client.get("/restaurants/busan-tteokbokki/menu")).status_code == 404

    await eventually(gone)
    again = await api.request("DELETE", "/admin/restaurants/busan-tteokbokki")
    assert again.status_code == 404 and again.json()["code"] == "RESTAURANT_NOT_FOUND"

    manifest = next(m for m in load_manifests(EXAMPLES) if m["metadata"]["name"] == "busan-tteokbokki")
    recreated = await api.request("POST", "/admin/restaurants", json=manifest)
    assert recreated.json() == {"restaurant_id": "busan-tteokbokki", "generation": 1, "changed": True}

    async def back_and_open() -> bool:
        response = await api.client.get("/restaurants/busan-tteokbokki/menu")
        return response.status_code == 200 and response.json()["restaurant"]["open"]

    await eventually(back_and_open)  # the old incarnation's "closed" does not stick to the new one


async def test_audit_reports_a_real_violation(api: Api) -> None:
    """The audit is not a rubber stamp: take the money back behind the saga's back."""
    await api.top_up("kim", 100_000)
    order_id = await api.place_ok("kim")
    await api.wait_status(order_id, "ACCEPTED")
    await api.settle()
    record = await api.platform.payment.store.get(payment_key(order_id))
    assert record is not None
    await api.platform.payment.store.commit([Put(record.key, {**record.value, "status": "REFUNDED"}, record.etag)])

    report = await api.audit(stuck_after_s=0.0)
    assert not report["ok"]
    assert {(v["invariant"], v["subject"]) for v in report["violations"]} >= {(2, order_id), (4, "kim")}
