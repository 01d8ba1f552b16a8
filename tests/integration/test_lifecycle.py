"""The whole life of an order through HTTP with three roles: customer, owner, rider."""

from __future__ import annotations

import asyncio
from typing import Any

from services.delivery.domain import bounding_box
from services.runtime.sql.delivery_board import SEARCH
from tests.support.platform import Api, PlatformFactory, api_for, gather_limited, order_body

SEOUL_CHICKEN = {"lat": 37.4979, "lon": 127.0276}
HANOK = {"lat": 37.5704, "lon": 126.9831}


async def cooked(api: Api, order_id: str, restaurant: str = "seoul-chicken", owner: str = "owner-kim") -> None:
    """Owner starts and finishes cooking an ACCEPTED order."""
    await api.wait_status(order_id, "ACCEPTED")
    for verb in ("start-cooking", "finish-cooking"):
        response = await api.owner_decide(restaurant, order_id, verb, owner)
        assert response.status_code == 202, response.text


async def on_board(api: Api, order_id: str, where: dict[str, float] = SEOUL_CHICKEN) -> list[dict[str, Any]]:
    for _ in range(250):
        response = await api.request(
            "GET", f"/deliveries/available?lat={where['lat']}&lon={where['lon']}&radius_km=3", "rider", "rider-any"
        )
        assert response.status_code == 200, response.text
        board: list[dict[str, Any]] = response.json()
        if any(d["id"] == order_id for d in board):
            return board
        await asyncio.sleep(0.02)
    raise AssertionError(f"delivery {order_id} never became available")


async def test_full_journey_to_completed(api: Api) -> None:
    await api.top_up("mina", 100_000)
    order_id = await api.place_ok("mina")
    await cooked(api, order_id)
    await api.wait_status(order_id, "READY")
    board = await on_board(api, order_id)
    mine = next(d for d in board if d["id"] == order_id)
    assert mine["pickup"] == SEOUL_CHICKEN and mine["dropoff"]["address"] == "서울 강남구 테헤란로 1"
    assert 0 <= mine["distance_km"] < 0.01

    for verb in ("claim", "pick-up", "deliver"):
        response = await api.request("POST", f"/deliveries/{order_id}/{verb}", "rider", "rider-jo")
        assert response.status_code == 200, (verb, response.text)
    await api.wait_status(order_id, "DELIVERED")
    confirmed = await api.request("POST", f"/orders/{order_id}/confirm", "customer", "mina")
    assert confirmed.status_code == 202, confirmed.text
    order = await api.wait_status(order_id, "COMPLETED")
    assert [h["status"] for h in order["history"]] == [
        "PENDING",
        "PAID",
        "ACCEPTED",
        "COOKING",
        "READY",
        "PICKED_UP",
        "DELIVERED",
        "COMPLETED",
    ]
    assert await api.balance("mina") == 100_000 - 39_000
    listed = await api.request("GET", "/orders?status=COMPLETED", "customer", "mina")
    for _ in range(100):
        if [o["id"] for o in listed.json()] == [order_id]:
            break
        await asyncio.sleep(0.02)
        listed = await api.request("GET", "/orders?status=COMPLETED", "customer", "mina")
    assert [o["id"] for o in listed.json()] == [order_id]
    await api.assert_consistent()


async def test_cancelling_once_cooking_started_is_refused(api: Api) -> None:
    await api.top_up("nari", 100_000)
    order_id = await api.place_ok("nari")
    await api.wait_status(order_id, "ACCEPTED")
    started = await api.owner_decide("seoul-chicken", order_id, "start-cooking", "owner-kim")
    assert started.status_code == 202
    await api.wait_status(order_id, "COOKING")
    refused = await api.request("POST", f"/orders/{order_id}/cancel", "customer", "nari")
    assert refused.status_code == 409 and refused.json()["code"] == "INVALID_STATE"
    early = await api.request("POST", f"/orders/{order_id}/confirm", "customer", "nari")
    assert early.status_code == 409 and early.json()["code"] == "INVALID_STATE"
    twice = await api.owner_decide("seoul-chicken", order_id, "start-cooking", "owner-kim")
    assert twice.status_code == 409 and twice.json()["code"] == "INVALID_STATE"
    assert await api.balance("nari") == 100_000 - 39_000
    await api.assert_consistent()


async def test_two_riders_claiming_at_once_have_exactly_one_winner(api: Api) -> None:
    await api.top_up("ocean", 10_000_000)
    ids = await gather_limited((api.place_ok("ocean") for _ in range(15)), limit=15)
    await gather_limited((cooked(api, order_id) for order_id in ids), limit=15)
    for order_id in ids:
        await on_board(api, order_id)
        first, second = await asyncio.gather(
            api.request("POST", f"/deliveries/{order_id}/claim", "rider", "rider-a"),
            api.request("POST", f"/deliveries/{order_id}/claim", "rider", "rider-b"),
        )
        codes = sorted([first.status_code, second.status_code])
        assert codes == [200, 409], (first.text, second.text)
        loser = first if first.status_code == 409 else second
        assert loser.json()["code"] == "DELIVERY_ALREADY_CLAIMED"
        winner = "rider-a" if first.status_code == 200 else "rider-b"
        other = "rider-b" if winner == "rider-a" else "rider-a"
        forbidden = await api.request("POST", f"/deliveries/{order_id}/pick-up", "rider", other)
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "FORBIDDEN"
        again = await api.request("POST", f"/deliveries/{order_id}/claim", "rider", winner)
        assert again.status_code == 200, "claiming your own delivery again is harmless"
    await api.assert_consistent()


async def test_search_filters_by_radius_and_puts_express_first(api: Api) -> None:
    await api.top_up("pia", 1_000_000)
    normal = await api.place_ok("pia")
    express = await api.place_ok("pia", order_body(lines=(("fried", 2, 18000),), fee=5000, express=True))
    far = await api.place_ok("pia", order_body("hanok-bibimbap", (("bibimbap", 1, 9000),), fee=2500))
    await api.wait_status(far, "PAID")
    accepted = await api.owner_decide("hanok-bibimbap", far, "accept", "owner-lee")
    assert accepted.status_code == 202
    await cooked(api, normal)
    await cooked(api, express)
    await cooked(api, far, "hanok-bibimbap", "owner-lee")
    await on_board(api, normal)
    board = await on_board(api, express)
    ids = [d["id"] for d in board]
    assert ids.index(express) < ids.index(normal), "express deliveries come first"
    assert far not in ids, "hanok-bibimbap is ~8.9 km away from seoul-chicken"
    assert far in [d["id"] for d in await on_board(api, far, HANOK)]
    wide = await api.request("GET", "/deliveries/available?lat=37.53&lon=127.0&radius_km=10", "rider", "r")
    assert {normal, express, far} <= {d["id"] for d in wide.json()}
    bad = await api.request("GET", "/deliveries/available?lat=95&lon=127&radius_km=3", "rider", "r")
    assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_ERROR"
    customer = await api.request("GET", "/deliveries/available?lat=37.5&lon=127&radius_km=3", "customer", "pia")
    assert customer.status_code == 403


async def test_rider_search_uses_the_geo_index_with_100k_open_deliveries(make_platform: PlatformFactory) -> None:
    platform = await make_platform()
    db = platform.dbs["delivery"]
    rows = [
        (
            f"bulk-{i}",
            "AVAILABLE" if i % 2 else "DELIVERED",
            int(i % 7 == 0),
            33.0 + (i % 1000) * 0.005,
            124.5 + (i // 1000) * 0.04,
            1,
            "{}",
        )
        for i in range(100_000)
    ]
    async with db.atomic() as tx:
        await tx.executemany(
            "INSERT INTO deliveries_board (order_id, status, express, lat, lon, version, view)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    box = bounding_box({"lat": 35.0, "lon": 126.5}, 3.0)
    if db.database.dialect == "sqlite":
        plan = " ".join(str(r) for r in await db.fetchall(f"EXPLAIN QUERY PLAN {SEARCH}", box))
        assert "USING INDEX deliveries_board_geo" in plan, plan
    else:
        await db.database.run_script(["ANALYZE deliveries_board"])
        plan = " ".join(str(r) for r in await db.fetchall(f"EXPLAIN {SEARCH}", box))
        assert "deliveries_board_geo" in plan and "Seq Scan" not in plan, plan
    found = await db.fetchall(SEARCH, box)
    assert 0 < len(found) < 1000


async def test_lifecycle_survives_the_restaurant_being_paused(make_platform: PlatformFactory) -> None:
    """Restaurant consumers down: orders are still taken and paid, and go on once it is back."""
    platform = await make_platform()
    api = api_for(platform)
    await api.settle()
    await api.top_up("quinn", 200_000)
    platform.dispatcher.pause("restaurant")
    ids = [await api.place_ok("quinn") for _ in range(3)]
    for order_id in ids:
        await api.wait_status(order_id, "PAID")
    await asyncio.sleep(0.3)
    assert [(await api.order(o))["status"] for o in ids] == ["PAID"] * 3
    platform.dispatcher.resume("restaurant")
    for order_id in ids:
        await api.wait_status(order_id, "ACCEPTED")
    await api.assert_consistent()
