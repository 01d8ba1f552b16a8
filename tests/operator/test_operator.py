"""The Restaurant operator end to end: the real kopf operator (this repository's handlers) against a
Kubernetes API emulator, publishing through the embedded adapter to a real ``baedal up`` process.

What a platform engineer sees: ``kubectl apply`` puts a restaurant on the menu and its status says
Synced; a price change reaches the read store; ``kubectl delete`` takes it off the menu before the
resource goes; an outage shows as Synced=False and heals; a restarted operator changes nothing; a
manifest the schema lets through but the catalog cannot take is reported, not published."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.catalog.manifest import RestaurantResource, load_manifests
from services.catalog.reconcile import snapshot_event
from services.entrypoints.bootstrap import catalog_publisher
from services.restaurant_operator import crd
from services.restaurant_operator.config import OperatorConfig
from services.restaurant_operator.handlers import FINALIZER, SOURCE, OperatorContext
from services.restaurant_operator.publisher import CatalogPublisher, PublishError, PublishRejected
from services.restaurant_operator.status import synced_condition
from services.runtime.auth import Role, TokenIssuer, load_or_create_secret
from services.runtime.embedded.catalog_publisher import EmbeddedCatalogPublisher
from services.runtime.events import OutboundEvent, new_id
from services.topics import CATALOG_DELETED
from tests.support import EXAMPLES
from tests.support.kube_emulator import KubeEmulator, OperatorThread, kube_cluster
from tests.support.manifests import manifest
from tests.support.platform import eventually
from tests.support.server import Server, clean_env, free_port, running

pytestmark = pytest.mark.slow

NAMESPACE = "default"
WAIT_S = 60.0


class RecordingPublisher:
    """The real adapter, remembering what it published (what the platform acknowledged)."""

    def __init__(self, inner: CatalogPublisher) -> None:
        self.inner = inner
        self.events: list[OutboundEvent] = []

    def check(self) -> None:
        self.inner.check()

    async def publish(self, event: OutboundEvent) -> None:
        await self.inner.publish(event)
        self.events.append(event)

    def about(self, name: str) -> list[OutboundEvent]:
        return [event for event in self.events if event.subject == name]


class Kubectl:
    """Just enough of kubectl, against the emulator's HTTP API."""

    def __init__(self, emulator: KubeEmulator) -> None:
        self.emulator = emulator

    @staticmethod
    def path(name: str = "") -> str:
        return f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{NAMESPACE}/{crd.PLURAL}/{name}".rstrip("/")

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.emulator.request(method, path, **kwargs) as response:
            return response.status, await response.json(content_type=None)

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        status, body = await self._call("POST", self.path(), json=document)
        assert status < 300, body
        return dict(body)

    async def patch(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        status, body = await self._call("PATCH", self.path(name), data=json.dumps(changes), headers=headers)
        assert status < 300, body
        return dict(body)

    async def delete(self, name: str) -> None:
        status, body = await self._call("DELETE", self.path(name))
        assert status < 300, body

    async def get(self, name: str) -> dict[str, Any] | None:
        status, body = await self._call("GET", self.path(name))
        return dict(body) if status == 200 else None

    async def wait(self, name: str, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        async def holds() -> bool:
            seen["object"] = await self.get(name)
            return seen["object"] is not None and condition(seen["object"])

        await eventually(holds, WAIT_S, f"{name}: {what} (last seen: {seen.get('object', {}).get('status')})")
        return dict(seen["object"])

    async def wait_synced(self, name: str, state: str = "True", reason: str | None = None) -> dict[str, Any]:
        def synced(obj: dict[str, Any]) -> bool:
            condition = synced_condition(obj.get("status")) or {}
            current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
            return current and condition.get("status") == state and reason in (None, condition.get("reason"))

        return await self.wait(name, synced, f"Synced={state} {reason or ''}")

    def event_reasons(self, name: str) -> list[str]:
        return [event["reason"] for event in self.emulator.events_for(name)]


class Platform:
    """The running ``baedal up``, as a client sees it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        token = TokenIssuer(load_or_create_secret(server.data_dir)).issue(Role.ADMIN, "test-admin")
        self.client = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    async def menu(self, name: str) -> dict[str, Any] | None:
        response = await self.client.get(f"/restaurants/{name}/menu")
        return dict(response.json()) if response.status_code == 200 else None

    async def wait_menu(self, name: str, check: Callable[[dict[str, Any] | None], bool], what: str) -> None:
        async def holds() -> bool:
            return check(await self.menu(name))

        await eventually(holds, WAIT_S, f"{name}: {what}")

    async def settle(self) -> None:
        async def settled() -> bool:
            return bool((await self.client.get("/admin/backlog")).json()["settled"])

        await eventually(settled, WAIT_S, "the platform settling")

    async def handled(self, consumer: str, outcome: str) -> float:
        text = (await self.client.get("/metrics")).text
        labels = {"service": "order", "consumer": consumer, "outcome": outcome}
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "baedal_events_handled_total" and labels.items() <= sample.labels.items()
        )

    async def outage(self) -> None:
        await asyncio.to_thread(self.server.stop)  # in a thread: the emulator shares this loop

    async def recover(self) -> None:
        await asyncio.to_thread(self.server.start)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("operator")
    with running(Server(base / "data", clean_env(BAEDAL_DEMO_MANIFESTS=str(EXAMPLES)))) as server:
        yield server


@pytest.fixture
async def platform(server: Server) -> AsyncIterator[Platform]:
    if server.process is None or server.process.poll() is not None:
        await asyncio.to_thread(server.start)  # a previous test's outage must not leak
    platform = Platform(server)
    yield platform
    await platform.client.aclose()


@pytest.fixture
def publisher(server: Server) -> RecordingPublisher:
    config = OperatorConfig(url=server.url, data_dir=server.data_dir)
    return RecordingPublisher(catalog_publisher(config))


@pytest.fixture
async def cluster() -> AsyncIterator[KubeEmulator]:
    async with kube_cluster() as emulator:
        yield emulator


@pytest.fixture
def kubectl(cluster: KubeEmulator) -> Kubectl:
    return Kubectl(cluster)


StartOperator = Callable[[], Awaitable[OperatorThread]]


@pytest.fixture
async def start_operator(
    cluster: KubeEmulator, publisher: RecordingPublisher, server: Server
) -> AsyncIterator[StartOperator]:
    """Start an operator (again), with quick retries; every one started is stopped at the end."""
    config = OperatorConfig(url=server.url, data_dir=server.data_dir, retry_base_s=0.2, retry_cap_s=1.0)
    started: list[OperatorThread] = []

    async def start() -> OperatorThread:
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        operator = OperatorThread(cluster, OperatorContext(config, publisher), liveness)
        started.append(operator)
        await operator.start()
        return operator

    yield start
    for operator in started:
        await operator.stop()


@pytest.fixture
async def operator(start_operator: StartOperator) -> OperatorThread:
    return await start_operator()


def example(name: str, as_name: str) -> dict[str, Any]:
    document = next(m for m in load_manifests(EXAMPLES) if m["metadata"]["name"] == name)
    document["metadata"]["name"] = as_name
    return document


def printer_columns(obj: dict[str, Any]) -> dict[str, Any]:
    """What ``kubectl get rst`` shows: the CRD's printer columns evaluated on the object."""
    columns = crd.served_version(crd.load_crd())["additionalPrinterColumns"]
    return {column["name"]: _json_path(obj, column["jsonPath"]) for column in columns}


def _json_path(obj: Any, path: str) -> Any:
    """The JSONPath subset printer columns use: ``.a.b`` and ``.a[?(@.k=="v")].b``."""
    value = obj
    for field, key, wanted in re.findall(r'\.(\w+)(?:\[\?\(@\.(\w+)=="([^"]*)"\)\])?', path):
        value = (value or {}).get(field)
        if key:
            value = next((item for item in value or () if item.get(key) == wanted), None)
    return value


async def test_a_restaurant_applied_is_on_the_menu_and_reported_synced(
    operator: OperatorThread, kubectl: Kubectl, platform: Platform, publisher: RecordingPublisher
) -> None:
    document = example("seoul-chicken", "k8s-chicken")
    await kubectl.create(document)
    obj = await kubectl.wait_synced("k8s-chicken")

    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert obj["status"]["syncedAt"]
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert printer_columns(obj) == {
        "Open": True,
        "Items": 11,
        "Synced": "True",
        "Reason": "Published",
        "Age": obj["metadata"]["creationTimestamp"],
    }
    await platform.wait_menu("k8s-chicken", lambda menu: menu is not None, "on the menu")
    menu = await platform.menu("k8s-chicken")
    assert menu is not None and menu["restaurant"]["display_name"] == "서울치킨"
    assert [(i["id"], i["price"]) for i in menu["items"]] == [(i["id"], i["price"]) for i in document["spec"]["menu"]]
    [event] = publisher.about("k8s-chicken")
    assert event.data["uid"] == obj["metadata"]["uid"] and event.data["generation"] == 1
    assert "Published" in kubectl.event_reasons("k8s-chicken")

    assert operator.liveness is not None
    async with httpx.AsyncClient() as client:
        probe = await client.get(operator.liveness)
    assert probe.status_code == 200 and probe.json()["catalog"]["lastPublishedAt"], probe.text


async def test_a_price_change_reaches_the_read_store_and_a_stale_event_cannot_undo_it(
    operator: OperatorThread, kubectl: Kubectl, platform: Platform, publisher: RecordingPublisher
) -> None:
    document = manifest("k8s-noodles")
    await kubectl.create(document)
    first = await kubectl.wait_synced("k8s-noodles")

    await kubectl.patch("k8s-noodles", {"spec": {"menu": [{"id": "noodles", "name": "국수", "price": 8000}]}})
    obj = await kubectl.wait(
        "k8s-noodles", lambda o: o.get("status", {}).get("observedGeneration") == 2, "generation 2 observed"
    )
    assert obj["metadata"]["generation"] == 2 and synced_condition(obj["status"]) is not None
    await platform.wait_menu("k8s-noodles", lambda m: m is not None and m["items"][0]["price"] == 8000, "8000 won")

    # Generation 1 again, as a late retry would deliver it (a new id: past the inbox, to the guard).
    stale = snapshot_event(RestaurantResource.model_validate(document), first["metadata"]["uid"], 1, SOURCE)
    await publisher.inner.publish(dataclasses.replace(stale, id=new_id()))
    await platform.settle()
    menu = await platform.menu("k8s-noodles")
    assert menu is not None and menu["items"][0]["price"] == 8000
    assert [e.data["generation"] for e in publisher.about("k8s-noodles")] == [1, 2]


async def test_a_deleted_restaurant_leaves_the_catalog_before_the_resource_goes(
    operator: OperatorThread, kubectl: Kubectl, cluster: KubeEmulator, platform: Platform, publisher: RecordingPublisher
) -> None:
    await kubectl.create(manifest("k8s-gone"))
    obj = await kubectl.wait_synced("k8s-gone")
    await platform.wait_menu("k8s-gone", lambda menu: menu is not None, "on the menu")

    await kubectl.delete("k8s-gone")
    await platform.wait_menu("k8s-gone", lambda menu: menu is None, "off the menu")
    await eventually(lambda: _absent(kubectl, "k8s-gone"), WAIT_S, "the resource gone")

    [removal] = [e for e in publisher.about("k8s-gone") if e.topic == CATALOG_DELETED]
    assert removal.data["uid"] == obj["metadata"]["uid"]
    key = (kmock.resource(group=crd.GROUP, version=crd.VERSION, plural=crd.PLURAL), NAMESPACE, "k8s-gone")
    deleting = [v for v in cluster.objects[key].history if v is not None and v["metadata"].get("deletionTimestamp")]
    assert FINALIZER in deleting[0]["metadata"]["finalizers"], "the finalizer held the resource back"

    async def removal_reported() -> bool:  # kopf posts its events from a queue of its own
        return "Removed" in kubectl.event_reasons("k8s-gone")

    await eventually(removal_reported, WAIT_S, "the Removed event")


async def _absent(kubectl: Kubectl, name: str) -> bool:
    return await kubectl.get(name) is None


async def test_an_outage_shows_as_not_synced_and_heals(
    operator: OperatorThread, kubectl: Kubectl, platform: Platform
) -> None:
    await platform.outage()
    try:
        await kubectl.create(manifest("k8s-outage"))
        obj = await kubectl.wait_synced("k8s-outage", "False", "PublishFailed")
        assert "unreachable" in (synced_condition(obj["status"]) or {})["message"]
        assert "PublishFailed" in kubectl.event_reasons("k8s-outage")
    finally:
        await platform.recover()
    await kubectl.wait_synced("k8s-outage", "True", "Published")
    await platform.wait_menu("k8s-outage", lambda menu: menu is not None, "on the menu after the outage")

    # A removal that cannot be published keeps the resource (the finalizer) until it can.
    await platform.outage()
    try:
        await kubectl.delete("k8s-outage")
        obj = await kubectl.wait_synced("k8s-outage", "False", "RemovalFailed")
        assert obj["metadata"]["deletionTimestamp"] and FINALIZER in obj["metadata"]["finalizers"]
    finally:
        await platform.recover()
    await eventually(lambda: _absent(kubectl, "k8s-outage"), WAIT_S, "the resource gone after the outage")
    assert await platform.menu("k8s-outage") is None


async def test_a_restarted_operator_changes_nothing_and_catches_up_on_changes(
    operator: OperatorThread,
    start_operator: StartOperator,
    kubectl: Kubectl,
    platform: Platform,
    publisher: RecordingPublisher,
) -> None:
    await kubectl.create(manifest("k8s-restart"))
    before = await kubectl.wait_synced("k8s-restart")
    await platform.wait_menu("k8s-restart", lambda menu: menu is not None, "on the menu")
    await platform.settle()
    applied = await platform.handled("order-menu-upserted", "success")

    await operator.stop()
    second = await start_operator()
    await eventually(
        lambda: _has_event(kubectl, "k8s-restart", "UpToDate"), WAIT_S, "the resumed restaurant found up to date"
    )
    assert (await kubectl.get("k8s-restart") or {})["status"] == before["status"], "status untouched"
    assert len(publisher.about("k8s-restart")) == 1, "nothing published again"
    await platform.settle()
    assert await platform.handled("order-menu-upserted", "success") == applied

    # A change made while no operator runs is published by the next one.
    await second.stop()
    await kubectl.patch("k8s-restart", {"spec": {"open": False}})
    await start_operator()
    after = await kubectl.wait(
        "k8s-restart", lambda o: o.get("status", {}).get("observedGeneration") == 2, "generation 2 observed"
    )
    assert (synced_condition(after["status"]) or {})["status"] == "True"
    await platform.wait_menu("k8s-restart", lambda m: m is not None and not m["restaurant"]["open"], "closed")


async def _has_event(kubectl: Kubectl, name: str, reason: str) -> bool:
    return reason in kubectl.event_reasons(name)


async def test_a_resync_publishes_the_same_event_again_which_the_platform_drops(
    operator: OperatorThread, kubectl: Kubectl, platform: Platform, publisher: RecordingPublisher
) -> None:
    """``kubectl annotate rst NAME baedal.io/resync=...``: same generation, same event id."""
    await kubectl.create(manifest("k8s-resync"))
    await kubectl.wait_synced("k8s-resync")
    await platform.settle()
    duplicates = await platform.handled("order-menu-upserted", "duplicate")

    await kubectl.patch("k8s-resync", {"metadata": {"annotations": {"baedal.io/resync": "1"}}})
    await eventually(lambda: _published_times(publisher, "k8s-resync", 2), WAIT_S, "the resync published")
    first, again = publisher.about("k8s-resync")
    assert (again.id, again.data) == (first.id, first.data)
    await platform.settle()
    assert await platform.handled("order-menu-upserted", "duplicate") == duplicates + 1


async def _published_times(publisher: RecordingPublisher, name: str, times: int) -> bool:
    return len(publisher.about(name)) == times


async def test_duplicate_menu_ids_are_reported_and_nothing_is_published(
    operator: OperatorThread, kubectl: Kubectl, platform: Platform, publisher: RecordingPublisher
) -> None:
    """The API server enforces unique ids through the schema; the operator does not rely on it."""
    twice = [{"id": "mandu", "name": "만두", "price": 5000}, {"id": "mandu", "name": "왕만두", "price": 7000}]
    await kubectl.create(manifest("k8s-twice", menu=twice))
    obj = await kubectl.wait_synced("k8s-twice", "False", "InvalidSpec")
    assert "duplicate menu ids: mandu" in (synced_condition(obj["status"]) or {})["message"]
    assert "InvalidSpec" in kubectl.event_reasons("k8s-twice")
    await platform.settle()
    assert publisher.about("k8s-twice") == [] and await platform.menu("k8s-twice") is None

    fixed = copy.deepcopy(twice)
    fixed[1]["id"] = "wang-mandu"
    await kubectl.patch("k8s-twice", {"spec": {"menu": fixed}})
    await kubectl.wait_synced("k8s-twice", "True", "Published")
    await platform.wait_menu("k8s-twice", lambda m: m is not None and len(m["items"]) == 2, "both dumplings")


async def test_the_embedded_adapter_tells_a_refusal_from_an_outage(server: Server, platform: Platform) -> None:
    """A refusal (422) is final: retrying cannot help. Anything else is worth retrying."""
    good = catalog_publisher(OperatorConfig(url=server.url, data_dir=server.data_dir))
    with pytest.raises(PublishRejected, match="not a catalog topic"):
        await good.publish(OutboundEvent(topic="order.placed", data={}, source=SOURCE))
    forged = EmbeddedCatalogPublisher(server.url, lambda: "not-a-token")
    event = snapshot_event(RestaurantResource.model_validate(manifest("k8s-forged")), str(uuid.uuid4()), 1, SOURCE)
    with pytest.raises(PublishError, match="401") as refused:
        await forged.publish(event)
    assert not isinstance(refused.value, PublishRejected)
    nowhere = EmbeddedCatalogPublisher(f"http://127.0.0.1:{free_port()}", lambda: "unused")
    with pytest.raises(PublishError, match="unreachable"):
        await nowhere.publish(event)
    await platform.settle()
    assert await platform.menu("k8s-forged") is None


def _kubeconfig(path: Path, server: str) -> Path:
    """What ``kind`` or a cloud CLI leaves behind, pointing at the emulator."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(how: str, server: Server, liveness: str) -> tuple[list[str], dict[str, str]]:
    if how == "baedal operator":
        args = ["operator", "-n", NAMESPACE, "--url", server.url, "--data-dir", str(server.data_dir)]
        return [sys.executable, "-m", "services", *args, "--liveness", liveness], {}
    kopf = ["run", "-m", "services.restaurant_operator.handlers", "--standalone", "-n", NAMESPACE, "-L", liveness]
    env = {"BAEDAL_OPERATOR_URL": server.url, "BAEDAL_DATA_DIR": str(server.data_dir)}
    return [sys.executable, "-m", "kopf", *kopf], env


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.terminate()  # kopf stops gracefully on SIGTERM
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


@pytest.mark.parametrize("how", ["baedal operator", "kopf run"])
async def test_the_operator_runs_as_documented(
    how: str, cluster: KubeEmulator, kubectl: Kubectl, platform: Platform, server: Server, tmp_path: Path
) -> None:
    """``baedal operator`` and ``kopf run`` as processes, logged in by a kubeconfig file."""
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    command, settings = _launch(how, server, liveness)
    env = clean_env(KUBECONFIG=str(_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))), **settings)
    opened = cluster.watches_opened[crd.PLURAL]
    process = _spawn(command, env, tmp_path / "operator.log")
    try:

        async def watching() -> bool:
            assert process.poll() is None, (tmp_path / "operator.log").read_text()
            return cluster.watches_opened[crd.PLURAL] > opened

        await eventually(watching, WAIT_S, f"{how} watching Restaurants")
        name = f"k8s-{how.split()[0]}"
        await kubectl.create(manifest(name))
        await kubectl.wait_synced(name)
        await platform.wait_menu(name, lambda menu: menu is not None, "on the menu")
        async with httpx.AsyncClient() as client:
            assert (await client.get(liveness)).status_code == 200
    finally:
        exit_code = await asyncio.to_thread(_stop, process)
    assert exit_code == 0, (tmp_path / "operator.log").read_text()
