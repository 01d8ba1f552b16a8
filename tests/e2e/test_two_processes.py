"""``baedal up`` on two cores: the gateway's process and the engine process it starts (the other
services' consumers). Either may die at any point and nothing acknowledged is lost; one dies
with the other; an admin's pause reaches the engine; ``--processes 1`` is still one process."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.runtime.auth import Role, TokenIssuer, load_or_create_secret
from services.tools.audit import audit
from tests.support import EXAMPLES
from tests.support.platform import ORDER_BODY, eventually
from tests.support.server import Server

pytestmark = pytest.mark.slow

ENGINE = "services.entrypoints.engine"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", {**os.environ, "BAEDAL_DEMO_MANIFESTS": str(EXAMPLES), "BAEDAL_PROCESSES": "2"})
    try:
        yield server
    finally:
        server.stop()


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def engine_pid(server: Server) -> int:
    assert server.process is not None
    engines = [pid for pid, cmd in children(server.process.pid).items() if ENGINE in cmd]
    assert len(engines) == 1, children(server.process.pid)
    return engines[0]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Customers:
    def __init__(self, server: Server, count: int) -> None:
        self.tokens = TokenIssuer(load_or_create_secret(server.data_dir))
        self.names = [f"two-{n}" for n in range(count)]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.issue(Role.CUSTOMER, name)}"}

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.issue(Role.ADMIN, 'two-processes')}"}

    async def fund(self, client: httpx.AsyncClient) -> None:
        for name in self.names:
            answer = await client.post(
                f"/wallets/{name}/top-ups", json={"amount": 5_000_000}, headers=self.headers(name)
            )
            assert answer.status_code == 200, answer.text

    async def burst_until(self, client: httpx.AsyncClient, acknowledged: int, then: Callable[[], None]) -> list[str]:
        """Orders from every customer at once; ``then()`` once that many got their 202; go on until
        the server stops answering."""
        ids: list[str] = []
        fired = False

        async def loop(name: str) -> None:
            nonlocal fired
            for _ in range(200):
                try:
                    answer = await client.post("/orders", json=ORDER_BODY, headers=self.headers(name))
                except httpx.HTTPError:
                    return
                if answer.status_code != 202:
                    return  # shutting down
                ids.append(answer.json()["id"])
                if len(ids) >= acknowledged and not fired:
                    fired = True
                    then()

        await asyncio.wait_for(asyncio.gather(*(loop(name) for name in self.names)), timeout=120)
        return ids


async def wait_menu(client: httpx.AsyncClient) -> None:
    async def menu() -> bool:
        return (await client.get("/restaurants/seoul-chicken/menu")).status_code == 200

    await eventually(menu, timeout=30, what="the demo catalog in the read store")


async def all_accepted(server: Server, customers: Customers, ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=customers.admin()) as client:

        async def settled() -> bool:
            orders = {o["id"]: o["status"] for o in (await client.get("/admin/audit/orders")).json()}
            lost = set(ids) - orders.keys()
            assert not lost, f"acknowledged orders lost: {sorted(lost)[:5]}"
            return all(orders[i] == "ACCEPTED" for i in ids)

        await eventually(settled, timeout=90, what="every acknowledged order ACCEPTED")
        report = await audit(client, stuck_after_s=5.0)
    assert report["ok"], report["violations"]


async def test_a_killed_engine_stops_the_platform_and_a_restart_loses_nothing(server: Server) -> None:
    server.start()
    customers = Customers(server, 16)
    engine = engine_pid(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await customers.fund(client)
        await wait_menu(client)
        ids = await customers.burst_until(client, 60, lambda: os.kill(engine, signal.SIGKILL))
    assert len(ids) >= 60
    assert server.process is not None
    status = server.process.wait(30)  # the gateway's process follows its engine
    assert status != 0, "a platform whose engine was killed must not exit as if all was well"

    server.start()
    await all_accepted(server, customers, ids)


async def test_the_engine_dies_with_the_gateways_process_and_a_restart_loses_nothing(server: Server) -> None:
    server.start()
    customers = Customers(server, 16)
    engine = engine_pid(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await customers.fund(client)
        await wait_menu(client)
        ids = await customers.burst_until(client, 60, server.kill)

    async def engine_gone() -> bool:
        return not alive(engine)

    await eventually(engine_gone, timeout=20, what="the engine dying with the process that started it")

    server.start()
    await all_accepted(server, customers, ids)


async def test_a_pause_reaches_the_consumers_in_the_engine(server: Server) -> None:
    server.start()
    customers = Customers(server, 1)
    name = customers.names[0]
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=customers.admin()) as client:
        await customers.fund(client)
        await wait_menu(client)
        paused = await client.post("/admin/services/payment/pause")
        assert paused.json() == {"service": "payment", "paused": True}
        order = (await client.post("/orders", json=ORDER_BODY, headers=customers.headers(name))).json()["id"]
        await asyncio.sleep(1.5)  # ample for a saga step: the paused payment consumer must not take it
        status = (await client.get(f"/orders/{order}", headers=customers.headers(name))).json()["status"]
        assert status == "PENDING"
        backlog = (await client.get("/admin/backlog")).json()
        assert backlog["paused"] == ["payment"] and not backlog["settled"]
        assert (await client.post("/admin/services/payment/resume")).json()["paused"] is False

        async def accepted() -> bool:
            answer = await client.get(f"/orders/{order}", headers=customers.headers(name))
            return bool(answer.json()["status"] == "ACCEPTED")

        await eventually(accepted, timeout=20, what="the order going on after the resume")


async def test_one_process_when_asked(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", {**os.environ, "BAEDAL_DEMO_MANIFESTS": str(EXAMPLES), "BAEDAL_PROCESSES": "1"})
    try:
        server.start()
        assert server.process is not None
        assert not [cmd for cmd in children(server.process.pid).values() if ENGINE in cmd]
        customers = Customers(server, 1)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            await customers.fund(client)
            await wait_menu(client)
            answer = await client.post("/orders", json=ORDER_BODY, headers=customers.headers(customers.names[0]))
            assert answer.status_code == 202
        await all_accepted(server, customers, [answer.json()["id"]])
    finally:
        server.stop()


async def test_metrics_count_both_processes_whichever_answers(server: Server) -> None:
    server.start()
    customers = Customers(server, 1)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await customers.fund(client)
        await wait_menu(client)
        placed = await client.post("/orders", json=ORDER_BODY, headers=customers.headers(customers.names[0]))
        await all_accepted(server, customers, [placed.json()["id"]])

        async def settled() -> bool:
            return bool((await client.get("/admin/backlog", headers=customers.admin())).json()["settled"])

        await eventually(settled, timeout=30, what="every event handled")

        async def handled(service: str) -> float:
            text = (await client.get("/metrics")).text
            lines = [line for line in text.splitlines() if line.startswith("baedal_events_handled_total{")]
            return sum(float(line.rsplit(" ", 1)[1]) for line in lines if f'service="{service}"' in line)

        # order's consumers run in the first process, payment's in the engine; each of many scrapes
        # (spread over both processes by the kernel) must see both, with the same counts.
        scrapes = [(await handled("order"), await handled("payment")) for _ in range(12)]
    assert len(set(scrapes)) == 1, scrapes
    assert scrapes[0][0] > 0 and scrapes[0][1] > 0
