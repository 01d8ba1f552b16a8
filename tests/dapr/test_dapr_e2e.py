"""End to end on the Dapr runtime: every service its own process behind its own (fake) sidecar,
the saga's events going through each state store's outbox and Dapr pub/sub, the card gateway and
the notification channel through output bindings. The audit runs after every scenario."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml
from dapr.conf import settings as dapr_settings

from services.catalog.manifest import RestaurantResource
from services.catalog.reconcile import reconcile, reconcile_removal
from services.entrypoints.bootstrap import SERVICES, catalog_publisher
from services.restaurant_operator.config import OperatorConfig
from services.tools.audit import audit
from tests.dapr.test_dapr_subscriptions import GRACEFUL
from tests.integration.test_lifecycle import cooked, on_board
from tests.integration.test_notifications import Webhook, serving
from tests.support import EXAMPLES
from tests.support.dapr_cluster import DaprCluster
from tests.support.platform import Api, order_body
from tests.support.server import free_port

pytestmark = pytest.mark.slow


class DaprApi(Api):
    """The tests' API helper, for services on Dapr: settled means no order in flight and no
    message waiting in the fake broker."""

    def __init__(self, cluster: DaprCluster, client: Any) -> None:
        self.cluster = cluster
        self.client = client
        self.tokens = cluster.tokens

    def headers(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.issue(role, subject)}"}

    async def settle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            orders = (await self.request("GET", "/admin/audit/orders")).json()
            if not any(o["status"] in ("PENDING", "CANCELLING") for o in orders) and self.cluster.fake.idle():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the services did not settle")

    async def assert_consistent(self) -> dict[str, Any]:
        await self.settle()
        report = await self.audit(stuck_after_s=0.0)
        assert report["ok"], report["violations"]
        assert not self.cluster.fake.dead_letters, self.cluster.fake.dead_letters
        assert not self.cluster.fake.warnings, self.cluster.fake.warnings
        return report

    async def audit(self, **kwargs: Any) -> dict[str, Any]:
        async with self.cluster.client() as client:
            client.headers.update(self.admin())
            return await audit(client, delay_s=0.3, **kwargs)


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[Webhook, str]]:
    """The notification channel's far end, served from its own thread for the whole module."""
    loop = asyncio.new_event_loop()
    hook = Webhook()
    context = serving(hook)
    url = loop.run_until_complete(context.__aenter__())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield hook, url
    asyncio.run_coroutine_threadsafe(context.__aexit__(None, None, None), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, paygate_process: str, webhook: tuple[Webhook, str]
) -> Iterator[DaprCluster]:
    cluster = DaprCluster(
        tmp_path_factory.mktemp("dapr"),
        SERVICES,
        binding_urls={"paygate": paygate_process, "notify": webhook[1]},
        duplicate_rate=0.2,  # at least once: a fifth of the deliveries come twice
    )
    cluster.start()
    try:
        yield cluster
    finally:
        codes = cluster.stop()
    assert all(code in GRACEFUL for code in codes.values()), f"every process stops cleanly on SIGTERM: {codes}"


@pytest.fixture
async def api(cluster: DaprCluster) -> AsyncIterator[DaprApi]:
    async with cluster.client() as client:
        api = DaprApi(cluster, client)
        await apply_demo_catalog(api)
        yield api
        await api.assert_consistent()


async def apply_demo_catalog(api: DaprApi) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        response = await api.request("POST", "/admin/restaurants", json=manifest)
        assert response.status_code == 200, response.text
    for path in sorted(EXAMPLES.glob("*.yaml")):  # the order service's read store has them
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        for _ in range(300):
            if (await api.client.get(f"/restaurants/{name}/menu")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{name} never reached the order service's menu read store")


async def test_happy_path_to_completed_with_every_service_its_own_process(
    api: DaprApi, webhook: tuple[Webhook, str]
) -> None:
    await api.top_up("dapr-mina", 100_000)
    order_id = await api.place_ok("dapr-mina", order_body())
    await cooked(api, order_id)
    await api.wait_status(order_id, "READY", timeout=30)
    await on_board(api, order_id)
    for verb in ("claim", "pick-up", "deliver"):
        response = await api.request("POST", f"/deliveries/{order_id}/{verb}", "rider", "rider-jo")
        assert response.status_code == 200, (verb, response.text)
    await api.wait_status(order_id, "DELIVERED", timeout=30)
    confirmed = await api.request("POST", f"/orders/{order_id}/confirm", "customer", "dapr-mina")
    assert confirmed.status_code == 202, confirmed.text
    order = await api.wait_status(order_id, "COMPLETED", timeout=30)
    assert [h["status"] for h in order["history"]][-1] == "COMPLETED"
    assert await api.balance("dapr-mina") == 100_000 - order["total_price"]
    payment = await api.payment(order_id)
    assert payment is not None and payment["status"] == "COMPLETED"
    # the customer heard of every step, in the feed and through the notify output binding
    await api.settle()
    feed = (await api.request("GET", "/notifications", "customer", "dapr-mina")).json()
    assert {n["status"] for n in feed if n["order_id"] == order_id} >= {"PAID", "ACCEPTED", "COMPLETED"}
    sent = {m["order_id"] for m in webhook[0].received}
    assert order_id in sent


async def test_low_wallet_cancels_and_moves_no_money(api: DaprApi) -> None:
    await api.top_up("dapr-poor", 1_000)
    order_id = await api.place_ok("dapr-poor", order_body())
    order = await api.wait_status(order_id, "CANCELLED", timeout=30)
    assert order["cancel_reason"] == "PAYMENT_FAILED"
    payment = await api.payment(order_id)
    assert payment is not None and payment["status"] == "FAILED"
    assert await api.balance("dapr-poor") == 1_000


async def test_owner_rejects_and_the_customer_is_refunded(api: DaprApi) -> None:
    await api.top_up("dapr-hye", 100_000)
    body = order_body("hanok-bibimbap", [("bibimbap", 1, 9000)], fee=2500)
    order_id = await api.place_ok("dapr-hye", body)
    await api.wait_status(order_id, "PAID", timeout=30)
    response = await api.owner_decide("hanok-bibimbap", order_id, "reject", "owner-lee", json={"reason": "busy"})
    assert response.status_code == 202, response.text
    order = await api.wait_status(order_id, "CANCELLED", timeout=30)
    assert order["cancel_reason"] == "REJECTED"
    payment = await api.payment(order_id)
    assert payment is not None and payment["status"] == "REFUNDED"
    assert await api.balance("dapr-hye") == 100_000


async def test_a_card_order_is_charged_through_the_paygate_binding(api: DaprApi) -> None:
    body = order_body() | {"payment": {"method": "card", "card_token": "tok_visa"}}
    order_id = await api.place_ok("dapr-card", body)
    await api.wait_status(order_id, "ACCEPTED", timeout=30)
    payment = await api.payment(order_id)
    assert payment is not None and payment["method"] == "card" and payment["status"] == "COMPLETED"
    calls = [c for c in api.cluster.fake.binding_calls if c[0] == "paygate"]
    assert any(c[2].get("path") == "/charges" and order_id.encode() in c[3] for c in calls)


def test_the_data_stays_where_it_belongs(cluster: DaprCluster) -> None:
    """Each service wrote only its own state store; only events of ours went onto the topics."""
    assert set(cluster.fake.stores) <= {f"{s}-state" for s in SERVICES}
    for _, topic, event in cluster.fake.published:
        assert str(event.get("type", "")).startswith("io.baedal."), (topic, event)


async def test_the_gateway_routes_by_the_table_and_answers_problems(api: DaprApi) -> None:
    catalog = await api.client.get("/restaurants")
    assert catalog.status_code == 200 and "seoul-chicken" in {r["id"] for r in catalog.json()}
    missing = await api.client.get("/no-such-route")
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    unauthenticated = await api.client.get("/orders")
    assert unauthenticated.status_code == 401, "the service's own answer comes back through Dapr"


async def test_the_operator_publishes_a_restaurant_through_its_own_sidecar(
    api: DaprApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Restaurant operator in the cluster (runtime dapr): its catalog snapshot goes onto the
    restaurant stream through the operator pod's sidecar and reaches the order service's menu."""
    sidecar = api.cluster.fake.sidecars.get("operator") or api.cluster.fake.add_app("operator", free_port())
    monkeypatch.setattr(dapr_settings, "DAPR_GRPC_PORT", sidecar.grpc_port)
    monkeypatch.setattr(dapr_settings, "DAPR_HTTP_PORT", sidecar.http_port)
    publisher = catalog_publisher(OperatorConfig(runtime="dapr"))
    manifest = yaml.safe_load((EXAMPLES / "seoul-chicken.yaml").read_text())
    manifest["metadata"]["name"] = "dapr-dakgalbi"
    resource = RestaurantResource.model_validate(manifest)
    await reconcile(resource, "uid-dapr-1", 1, publisher.publish, "operator")
    for _ in range(200):
        menu = await api.client.get("/restaurants/dapr-dakgalbi/menu")
        if menu.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert menu.status_code == 200, menu.text
    await reconcile_removal("dapr-dakgalbi", "uid-dapr-1", 1, publisher.publish, "operator")
    for _ in range(200):
        if (await api.client.get("/restaurants/dapr-dakgalbi/menu")).status_code == 404:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the removal never reached the menu read store")
