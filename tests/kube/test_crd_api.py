"""The chart's Restaurant CRD on a real kube-apiserver: it installs, the demo restaurants go in and
read back as ``kubectl get rst`` shows them, and every bad manifest of the unit tests is refused by
the API server itself (its schema: 422 Unprocessable Entity), as ``kubectl apply`` sends it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from kubernetes import client

from services.catalog.manifest import load_manifests
from services.restaurant_operator import crd
from tests.support import EXAMPLES
from tests.support.kube_apiserver import ControlPlane, as_dict
from tests.support.manifests import BAD_MANIFESTS

# Refused before the schema is looked at (400 Bad Request): what does not decode as a Restaurant of
# this version, and an unknown field under strict field validation ("strict decoding error").
NOT_DECODED = {"wrong-api-version": 400, "empty-object": 400, "array": 400, "unknown-spec-field": 400}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.fixture
def namespace(admin: client.ApiClient) -> str:
    """A namespace of this test's own (never deleted: without a controller-manager it would not empty)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _create(admin: client.ApiClient, namespace: str, document: Any) -> dict[str, Any]:
    """``kubectl create -f``: strict field validation, as kubectl sends it."""
    return as_dict(
        client.CustomObjectsApi(admin).create_namespaced_custom_object(
            crd.GROUP, crd.VERSION, namespace, crd.PLURAL, document, field_validation="Strict"
        )
    )


def _get(kube: ControlPlane, path: str, accept: str = "application/json") -> dict[str, Any]:
    """A GET as kubectl makes it (its Accept header), as the admin."""
    headers = {"Authorization": f"Bearer {kube.token}", "Accept": accept}
    response = httpx.get(f"{kube.url}{path}", headers=headers, verify=str(kube.ca_path), timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_the_demo_restaurants_go_in_and_read_back_as_kubectl_get_shows_them(
    kube: ControlPlane, admin: client.ApiClient, restaurant_crd: dict[str, Any], namespace: str
) -> None:
    examples = load_manifests(EXAMPLES)
    for document in examples:
        created = _create(admin, namespace, document)
        assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
        assert created["spec"] == document["spec"], "nothing pruned or defaulted away"

    listed = as_dict(
        client.CustomObjectsApi(admin).list_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL)
    )
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == sorted(
        d["metadata"]["name"] for d in examples
    )

    # `kubectl get rst`: the server renders the printer columns (a Table) for the short name's resource.
    table = _get(kube, f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}", TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Open", "Items", "Synced", "Reason", "Age"]
    rows = {row["cells"][0]: row["cells"] for row in table["rows"]}
    for document in examples:
        open_, items, synced = rows[document["metadata"]["name"]][1:4]
        assert open_ == document["spec"]["open"]
        assert (items, synced) == (None, None), "the operator's status is not there yet"
    resources = _get(kube, f"/apis/{crd.GROUP}/{crd.VERSION}")
    (restaurants,) = [r for r in resources["resources"] if r["name"] == crd.PLURAL]
    assert restaurants["shortNames"] == ["rst"] and restaurants["namespaced"] is True


@pytest.mark.parametrize("document", BAD_MANIFESTS)
def test_a_bad_manifest_is_refused_by_the_api_server(
    kube: ControlPlane,
    admin: client.ApiClient,
    restaurant_crd: dict[str, Any],
    namespace: str,
    document: Any,
    request: pytest.FixtureRequest,
) -> None:
    """Posted as ``kubectl create -f`` posts it (strict field validation): the server's schema
    refuses it with 422, except what it cannot even decode as a Restaurant (400)."""
    case = request.node.callspec.id
    path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}"
    headers = {"Authorization": f"Bearer {kube.token}"}
    response = httpx.post(
        f"{kube.url}{path}",
        params={"fieldValidation": "Strict"},
        json=document,
        headers=headers,
        verify=str(kube.ca_path),
        timeout=10,
    )
    answer = response.json()
    assert (response.status_code, answer["kind"], answer["status"]) == (
        NOT_DECODED.get(case, 422),
        "Status",
        "Failure",
    ), answer.get("message")
    listed = as_dict(
        client.CustomObjectsApi(admin).list_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL)
    )
    assert listed["items"] == [], "nothing was stored"
