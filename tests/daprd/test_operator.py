"""The Restaurant operator in the cluster's shape: ``baedal operator`` as its own process (runtime
dapr) behind its own daprd, watching a Kubernetes API (the emulator the operator tests use, served
from this process). ``kubectl apply`` of a Restaurant reaches the order service's menu through the
operator's sidecar and the restaurant stream; ``kubectl delete`` takes it off."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.restaurant_operator import crd
from services.restaurant_operator.status import synced_condition
from tests.daprd.conftest import Background, DaprdApi, wait_menu
from tests.operator.test_operator import _kubeconfig
from tests.support.daprd import DaprdCluster, Proc, wait_for
from tests.support.kube_emulator import KubeEmulator, kube_cluster
from tests.support.manifests import manifest
from tests.support.platform import eventually
from tests.support.server import free_port

NAMESPACE = "default"
PATH = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{NAMESPACE}/{crd.PLURAL}"


@pytest.fixture(scope="module")
def kube(background: Background) -> Iterator[KubeEmulator]:
    context = kube_cluster()
    emulator: KubeEmulator = background.run(context.__aenter__())
    try:
        yield emulator
    finally:
        background.run(context.__aexit__(None, None, None))


@pytest.fixture(scope="module")
def operator(daprd_cluster: DaprdCluster, kube: KubeEmulator) -> Iterator[tuple[Proc, KubeEmulator]]:
    """``baedal operator`` with the operator's sidecar; up once it watches Restaurants."""
    base = daprd_cluster.base
    kubeconfig = _kubeconfig(base / "kubeconfig", str(kube.url).rstrip("/"))
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    env = daprd_cluster.app_env("operator", daprd_cluster.apps["operator"].ports) | {"KUBECONFIG": str(kubeconfig)}
    command = [sys.executable, "-m", "services", "operator", "-n", NAMESPACE, "--liveness", liveness]
    process = Proc("operator", command, env, daprd_cluster.logs / "operator.log")
    opened = kube.watches_opened[crd.PLURAL]
    process.start()
    try:

        def watching() -> bool:
            assert process.alive, process.log()
            return kube.watches_opened[crd.PLURAL] > opened

        wait_for(watching, 60, "the operator watching Restaurants")
        assert httpx.get(liveness, timeout=5).status_code == 200
        yield process, kube
    finally:
        process.terminate()
        code = process.wait(30)
    assert code == 0, process.log()


async def restaurant(kube: KubeEmulator, name: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=str(kube.url).rstrip("/")) as client:
        response = await client.get(f"{PATH}/{name}")
    return dict(response.json()) if response.status_code == 200 else None


async def test_kubectl_apply_reaches_the_menu_through_the_operators_sidecar(
    api: DaprdApi, operator: tuple[Proc, KubeEmulator]
) -> None:
    _, kube = operator
    name = "daprd-k8s-dakgalbi"
    document = manifest(name, menu=[{"id": "dakgalbi", "name": "닭갈비", "price": 14000, "available": True}])
    async with httpx.AsyncClient(base_url=str(kube.url).rstrip("/")) as client:
        created = await client.post(PATH, json=document)
        assert created.status_code < 300, created.text

    await wait_menu(api, name)
    menu = (await api.client.get(f"/restaurants/{name}/menu")).json()
    assert [item["id"] for item in menu["items"]] == ["dakgalbi"]

    async def synced() -> bool:
        found = await restaurant(kube, name)
        condition = synced_condition((found or {}).get("status")) or {}
        return condition.get("status") == "True"

    await eventually(synced, timeout=30, what="the Restaurant's status saying Synced")

    async with httpx.AsyncClient(base_url=str(kube.url).rstrip("/")) as client:
        deleted = await client.delete(f"{PATH}/{name}")
        assert deleted.status_code < 300, deleted.text
    await wait_menu(api, name, present=False)

    async def gone() -> bool:  # the finalizer let it go once the removal was published
        return await restaurant(kube, name) is None

    await eventually(gone, timeout=30, what="the Restaurant deleted after its removal was published")


def test_the_operators_sidecar_sees_only_the_pub_sub(daprd_cluster: DaprdCluster) -> None:
    """Scopes hold on daprd: the operator's sidecar loads the pub/sub and nothing else."""
    metadata = httpx.get(f"{daprd_cluster.sidecar_url('operator')}/v1.0/metadata", timeout=5).json()
    assert {c["name"] for c in metadata["components"]} == {"pubsub"}
