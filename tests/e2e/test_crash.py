"""Crash: ``baedal up`` as a real process, killed during a burst of orders (by SIGKILL at a random
instant, and at each named step of the delivery path) and restarted on the same data dir. Every
order that got a 202 settles, and the audit is clean."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest

from services.entrypoints.bootstrap import drop_schemas
from services.runtime.auth import Role, TokenIssuer, load_or_create_secret
from services.runtime.embedded.dispatcher import CRASH_EXIT_CODE, CRASH_POINTS
from services.tools.audit import audit
from tests.support import EXAMPLES
from tests.support.platform import BACKENDS, ORDER_BODY, PG_URL, eventually, require_postgres
from tests.support.server import Server

pytestmark = pytest.mark.slow

# At most this many orders per customer before the crash point; funded for all of them, so that
# every order can be ACCEPTED. (With two processes, when the engine dies at the point, the first
# process serves its open connections for a moment more: one customer placed 44 orders so.)
ORDERS_BEFORE_THE_CRASH = 50


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = {**os.environ, "BAEDAL_DEMO_MANIFESTS": str(EXAMPLES)}
    prefix = f"crash{uuid.uuid4().hex[:8]}_"
    if request.param == "postgresql":
        asyncio.run(require_postgres())
        env |= {"BAEDAL_DATABASE_URL": PG_URL, "BAEDAL_SCHEMA_PREFIX": prefix}
    server = Server(tmp_path / "data", env)
    try:
        yield server
    finally:
        server.stop()
        if request.param == "postgresql":
            asyncio.run(drop_schemas(PG_URL, prefix))


async def test_sigkill_during_a_burst_loses_nothing_acknowledged(server: Server) -> None:
    server.start()
    tokens = TokenIssuer(load_or_create_secret(server.data_dir))
    customers = [f"crash-{n}" for n in range(20)]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for customer in customers:
            headers = {"Authorization": f"Bearer {tokens.issue(Role.CUSTOMER, customer)}"}
            response = await client.post(f"/wallets/{customer}/top-ups", json={"amount": 5_000_000}, headers=headers)
            assert response.status_code == 200
        await _wait_menu(client)
        acknowledged = await _burst_then_kill(client, server, tokens, customers)
    assert len(acknowledged) >= 50, "the kill should land mid-burst, after some orders were acknowledged"

    server.start()  # same data dir (and same PostgreSQL schemas)
    admin = {"Authorization": f"Bearer {tokens.issue(Role.ADMIN, 'crash-test')}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=admin) as client:
        deadline = time.monotonic() + 90
        pending = set(acknowledged)
        while pending and time.monotonic() < deadline:
            orders = {o["id"]: o for o in (await client.get("/admin/audit/orders")).json()}
            missing = pending - orders.keys()
            assert not missing, f"acknowledged orders lost: {sorted(missing)[:5]}"
            pending = {oid for oid in pending if orders[oid]["status"] != "ACCEPTED"}
            await asyncio.sleep(0.5)
        assert not pending, f"{len(pending)} acknowledged orders never settled"
        report = await audit(client, stuck_after_s=5.0)
    assert report["ok"], report["violations"]


async def _wait_menu(client: httpx.AsyncClient) -> None:
    for _ in range(100):
        if (await client.get("/restaurants/seoul-chicken/menu")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("demo catalog never reached the read store")


async def _burst_then_kill(
    client: httpx.AsyncClient, server: Server, tokens: TokenIssuer, customers: list[str]
) -> list[str]:
    """Place orders from 20 concurrent clients; SIGKILL the server once 80 were acknowledged."""
    acknowledged: list[str] = []
    killed = asyncio.Event()

    async def customer_loop(customer: str) -> None:
        headers = {"Authorization": f"Bearer {tokens.issue(Role.CUSTOMER, customer)}"}
        while not killed.is_set():
            try:
                response = await client.post("/orders", json=ORDER_BODY, headers=headers)
            except httpx.HTTPError:
                return  # the server is gone; this request was never acknowledged
            if response.status_code == 202:
                acknowledged.append(response.json()["id"])
                if len(acknowledged) >= 80 and not killed.is_set():
                    killed.set()
                    server.kill()

    await asyncio.wait_for(asyncio.gather(*(customer_loop(c) for c in customers)), timeout=120)
    return acknowledged


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_crash_at_each_step_of_the_delivery_path_loses_nothing(server: Server, point: str) -> None:
    """The process dies at a named point (``BAEDAL_CRASH_AT``) the first time an event passes it:
    before or after a commit of the outbox relay or of a worker batch. After a restart every order
    that was committed, acknowledged or not, is ACCEPTED, and the audit is clean."""
    customers = [f"point-{n}" for n in range(10)]
    server.start()  # without the crash point: the demo catalog must reach every service first
    tokens = TokenIssuer(load_or_create_secret(server.data_dir))
    admin = {"Authorization": f"Bearer {tokens.issue(Role.ADMIN, 'crash-test')}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=admin) as client:
        for customer in customers:
            headers = {"Authorization": f"Bearer {tokens.issue(Role.CUSTOMER, customer)}"}
            funds = ORDERS_BEFORE_THE_CRASH * cast(int, ORDER_BODY["total_price"])
            response = await client.post(f"/wallets/{customer}/top-ups", json={"amount": funds}, headers=headers)
            assert response.status_code == 200
        await _wait_menu(client)
        await eventually(lambda: _settled(client), timeout=60, what="the demo catalog reaching every service")
    server.stop()

    normal_env = server.env
    server.env = normal_env | {"BAEDAL_CRASH_AT": point}
    server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        acknowledged = await _place_until_the_process_dies(client, tokens, customers)
    assert server.process is not None
    assert server.process.wait(30) == CRASH_EXIT_CODE, f"the process did not die at {point}"

    server.env = normal_env
    server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=admin) as client:

        async def every_order_accepted() -> bool:
            orders = {o["id"]: o["status"] for o in (await client.get("/admin/audit/orders")).json()}
            lost = set(acknowledged) - orders.keys()
            assert not lost, f"acknowledged orders lost: {sorted(lost)[:5]}"
            return bool(orders) and set(orders.values()) == {"ACCEPTED"}

        await eventually(every_order_accepted, timeout=60, what=f"every order settling after a crash at {point}")
        report = await audit(client, stuck_after_s=5.0)
    assert report["ok"], report["violations"]


async def _settled(client: httpx.AsyncClient) -> bool:
    settled: bool = (await client.get("/admin/backlog")).json()["settled"]
    return settled


async def _place_until_the_process_dies(
    client: httpx.AsyncClient, tokens: TokenIssuer, customers: list[str]
) -> list[str]:
    """Orders from concurrent clients until the server stops answering; the ids that got a 202."""
    acknowledged: list[str] = []

    async def customer_loop(customer: str) -> None:
        headers = {"Authorization": f"Bearer {tokens.issue(Role.CUSTOMER, customer)}"}
        for _ in range(ORDERS_BEFORE_THE_CRASH):
            try:
                response = await client.post("/orders", json=ORDER_BODY, headers=headers)
            except httpx.HTTPError:
                return  # the server is gone; this request was never acknowledged
            assert response.status_code == 202, response.text
            acknowledged.append(response.json()["id"])
        raise AssertionError("the server never reached its crash point")

    await asyncio.wait_for(asyncio.gather(*(customer_loop(c) for c in customers)), timeout=120)
    return acknowledged
