"""Races forced to happen, on every backend: two riders claiming one delivery, and an owner
accepting an order just as its accept deadline fires. A held read (``tests/support/interleave.py``) stops
one side between reading and committing while the other side goes all the way; exactly one wins,
and what each side is told agrees with the money and the states."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from services.delivery.handlers import delivery_key
from services.restaurant.handlers import ticket_key
from services.runtime.clock import parse_iso
from services.runtime.ports import Put, Write
from tests.integration.test_lifecycle import cooked, on_board
from tests.support.interleave import HoldingStore
from tests.support.manifests import manifest
from tests.support.platform import Api, PlatformFactory, api_for, assert_problem, eventually, order_body


async def test_a_claim_overtaken_between_its_read_and_its_commit_loses(api: Api) -> None:
    await api.top_up("rae", 100_000)
    order_id = await api.place_ok("rae")
    await cooked(api, order_id)
    await on_board(api, order_id)
    holding = HoldingStore(api.platform.delivery.store)
    api.platform.delivery.store = holding

    hold = holding.hold_next_read(delivery_key(order_id))
    slow = asyncio.create_task(api.request("POST", f"/deliveries/{order_id}/claim", "rider", "rider-slow"))
    read = await hold.reached()
    assert read is not None and read.value["status"] == "AVAILABLE"
    fast = await api.request("POST", f"/deliveries/{order_id}/claim", "rider", "rider-fast")
    assert fast.status_code == 200, fast.text
    hold.release()
    assert_problem(await slow, 409, "DELIVERY_ALREADY_CLAIMED")

    forbidden = await api.request("POST", f"/deliveries/{order_id}/pick-up", "rider", "rider-slow")
    assert_problem(forbidden, 403, "FORBIDDEN")
    picked = await api.request("POST", f"/deliveries/{order_id}/pick-up", "rider", "rider-fast")
    assert picked.status_code == 200 and picked.json()["rider_id"] == "rider-fast", picked.text
    await api.wait_status(order_id, "PICKED_UP")
    await api.assert_consistent()


SOUP = order_body("race-kitchen", [("soup", 1, 8000)], fee=1000)  # 9,000 KRW


@pytest.mark.parametrize("first", ["deadline", "owner"])
async def test_an_owner_accepting_as_the_deadline_fires_has_exactly_one_outcome(
    make_platform: PlatformFactory, first: str
) -> None:
    """``deadline``: the owner's accept has read the PENDING ticket when the deadline fires and
    commits first; the accept then fails (409) and the order is cancelled and refunded.
    ``owner``: the deadline is due but not yet handled when the owner accepts; the deadline then
    finds the ticket ACCEPTED and does nothing, and the order goes on, paid."""
    platform = await make_platform()
    api = api_for(platform)
    await api.settle()
    restaurant = manifest(
        "race-kitchen",
        autoAccept=False,
        acceptTimeoutSeconds=1,
        owners=["owner-race"],
        menu=[{"id": "soup", "name": "국밥", "price": 8000, "available": True}],
        deliveryFee=1000,
    )
    assert (await api.request("POST", "/admin/restaurants", json=restaurant)).status_code == 200
    await api.settle()
    holding = HoldingStore(platform.restaurant.store)
    platform.restaurant.store = holding

    def hold_the_deadline_back(writes: Sequence[Write]) -> None:
        """When the ticket opens, stop the restaurant's consumers: the deadline fires when we say."""
        if any(isinstance(w, Put) and w.key.startswith("ticket:") and w.etag is None for w in writes):
            platform.dispatcher.pause("restaurant")

    holding.after_commit = hold_the_deadline_back
    await api.top_up("sena", 50_000)
    order_id = await api.place_ok("sena", SOUP)
    await eventually(lambda: _ticket_is(api, order_id, "PENDING"), what="the ticket opening")

    ticket = await platform.restaurant.ticket(order_id)
    assert ticket is not None and ticket.accept_deadline is not None
    deadline = parse_iso(ticket.accept_deadline).timestamp()

    async def deadline_due() -> bool:  # and queued at the restaurant, whose consumers are paused
        backlog = await platform.dispatcher.backlog()
        return time.time() > deadline and backlog["restaurant"]["due"] >= 1

    if first == "deadline":
        hold = holding.hold_next_read(ticket_key(order_id))
        accept = asyncio.create_task(api.owner_decide("race-kitchen", order_id, "accept", "owner-race"))
        read = await hold.reached()
        assert read is not None and read.value["status"] == "PENDING"
        platform.dispatcher.resume("restaurant")
        await eventually(lambda: _ticket_is(api, order_id, "REJECTED"), what="the deadline firing")
        hold.release()
        assert_problem(await accept, 409, "INVALID_STATE")
        order = await api.wait_status(order_id, "CANCELLED")
        assert order["cancel_reason"] == "ACCEPT_TIMEOUT"
        assert (await api.payment(order_id) or {})["status"] == "REFUNDED"
        assert await api.balance("sena") == 50_000
    else:
        await eventually(deadline_due, what="the accept deadline falling due")
        accepted = await api.owner_decide("race-kitchen", order_id, "accept", "owner-race")
        assert accepted.status_code == 202, accepted.text
        platform.dispatcher.resume("restaurant")
        await api.settle()  # the deadline is handled, and changes nothing
        order = await api.wait_status(order_id, "ACCEPTED")
        assert order["cancel_reason"] is None
        assert await _ticket_is(api, order_id, "ACCEPTED")
        assert (await api.payment(order_id) or {})["status"] == "COMPLETED"
        assert await api.balance("sena") == 50_000 - 9_000
    await api.assert_consistent()


async def _ticket_is(api: Api, order_id: str, status: str) -> bool:
    ticket = await api.platform.restaurant.ticket(order_id)
    return ticket is not None and ticket.status == status
