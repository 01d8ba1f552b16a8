"""The Restaurant CRD: a valid Kubernetes object, and a schema that agrees with the platform's own
manifest model (every example passes both, every bad manifest fails both). The operator's RBAC is
the chart's (charts/baedal/templates/operator-rbac.yaml), checked with the chart in tests/chart."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from jsonschema.protocols import Validator
from pydantic import ValidationError

from services.catalog.manifest import RestaurantResource, load_manifests
from services.restaurant_operator import crd
from services.restaurant_operator.status import not_synced, published
from tests.support import EXAMPLES
from tests.support.chart import structural_validator
from tests.support.manifests import BAD_MANIFESTS, manifest

KUBERNETES_VERSION = "1.30"
# Refused by the API server's routing (which kind, which version), not by the schema.
ROUTING_ONLY = {"wrong-kind", "wrong-api-version"}


@pytest.fixture(scope="module")
def schema_validator() -> Validator:
    return structural_validator(crd.served_version(crd.load_crd())["schema"]["openAPIV3Schema"])


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
