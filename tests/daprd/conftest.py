"""The platform on real daprd sidecars, once per test session (see tests/support/daprd.py), and
the client the scenarios drive it with. Every scenario ends with the platform settled, no dead
letter, and the audit clean."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.runtime.auth import Role
from services.tools.audit import audit
from tests.integration.test_notifications import Webhook, serving
from tests.support import EXAMPLES
from tests.support.daprd import REQUIRE, DaprdCluster, missing_prerequisite
from tests.support.platform import Api

SERVICES = ("order", "payment", "restaurant", "delivery", "notification")
DEAD_LETTER_TOPICS = [f"{service}-dead-letters" for service in SERVICES]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.daprd)
            item.add_marker(pytest.mark.slow)


class Background:
    """An event loop in a thread of its own, for servers the sidecars call (the webhook)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="daprd-tests-background", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def background() -> Iterator[Background]:
    bg = Background()
    try:
        yield bg
    finally:
        bg.close()


@pytest.fixture(scope="session")
def webhook(background: Background) -> Iterator[tuple[Webhook, str]]:
    """The notification channel's far end (the notify binding's URL)."""
    hook = Webhook()
    context = serving(hook)
    url = background.run(context.__aenter__())
    try:
        yield hook, url
    finally:
        with contextlib.suppress(Exception):
            background.run(context.__aexit__(None, None, None))


@pytest.fixture(scope="session")
def daprd_cluster(
    request: pytest.FixtureRequest, paygate_process: str, webhook: tuple[Webhook, str]
) -> Iterator[DaprdCluster]:
    """The platform; its logs stay in /tmp/baedal-daprd-* when a test failed (else removed)."""
    if problem := missing_prerequisite():
        if REQUIRE:
            pytest.fail(f"BAEDAL_REQUIRE_DAPRD=1 but {problem}")
        pytest.skip(problem)
    base = Path(tempfile.mkdtemp(prefix="baedal-daprd-"))
    cluster = DaprdCluster(
        base,
        binding_urls={"paygate": paygate_process, "notify": webhook[1]},
        # The card gateway's in-process breaker, quick enough for a test to see it open and close.
        extra_env={"BAEDAL_PAYGATE_FAILURE_THRESHOLD": "3", "BAEDAL_PAYGATE_RECOVERY_S": "3"},
    )
    started = time.monotonic()
    try:
        cluster.start()
        print(f"\n{len(cluster.apps)} apps and their sidecars ready in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()
        if request.session.testsfailed:
            print(f"\nthe sidecars' and apps' logs: {cluster.logs}")
        else:
            shutil.rmtree(base, ignore_errors=True)


class DaprdApi(Api):
    """The tests' API helper on real sidecars: the gateway's client, tokens signed with the run's
    secret; settled means no order in flight and no message waiting in any Redis stream."""

    def __init__(self, cluster: DaprdCluster, client: httpx.AsyncClient) -> None:
        self.cluster = cluster
        self.client = client

    def headers(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cluster.tokens.issue(Role(role), subject)}"}

    def backlog(self) -> dict[str, tuple[int, int]]:
        """Per ``stream/group``: (messages not yet read, read but not acknowledged)."""
        return self.cluster.stream_backlog()

    async def settle(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            orders = (await self.request("GET", "/admin/audit/orders")).json()
            busy = [o["id"] for o in orders if o["status"] in ("PENDING", "CANCELLING")]
            waiting = {k: v for k, v in self.backlog().items() if v != (0, 0)}
            if not busy and not waiting:
                return
            if time.monotonic() > deadline:
                details = {k: self.cluster.pending(k.rsplit("/", 1)[0], k.rsplit("/", 1)[1]) for k in waiting}
                raise AssertionError(f"not settled after {timeout:.0f} s: orders in flight {busy[:5]}, {details}")
            await asyncio.sleep(0.2)

    def dead_letters(self) -> dict[str, int]:
        counts = {topic: int(self.cluster.redis("XLEN", topic)) for topic in DEAD_LETTER_TOPICS}
        return {topic: n for topic, n in counts.items() if n}

    async def audit(self, **kwargs: Any) -> dict[str, Any]:
        async with self.cluster.client() as client:
            client.headers.update(self.admin())
            return await audit(client, delay_s=0.5, **kwargs)

    async def assert_consistent(self) -> dict[str, Any]:
        await self.settle()
        report = await self.audit(stuck_after_s=0.0)
        assert report["ok"], report["violations"]
        expected = self.cluster.expected_dead_letters
        assert self.dead_letters() == expected, f"dead letters: {self.dead_letters()}, on purpose: {expected}"
        return report


async def apply_demo_catalog(api: DaprdApi) -> None:
    """The demo restaurants, through the gateway; then wait until the order service's menu has them."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        response = await api.request("POST", "/admin/restaurants", json=yaml.safe_load(path.read_text()))
        assert response.status_code == 200, response.text
    for path in sorted(EXAMPLES.glob("*.yaml")):
        await wait_menu(api, yaml.safe_load(path.read_text())["metadata"]["name"])


async def wait_menu(api: DaprdApi, name: str, timeout: float = 30.0, present: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while ((await api.client.get(f"/restaurants/{name}/menu")).status_code == 200) != present:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} {'never reached' if present else 'never left'} the order service's menu")
        await asyncio.sleep(0.1)


@pytest.fixture
async def api(daprd_cluster: DaprdCluster) -> AsyncIterator[DaprdApi]:
    """The platform with the demo catalog; after the scenario: settled, no dead letter, audit clean."""
    daprd_cluster.wait_all_ready()
    async with daprd_cluster.client() as client:
        api = DaprdApi(daprd_cluster, client)
        await apply_demo_catalog(api)
        yield api
        await api.assert_consistent()
