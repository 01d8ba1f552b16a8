"""The Helm chart against a real kube-apiserver: for every value set of the chart tests, every
rendered manifest passes a server-side dry-run apply (``kubectl apply --server-side --dry-run=server``),
with the Restaurant CRD from the chart and Dapr's and KEDA's CRDs from their Go modules (downloaded
at test time by tests/support/chart.py, never copied into the repository)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from tests.support import chart
from tests.support.kube_apiserver import ControlPlane, body

ESTABLISHED_S = 60.0


def _crd_files() -> list[Path]:
    dapr = chart.go_module("github.com/dapr/dapr", chart.dapr_version()) / "charts" / "dapr" / "crds"
    keda = chart.go_module("github.com/kedacore/keda/v2", chart.keda_version()) / "config" / "crd" / "bases"
    return sorted(dapr.glob("*.yaml")) + sorted(keda.glob("keda.sh_*.yaml"))


@pytest.fixture(scope="module")
def third_party_crds(admin: client.ApiClient, restaurant_crd: dict[str, Any]) -> list[str]:
    """Dapr's and KEDA's CRDs installed (their Go modules' files) and Established."""
    extensions = client.ApiextensionsV1Api(admin)
    names = []
    for path in _crd_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "CustomResourceDefinition":
                extensions.create_custom_resource_definition(body(document))
                names.append(document["metadata"]["name"])
    deadline = time.monotonic() + ESTABLISHED_S
    for name in names:
        while True:
            status = extensions.read_custom_resource_definition(name).status
            if any(c.type == "Established" and c.status == "True" for c in (status and status.conditions) or []):
                break
            assert time.monotonic() < deadline, f"{name} was not Established within {ESTABLISHED_S:g} s"
            time.sleep(0.2)
    return names


class Applier:
    """``kubectl apply --server-side --dry-run=server`` of one object, as the admin."""

    def __init__(self, kube: ControlPlane) -> None:
        self.kube = kube
        self.headers = {"Authorization": f"Bearer {kube.token}"}
        self.discovered: dict[str, dict[str, tuple[str, bool]]] = {}

    def _get(self, path: str) -> Any:
        response = httpx.get(f"{self.kube.url}{path}", headers=self.headers, verify=str(self.kube.ca_path), timeout=10)
        response.raise_for_status()
        return response.json()

    def resource(self, api_version: str) -> dict[str, tuple[str, bool]]:
        """kind -> (plural, namespaced) of an API group version (discovery)."""
        if api_version not in self.discovered:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            self.discovered[api_version] = {
                r["kind"]: (r["name"], r["namespaced"]) for r in self._get(base)["resources"] if "/" not in r["name"]
            }
        return self.discovered[api_version]

    def dry_run(self, document: dict[str, Any], namespace: str, dry: bool = True) -> httpx.Response:
        api_version, kind, name = document["apiVersion"], document["kind"], document["metadata"]["name"]
        plural, namespaced = self.resource(api_version)[kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        where = f"/namespaces/{document['metadata'].get('namespace', namespace)}" if namespaced else ""
        return httpx.patch(
            f"{self.kube.url}{base}{where}/{plural}/{name}",
            params={"fieldManager": "helm", "fieldValidation": "Strict", "force": "true"}
            | ({"dryRun": "All"} if dry else {}),
            content=yaml.safe_dump(document).encode(),
            headers={**self.headers, "Content-Type": "application/apply-patch+yaml"},
            verify=str(self.kube.ca_path),
            timeout=30,
        )


@pytest.fixture(scope="module")
def applier(kube: ControlPlane, admin: client.ApiClient, third_party_crds: list[str]) -> Applier:
    core = client.CoreV1Api(admin)
    for namespace in (chart.NAMESPACE, "food-staging"):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    return Applier(kube)


@pytest.mark.parametrize("value_set", sorted(chart.VALUE_SETS))
def test_every_rendered_manifest_passes_a_server_side_dry_run(applier: Applier, value_set: str) -> None:
    documents = chart.objects(value_set)
    assert documents, "the chart rendered nothing"
    # The ServiceAccounts for real: a dry-run creates nothing, and the ServiceAccount admission
    # plugin refuses a Pod (the chart's `helm test` Pod) whose account does not exist.
    for account in [d for d in documents if d["kind"] == "ServiceAccount"]:
        assert applier.dry_run(account, chart.NAMESPACE, dry=False).status_code < 300
    refused = {}
    for document in documents:
        response = applier.dry_run(document, chart.NAMESPACE)
        if response.status_code >= 300:
            refused[f"{document['kind']}/{document['metadata']['name']}"] = response.json().get("message")
    assert not refused, refused


def test_the_dry_run_is_no_rubber_stamp(applier: Applier) -> None:
    """What the server would refuse, it refuses in a dry run too: a typo'd field of a Deployment
    (server-side apply answers that with a 500, "field not declared in schema"), a ScaledObject
    without its target (KEDA's schema: 422)."""
    documents = chart.objects("keda")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    deployment["spec"]["replica"] = 2
    scaled = next(d for d in documents if d["kind"] == "ScaledObject")
    del scaled["spec"]["scaleTargetRef"]
    typo = applier.dry_run(deployment, chart.NAMESPACE)
    assert (typo.status_code, "field not declared in schema" in typo.text) == (500, True), typo.text
    untargeted = applier.dry_run(scaled, chart.NAMESPACE)
    assert untargeted.status_code == 422 and "scaleTargetRef" in untargeted.text, untargeted.text
