"""Crashes on real sidecars, each during a burst of orders: ``kill -9`` of a service's process, of a
service's daprd, and a restart of the Redis server under every sidecar (``make services``'s, which
keeps an append-only file). After the restart every order that got a 202 settles (ACCEPTED: the
burst orders from an auto-accept restaurant) and the audit is clean."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from tests.daprd.conftest import DaprdApi
from tests.support import ROOT
from tests.support.daprd import REDIS, redis_command, redis_problem
from tests.support.platform import ORDER_BODY, eventually

CUSTOMERS = 8
PER_CUSTOMER = 8  # at most 64 orders a scenario
FAULT_AFTER = 16  # acknowledged orders before the fault
REDIS_DOWN_S = 3.0
APP_DOWN_S = 12.0  # longer than the deliveries' retries (about 7 s, resiliency.yaml)


async def burst(api: DaprdApi, prefix: str, fault: Callable[[], None]) -> tuple[list[str], int, int]:
    """Orders from concurrent customers; ``fault`` runs once FAULT_AFTER were acknowledged, and the
    customers go on placing orders through it. The ids that got a 202, how many did not, and how
    many were acknowledged after the fault."""
    customers = [f"{prefix}-{n}" for n in range(CUSTOMERS)]
    for customer in customers:
        await api.top_up(customer, 1_000_000)
    acknowledged: list[str] = []
    refused = 0
    at_fault: int | None = None

    async def customer_loop(customer: str) -> None:
        nonlocal refused, at_fault
        for _ in range(PER_CUSTOMER):
            try:
                response = await api.place(customer, ORDER_BODY)
            except httpx.HTTPError:
                refused += 1
                continue
            if response.status_code == 202:
                acknowledged.append(response.json()["id"])
            else:
                refused += 1
            if len(acknowledged) >= FAULT_AFTER and at_fault is None:
                at_fault = len(acknowledged)
                await asyncio.to_thread(fault)

    await asyncio.wait_for(asyncio.gather(*(customer_loop(c) for c in customers)), timeout=120)
    assert at_fault is not None, "the fault should land mid-burst"
    return acknowledged, refused, len(acknowledged) - at_fault


async def every_order_accepted(api: DaprdApi, acknowledged: list[str], timeout: float = 90.0) -> None:
    async def accepted() -> bool:
        orders = {o["id"]: o["status"] for o in (await api.request("GET", "/admin/audit/orders")).json()}
        lost = set(acknowledged) - orders.keys()
        assert not lost, f"acknowledged orders lost: {sorted(lost)[:5]}"
        return all(orders[o] == "ACCEPTED" for o in acknowledged)

    await eventually(accepted, timeout=timeout, what="every acknowledged order being ACCEPTED")


async def test_kill_9_of_a_service_during_a_burst_loses_no_acknowledged_order(api: DaprdApi) -> None:
    """The payment service dies mid-saga and stays down longer than a delivery's retries last
    (resiliency.yaml): its sidecar notices (app health checks) and stops subscribing, so its
    messages wait in Redis instead of going to the dead-letter topic; the order service keeps
    acknowledging orders meanwhile."""
    cluster = api.cluster
    killed_at = 0.0

    def kill() -> None:
        nonlocal killed_at
        cluster.kill_app("payment")
        killed_at = time.monotonic()

    acknowledged, _, after = await burst(api, "kill-app", kill)
    assert after > 0, "orders go on being taken while payment is down"
    assert not cluster.apps["payment"].app.alive  # type: ignore[union-attr]

    async def down_longer_than_the_retries() -> bool:  # its sidecar stopped subscribing meanwhile
        return time.monotonic() - killed_at > APP_DOWN_S

    await eventually(down_longer_than_the_retries, timeout=APP_DOWN_S + 5, what="payment staying down")
    cluster.restart("payment")  # from the main thread (see Proc.start)
    await every_order_accepted(api, acknowledged)


async def test_kill_9_of_a_sidecar_during_a_burst_loses_no_acknowledged_order(api: DaprdApi) -> None:
    """The order service's daprd dies: requests through it fail (no 202), its app cannot relay its
    outbox, and the messages its consumer had taken stay pending in Redis; after the restart the
    outbox sweep relays and the new consumer claims the pending ones."""
    cluster = api.cluster
    acknowledged, refused, _ = await burst(api, "kill-daprd", lambda: cluster.kill_sidecar("order"))
    assert not cluster.apps["order"].sidecar.alive
    assert refused > 0, "with the sidecar gone, orders cannot be taken"
    cluster.restart("order")
    await every_order_accepted(api, acknowledged)


def _stop_redis() -> None:
    """Stop the Redis server ``make services`` started; SHUTDOWN writes the append-only file and
    closes the connection without an answer."""
    with contextlib.suppress(ConnectionError):
        redis_command("SHUTDOWN")


def _start_redis() -> str:
    """Start it again as ``make services`` does, on the same data directory."""
    started = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "backing_services.py"), "redis"], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stdout + started.stderr
    return started.stdout.strip()


def _redis_is_ours() -> str | None:
    """Why this Redis cannot be restarted by the test, or None."""
    directory = redis_command("CONFIG", "GET", "dir")[1]
    appendonly = redis_command("CONFIG", "GET", "appendonly")[1]
    if "baedal-services" not in directory or appendonly != "yes":
        return f"Redis on {REDIS[0]}:{REDIS[1]} was not started by `make services` (dir {directory}, aof {appendonly})"
    return None


async def test_a_redis_restart_during_a_burst_loses_no_acknowledged_order(api: DaprdApi) -> None:
    """Pub/sub goes away under every sidecar: commits (PostgreSQL) go on and orders are still
    acknowledged, their events stay in the services' outboxes; when Redis is back (its streams and
    consumer groups from the append-only file) the relays publish them and the consumers resume."""
    if problem := _redis_is_ours():
        pytest.skip(problem)
    down_at = 0.0

    def stop_redis() -> None:
        nonlocal down_at
        _stop_redis()
        down_at = time.monotonic()

    try:
        acknowledged, _, after = await burst(api, "redis", stop_redis)

        async def down_a_while() -> bool:  # long enough for every sidecar's Redis clients to notice
            return time.monotonic() - down_at > REDIS_DOWN_S

        await eventually(down_a_while, timeout=REDIS_DOWN_S + 5, what="Redis staying down a while")
    finally:  # whatever happened: Redis back up (other runs on this machine may use it too)
        if redis_problem() is not None:
            started = _start_redis()
            print(f"Redis was down {time.monotonic() - down_at:.1f} s; {started}")
    assert redis_problem() is None
    assert after > 0, "orders go on being taken (and their events kept) while Redis is down"
    api.cluster.wait_all_ready()
    await every_order_accepted(api, acknowledged, timeout=120)
