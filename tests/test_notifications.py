"""Notifications: every status change tells the customer, a paid order tells the owners, a ready
delivery alerts the riders near it; live over SSE; the outbound webhook never holds up an order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.conftest import Api, PlatformFactory, api_for
from tests.test_lifecycle import HANOK, SEOUL_CHICKEN, cooked, on_board

ALL_STATUSES = ["PENDING", "PAID", "ACCEPTED", "COOKING", "READY", "PICKED_UP", "DELIVERED", "COMPLETED"]


async def feed(api: Api, role: str, subject: str, query: str = "") -> list[dict[str, Any]]:
    response = await api.request("GET", f"/notifications{query}", role, subject)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


async def until_feed(api: Api, role: str, subject: str, count: int, query: str = "") -> list[dict[str, Any]]:
    for _ in range(250):
        items = await feed(api, role, subject, query)
        if len(items) >= count:
            return items
        await asyncio.sleep(0.02)
    raise AssertionError(f"{role}:{subject} has {len(items)} notifications, expected {count}")


async def complete_journey(api: Api, customer: str) -> str:
    await api.top_up(customer, 100_000)
    order_id = await api.place_ok(customer)
    await cooked(api, order_id)
    await on_board(api, order_id)
    for verb in ("claim", "pick-up", "deliver"):
        assert (await api.request("POST", f"/deliveries/{order_id}/{verb}", "rider", "rider-kang")).status_code == 200
    await api.wait_status(order_id, "DELIVERED")
    assert (await api.request("POST", f"/orders/{order_id}/confirm", "customer", customer)).status_code == 202
    await api.wait_status(order_id, "COMPLETED")
    return order_id


async def test_one_notification_per_status_change_and_the_right_people_told(api: Api) -> None:
    order_id = await complete_journey(api, "rosa")
    items = await until_feed(api, "customer", "rosa", len(ALL_STATUSES))
    assert [n["status"] for n in items] == ALL_STATUSES
    assert {n["order_id"] for n in items} == {order_id}
    await api.settle()
    assert len(await feed(api, "customer", "rosa")) == len(ALL_STATUSES), "no duplicates"

    owner = await feed(api, "owner", "owner-kim")
    assert [(n["order_id"], n["status"]) for n in owner] == [(order_id, "PAID")]
    assert await feed(api, "owner", "owner-lee") == [], "only the restaurant's own owners"

    near = await feed(api, "rider", "rider-x", f"?lat={SEOUL_CHICKEN['lat']}&lon={SEOUL_CHICKEN['lon']}")
    assert [(n["order_id"], n["status"]) for n in near] == [(order_id, "READY")]
    assert await feed(api, "rider", "rider-y", f"?lat={HANOK['lat']}&lon={HANOK['lon']}") == []
    no_place = await api.request("GET", "/notifications", "rider", "rider-x")
    assert no_place.status_code == 422
    await api.assert_consistent()


async def test_the_stream_sends_server_sent_events_and_resumes(api: Api) -> None:
    await api.top_up("sol", 100_000)
    order_id = await api.place_ok("sol")
    await api.wait_status(order_id, "ACCEPTED")
    items = await until_feed(api, "customer", "sol", 3)
    response = await api.request("GET", "/notifications/stream?limit=2", "customer", "sol")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [e["data"]["status"] for e in events] == ["PENDING", "PAID"]
    resumed = await api.request(
        "GET", "/notifications/stream?limit=1", "customer", "sol", headers={"Last-Event-ID": events[-1]["id"]}
    )
    assert [e["data"]["status"] for e in parse_sse(resumed.text)] == ["ACCEPTED"]
    assert items[2]["seq"] == int(parse_sse(resumed.text)[0]["id"])
    unauthenticated = await api.client.get("/notifications/stream")
    assert unauthenticated.status_code == 401


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append({"id": fields["id"], "event": fields["event"], "data": orjson.loads(fields["data"])})
    return events


class Webhook:
    """A local webhook that fails its first ``failures`` calls, or hangs when ``hang`` is set."""

    def __init__(self, failures: int = 0, hang: bool = False) -> None:
        self.failures = failures
        self.hang = hang
        self.received: list[dict[str, Any]] = []
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3)  # beyond the sender's 2 s timeout
        if self.calls <= self.failures:
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.Response(status=204)


@asynccontextmanager
async def serving(hook: Webhook) -> AsyncIterator[str]:
    """The webhook on a free port of 127.0.0.1; yields its URL."""
    app = web.Application()
    app.router.add_post("/kakao", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/kakao"
    finally:
        await runner.cleanup()


@pytest.fixture
async def webhook_server() -> AsyncIterator[tuple[Webhook, str]]:
    hook = Webhook(failures=3)
    async with serving(hook) as url:
        yield hook, url


async def test_a_failing_webhook_is_retried_and_never_blocks_an_order(
    make_platform: PlatformFactory, webhook_server: tuple[Webhook, str]
) -> None:
    hook, url = webhook_server
    platform = await make_platform(notify_webhook=url)
    api = api_for(platform)
    await api.settle()
    await api.top_up("tae", 100_000)
    started = time.monotonic()
    order_id = await api.place_ok("tae")
    await api.wait_status(order_id, "ACCEPTED")
    assert time.monotonic() - started < 5, "the saga does not wait for the webhook"
    for _ in range(300):
        if len(hook.received) >= 3:
            break
        await asyncio.sleep(0.05)
    # Each message is retried on its own, so they may arrive in any order (the payload says which).
    assert sorted(m["status"] for m in hook.received) == ["ACCEPTED", "PAID", "PENDING"]
    assert all(m["recipient"] == "customer:tae" for m in hook.received)
    for _ in range(100):  # the sender marks a message sent after the webhook has answered
        log = (await api.request("GET", "/admin/notifications/outbound")).json()
        if all(entry["sent"] for entry in log):
            break
        await asyncio.sleep(0.05)
    assert len(log) == 3 and all(entry["sent"] for entry in log)
    assert max(entry["attempts"] for entry in log) > 1, "the first calls failed and were retried"


async def test_a_hanging_webhook_does_not_slow_the_saga(make_platform: PlatformFactory) -> None:
    async with serving(Webhook(hang=True)) as url:
        platform = await make_platform(notify_webhook=url)
        api = api_for(platform)
        await api.settle()
        await api.top_up("uma", 1_000_000)
        started = time.monotonic()
        ids = [await api.place_ok("uma") for _ in range(5)]
        for order_id in ids:
            await api.wait_status(order_id, "ACCEPTED")
        assert time.monotonic() - started < 5
        await until_feed(api, "customer", "uma", 15)  # the feed is not held up either
