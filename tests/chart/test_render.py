"""The chart renders with Helm's own engine for every value set a user installs with, passes
``helm lint --strict``, and every object it renders is valid: Kubernetes objects with
kubernetes-validate (strict) at the oldest and the newest Kubernetes version Chart.yaml claims,
Dapr and KEDA objects against the CRD schemas of the Dapr and KEDA releases they are written for."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import kubernetes_validate
import pytest

from tests.support import ROOT
from tests.support.chart import (
    CHART,
    VALUE_SETS,
    chart_metadata,
    claimed_kubernetes_versions,
    dapr_crds,
    dapr_version,
    helm,
    keda_crds,
    objects,
    structural_validator,
)

CUSTOM_GROUPS = ("dapr.io/", "keda.sh/", "baedal.io/")


def test_chart_yaml_versions() -> None:
    metadata = chart_metadata()
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert metadata["apiVersion"] == "v2"
    assert metadata["appVersion"] == package, "the image and the Python package share the version"
    oldest, newest = claimed_kubernetes_versions()
    assert (oldest, newest) == ("1.30", "1.37"), "a change of range is a change of what the tests validate against"
    dapr_minor = ".".join(dapr_version().removeprefix("v").split(".")[:2])
    assert metadata["annotations"]["baedal.io/dapr-version"] == dapr_minor, "tools/daprd/go.mod pins another Dapr"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict_finds_no_warning(name: str) -> None:
    report = helm().lint(str(CHART), VALUE_SETS[name], strict=True, namespace="food")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert (report["errors"], problems) == ([], [])


def test_helm_lint_is_not_a_rubber_stamp() -> None:
    report = helm().lint(str(CHART), {"autoscaling": {"mode": "sometimes"}}, strict=True)
    assert [m for m in report["messages"] if m["severity"] >= 2] or report["errors"]


@pytest.mark.parametrize("version", claimed_kubernetes_versions())
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_kubernetes_object_is_valid(name: str, version: str) -> None:
    checked = 0
    for document in objects(name):
        if document["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        assert kubernetes_validate.validate(document, version, strict=True) == version
        checked += 1
    assert checked >= 10


def test_kubernetes_validate_catches_a_wrong_field() -> None:
    (deployment, *_) = [d for d in objects("defaults") if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, claimed_kubernetes_versions()[0], strict=True)


def _custom_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return {**dapr_crds(), **keda_crds()}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_dapr_and_keda_object_fits_its_crd(name: str) -> None:
    schemas = _custom_schemas()
    checked = set()
    for document in objects(name):
        if not document["apiVersion"].startswith(("dapr.io/", "keda.sh/")):
            continue
        key = (document["apiVersion"], document["kind"])
        assert key in schemas, f"{key}: no such CRD in Dapr {dapr_version()} or KEDA"
        errors = [f"{list(e.path)}: {e.message}" for e in structural_validator(schemas[key]).iter_errors(document)]
        assert errors == [], (document["kind"], document["metadata"]["name"])
        checked.add(document["kind"])
    assert {"Component", "Configuration", "Resiliency"} <= checked
    if "keda" in name:
        assert {"ScaledObject", "TriggerAuthentication"} <= checked


def test_the_crd_check_catches_a_wrong_field() -> None:
    schemas = _custom_schemas()
    component = next(d for d in objects("defaults") if d["kind"] == "Component")
    component["spec"]["scopes"] = ["order"]  # scopes belong at the top level, beside spec
    assert list(structural_validator(schemas[("dapr.io/v1alpha1", "Component")]).iter_errors(component))
    scaled = next(d for d in objects("keda") if d["kind"] == "ScaledObject")
    scaled["spec"]["minReplicas"] = 2  # KEDA spells it minReplicaCount
    assert list(structural_validator(schemas[("keda.sh/v1alpha1", "ScaledObject")]).iter_errors(scaled))


def test_the_crd_itself_is_the_one_file_in_crds() -> None:
    """Helm installs crds/ before the templates, so demo Restaurants can be applied in one install."""
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["restaurants.baedal.io.yaml"]
    assert [d for d in objects("demo-restaurants") if d["kind"] == "CustomResourceDefinition"] == []


def test_notes_tell_how_to_reach_the_gateway_mint_a_token_and_apply_a_restaurant() -> None:
    from tests.support.chart import rendered

    notes = rendered("ingress-tls")["baedal/templates/NOTES.txt"]
    assert "URL=https://baedal.example.com" in notes
    assert re.search(r"exec deploy/baedal-order -c app -- baedal token customer", notes)
    assert "kubectl -n food apply -f operator/examples/" in notes and "get rst" in notes
    assert "helm test baedal -n food" in notes
    assert "port-forward svc/baedal-gateway 8000:8000" in rendered("minimal")["baedal/templates/NOTES.txt"]
