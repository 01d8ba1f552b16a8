"""Notifications: every status change tells the customer, a paid order tells the owners, a ready
delivery alerts the riders near it; live over SSE; the outbound webhook never holds up an order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.integration.test_lifecycle import HANOK, SEOUL_CHICKEN, cooked, on_board
from tests.support.platform import Api, PlatformFactory, api_for, eventually

ALL_STATUSES = ["PENDING", "PAID", "ACCEPTED", "COOKING", "READY", "PICKED_UP", "DELIVERED", "COMPLETED"]


async def feed(api: Api, role: str, subject: str, query: str = "") -> list[dict[str, Any]]:
    response = await api.request("GET", f"/notifications{query}", role, subject)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


async def until_feed(api: Api, role: str, subject: str, count: int, query: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal items
        items = await feed(api, role, subject, query)
        return len(items) >= count

    await eventually(enough, what=f"{count} notifications for {role}:{subject}")
    return items


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
    """A local webhook that fails its first ``failures`` calls; while ``held``, every call hangs
    (beyond the sender's 2 s timeout, if need be) until ``release()``."""

    def __init__(self, failures: int = 0, held: bool = False) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.calls = 0
        self.answered = 0
        self._open = asyncio.Event()
        if not held:
            self._open.set()

    def release(self) -> None:
        self._open.set()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        number = self.calls
        await self._open.wait()
        self.answered += 1
        if number <= self.failures:
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
    hook = Webhook(failures=3, held=True)
    async with serving(hook) as url:
        yield hook, url
        hook.release()


async def test_a_failing_webhook_is_retried_and_never_blocks_an_order(
    make_platform: PlatformFactory, webhook_server: tuple[Webhook, str]
) -> None:
    hook, url = webhook_server
    platform = await make_platform(notify_webhook=url)
    api = api_for(platform)
    await api.settle()
    await api.top_up("tae", 100_000)
    order_id = await api.place_ok("tae")
    await eventually(_called(hook), what="the first webhook call")
    await api.wait_status(order_id, "ACCEPTED")
    assert hook.answered == 0, "the saga got to ACCEPTED while the webhook had answered nothing"
    hook.release()

    async def all_received() -> bool:
        return len(hook.received) >= 3

    await eventually(all_received, timeout=20, what="three messages reaching the webhook")
    # Each message is retried on its own, so they may arrive in any order (the payload says which).
    assert sorted(m["status"] for m in hook.received) == ["ACCEPTED", "PAID", "PENDING"]
    assert all(m["recipient"] == "customer:tae" for m in hook.received)
    log: list[dict[str, Any]] = []

    async def all_sent() -> bool:  # the sender marks a message sent after the webhook has answered
        nonlocal log
        log = (await api.request("GET", "/admin/notifications/outbound")).json()
        return all(entry["sent"] for entry in log)

    await eventually(all_sent, what="every message marked sent")
    assert len(log) == 3 and all(entry["sent"] for entry in log)
    assert max(entry["attempts"] for entry in log) > 1, "the first calls failed and were retried"


def _called(hook: Webhook) -> Any:
    async def called() -> bool:
        return hook.calls >= 1

    return called


async def test_a_hanging_webhook_does_not_slow_the_saga(make_platform: PlatformFactory) -> None:
    hook = Webhook(held=True)
    async with serving(hook) as url:
        try:
            platform = await make_platform(notify_webhook=url)
            api = api_for(platform)
            await api.settle()
            await api.top_up("uma", 1_000_000)
            ids = [await api.place_ok("uma") for _ in range(5)]
            await eventually(_called(hook), what="the first webhook call")
            for order_id in ids:
                await api.wait_status(order_id, "ACCEPTED")
            await until_feed(api, "customer", "uma", 15)  # the feed is not held up either
            assert hook.answered == 0, "all of it happened while the webhook hung"
        finally:
            hook.release()
