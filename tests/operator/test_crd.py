"""The Restaurant CRD: a valid Kubernetes object, and a schema that agrees with the platform's own
manifest model (every example passes both, every bad manifest fails both)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from jsonschema.protocols import Validator
from pydantic import ValidationError

from services.catalog.manifest import RestaurantResource, load_manifests
from services.restaurant_operator import crd
from services.restaurant_operator.status import not_synced, published
from services.runtime.settings import REPO_ROOT
from tests.support import EXAMPLES
from tests.support.manifests import BAD_MANIFESTS, manifest

KUBERNETES_VERSION = "1.30"
# Refused by the API server's routing (which kind, which version), not by the schema.
ROUTING_ONLY = {"wrong-kind", "wrong-api-version"}


def _unique_keys(validator: Validator, keys: list[str], instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """``x-kubernetes-list-map-keys``: the API server refuses two items with the same keys."""
    if not validator.is_type(instance, "array"):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entries for {dict(zip(keys, key, strict=True))}")
        seen.add(key)


# OpenAPI v3 schemas of CRDs follow draft 4 (boolean exclusiveMinimum, 1.0 is no integer).
StructuralValidator: type[Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # untyped in the stubs
    jsonschema.Draft4Validator, {"x-kubernetes-list-map-keys": _unique_keys}
)


def _closed(schema: dict[str, Any], name: str = "") -> dict[str, Any]:
    """The schema as ``kubectl apply`` (strict field validation) uses it: an unknown field is an
    error, except in ``metadata``, which the API server checks itself."""
    result = copy.deepcopy(schema)
    if "properties" in result:
        result["properties"] = {key: _closed(value, key) for key, value in result["properties"].items()}
        if name != "metadata" and not result.get("x-kubernetes-preserve-unknown-fields"):
            result.setdefault("additionalProperties", False)
    if isinstance(result.get("items"), dict):
        result["items"] = _closed(result["items"])
    return result


@pytest.fixture(scope="module")
def schema_validator() -> Validator:
    schema = _closed(crd.served_version(crd.load_crd())["schema"]["openAPIV3Schema"])
    StructuralValidator.check_schema(schema)
    return StructuralValidator(schema)


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    definition = crd.load_crd()
    assert kubernetes_validate.validate(definition, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    assert definition["metadata"]["name"] == f"{crd.PLURAL}.{crd.GROUP}"
    assert definition["spec"]["names"]["kind"] == crd.KIND
    assert definition["spec"]["names"]["shortNames"] == ["rst"]
    assert definition["spec"]["scope"] == "Namespaced"
    version = crd.served_version(definition)
    assert version["served"] and version["storage"] and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Open", "Items", "Synced", "Reason", "Age"]


def test_the_operator_rbac_is_valid() -> None:
    documents = list(yaml.safe_load_all((REPO_ROOT / "operator" / "rbac.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    granted = {(r, v) for rule in documents[1]["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("restaurants", "watch"), ("restaurants", "patch"), ("restaurants/status", "patch")} <= granted


def test_kubernetes_validate_catches_a_broken_crd() -> None:
    """The check above is not a rubber stamp."""
    broken = crd.load_crd()
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"] = "menu"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("document", load_manifests(EXAMPLES), ids=lambda d: d["metadata"]["name"])
def test_every_example_is_valid_for_the_crd_and_the_platform(
    schema_validator: Validator, document: dict[str, Any]
) -> None:
    schema_validator.validate(document)
    RestaurantResource.model_validate(document)


@pytest.mark.parametrize("document", [p for p in BAD_MANIFESTS if p.id not in ROUTING_ONLY])
def test_a_bad_manifest_is_refused_by_the_crd_and_the_platform(schema_validator: Validator, document: Any) -> None:
    assert list(schema_validator.iter_errors(document)), "the CRD schema let it through"
    with pytest.raises(ValidationError):
        RestaurantResource.model_validate(document)


def test_the_status_the_operator_writes_fits_the_schema(schema_validator: Validator) -> None:
    synced = published(None, 1, 1, "2026-11-21T05:00:00Z")
    failing = not_synced(synced, 2, "PublishFailed", "platform unreachable", "2026-11-21T05:01:00Z")
    for status in (synced, failing):
        schema_validator.validate({**manifest(), "status": status})
    assert failing["conditions"][0]["lastTransitionTime"] == "2026-11-21T05:01:00Z"
    again = not_synced(failing, 2, "PublishFailed", "still unreachable", "2026-11-21T05:02:00Z")
    assert again["conditions"][0]["lastTransitionTime"] == "2026-11-21T05:01:00Z", "moves only on a flip"
