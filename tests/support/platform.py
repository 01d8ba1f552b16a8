"""Helpers for tests that drive a platform: the backends, an HTTP client with the roles, order
bodies, problem+json checks, and waiting for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import pytest

from services.entrypoints.bootstrap import Platform
from services.entrypoints.gateway import create_app
from services.runtime.auth import Role
from services.runtime.web.problems import PROBLEM
from services.tools.audit import audit

PG_URL = os.environ.get("BAEDAL_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
REQUIRE_PG = os.environ.get("BAEDAL_REQUIRE_POSTGRES") == "1"
PROVIDE_PG = "run `make services` (root and apt), or set BAEDAL_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB"

BACKENDS = ["sqlite", "postgresql"]

ORDER_BODY = {
    "restaurant_id": "seoul-chicken",
    "items": [{"product_id": "fried", "quantity": 2, "unit_price": 18000}],
    "delivery": {"address": "서울 강남구 테헤란로 1", "lat": 37.50, "lon": 127.03, "express": False},
    "payment": {"method": "wallet"},
    "total_price": 39000,
}


def order_body(
    restaurant_id: str = "seoul-chicken",
    lines: Iterable[tuple[str, int, int]] = (("fried", 2, 18000),),
    fee: int = 3000,
    express: bool = False,
) -> dict[str, Any]:
    items = [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in lines]
    return {
        "restaurant_id": restaurant_id,
        "items": items,
        "delivery": {"address": "서울 어딘가 1", "lat": 37.5, "lon": 127.0, "express": express},
        "payment": {"method": "wallet"},
        "total_price": sum(q * u for _, q, u in lines) + fee,
    }


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A problem+json answer with this status and code, and the fields the contract promises."""
    assert response.status_code == status, f"expected {status} {code}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status, body
    assert body["title"], body
    assert body["detail"], body
    return body


class Api:
    """An HTTP client for the platform with helpers for the roles and for waiting on the saga."""

    def __init__(self, platform: Platform, client: httpx.AsyncClient) -> None:
        self.platform = platform
        self.client = client

    def headers(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.platform.tokens.issue(Role(role), subject)}"}

    def admin(self) -> dict[str, str]:
        return self.headers("admin", "test-admin")

    async def request(
        self, method: str, path: str, role: str = "admin", subject: str = "test-admin", **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.headers(role, subject), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def top_up(self, customer: str, amount: int) -> int:
        response = await self.request(
            "POST", f"/wallets/{customer}/top-ups", "customer", customer, json={"amount": amount}
        )
        assert response.status_code == 200, response.text
        balance: int = response.json()["balance"]
        return balance

    async def balance(self, customer: str) -> int:
        response = await self.request("GET", f"/wallets/{customer}", "customer", customer)
        assert response.status_code == 200, response.text
        balance: int = response.json()["balance"]
        return balance

    async def place(self, customer: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
        return await self.request("POST", "/orders", "customer", customer, json=body or ORDER_BODY, headers=headers)

    async def place_ok(self, customer: str, body: dict[str, Any] | None = None) -> str:
        response = await self.place(customer, body)
        assert response.status_code == 202, response.text
        order_id: str = response.json()["id"]
        return order_id

    async def owner_decide(
        self,
        restaurant_id: str,
        order_id: str,
        verb: str,
        owner: str,
        json: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> httpx.Response:
        """accept/reject as an owner. A just-paid order can show in the queue a moment before the
        restaurant service has opened its ticket (404 then): retry that window."""
        deadline = time.monotonic() + timeout
        path = f"/restaurants/{restaurant_id}/orders/{order_id}/{verb}"
        while True:
            response = await self.request("POST", path, "owner", owner, json=json)
            if response.status_code != 404 or time.monotonic() > deadline:
                return response
            await asyncio.sleep(0.05)

    async def order(self, order_id: str) -> dict[str, Any]:
        response = await self.request("GET", f"/orders/{order_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def payment(self, order_id: str) -> dict[str, Any] | None:
        response = await self.request("GET", f"/payments/{order_id}")
        return response.json() if response.status_code == 200 else None

    async def wait_status(
        self, order_id: str, *statuses: str, timeout: float = 15.0, poll: float = 0.02
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = await self.order(order_id)
            if view["status"] in statuses:
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} is {view['status']}, expected one of {statuses}")
            await asyncio.sleep(poll)

    async def settle(self, timeout: float = 60.0) -> None:
        """Wait until no event is due anywhere and no order is PENDING or CANCELLING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.platform.dispatcher.settled():
                orders = (await self.request("GET", "/admin/audit/orders")).json()
                if not any(o["status"] in ("PENDING", "CANCELLING") for o in orders):
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"platform did not settle: {await self.platform.dispatcher.backlog()}")

    async def audit(self, **kwargs: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(
            transport=self.client._transport, base_url="http://baedal", headers=self.admin()
        ) as client:
            return await audit(client, delay_s=0.3, **kwargs)

    async def assert_consistent(self) -> dict[str, Any]:
        """Settle, then every invariant of the contract must hold (and nothing may be stuck)."""
        await self.settle()
        report = await self.audit(stuck_after_s=0.0)
        assert report["ok"], report["violations"]
        assert not await self.platform.dispatcher.dead_letters(), "no event may end in the dead-letter store"
        return report


PlatformFactory = Callable[..., Awaitable[Platform]]


@functools.cache
def postgres_problem() -> str | None:
    """Why the test server cannot be used, or None; asked once per session."""
    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return str(exc).strip()


async def require_postgres() -> None:
    if problem := postgres_problem():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at {PG_URL} is required (BAEDAL_REQUIRE_POSTGRES=1) but unreachable: {problem}")
        pytest.skip(f"PostgreSQL at {PG_URL} does not answer ({problem}): {PROVIDE_PG}")


def api_for(platform: Platform) -> Api:
    app = create_app(platform, manage_lifecycle=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://baedal", timeout=30)
    return Api(platform, client)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def gather_limited(coros: Iterable[Awaitable[Any]], limit: int = 50) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def run(coro: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))
