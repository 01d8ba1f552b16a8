"""The Helm chart as the tests see it: rendered with Helm's own engine (``helm-python-sdk``, Helm's Go
SDK as a library: no helm binary) for the value sets a user would install with, and the CRD schemas
of Dapr and KEDA read from their Go modules in the module cache (``go mod download``), never copied
into the repository."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.protocols import Validator

from tests.support import ROOT

CHART = ROOT / "charts" / "baedal"
RELEASE = "baedal"
NAMESPACE = "food"
PROCESSES = ("gateway", "order", "payment", "restaurant", "delivery", "notification")

# The value sets of the tests: what users install with (docs/kubernetes.md shows each).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "kafka": {
        "pubsub": {"type": "kafka", "kafka": {"brokers": "kafka-0.kafka:9092,kafka-1.kafka:9092"}},
    },
    "kafka-sasl-keda": {
        "autoscaling": {"mode": "keda"},
        "pubsub": {"type": "kafka", "kafka": {"authType": "password", "username": "baedal", "password": "s3cret"}},
    },
    "keda": {
        "autoscaling": {"mode": "keda"},
        "pubsub": {"redis": {"existingSecret": "redis", "passwordKey": "redis-password"}},
    },
    "ingress-tls": {
        "ingress": {
            "className": "nginx",
            "hosts": ["baedal.example.com", "api.baedal.example.com"],
            "tls": [{"secretName": "baedal-tls", "hosts": ["baedal.example.com", "api.baedal.example.com"]}],
        },
    },
    "demo-restaurants": {"demoRestaurants": True, "operator": {"namespaces": ["food", "food-staging"]}},
    "minimal": {
        "defaults": {"replicas": 1, "autoscaling": {"enabled": False}},
        "autoscaling": {"mode": "none"},
        "ingress": {"enabled": False},
        "operator": {"enabled": False},
        "paygate": {"url": "https://cards.example.com", "simulator": {"enabled": False}},
        "notify": {"url": "https://messages.example.com/notify"},
    },
    "existing-secrets": {
        "jwt": {"existingSecret": "baedal-auth", "key": "signing-key"},
        "postgresql": {"existingSecret": "baedal-db", "connectionStringKey": "url", "connectionString": ""},
        "pubsub": {"redis": {"password": "from-values"}},
        "services": {"order": {"port": 8001, "replicas": 3, "autoscaling": {"enabled": False}}},
    },
}


def helm() -> Any:
    """The ``helm_python`` module, or a skip that says how to get it."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart: make .venv/.installed")


def render(values: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, as ``helm install`` would render it."""
    with helm().Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(values, name=RELEASE, namespace=namespace, is_install=True)
    return rendered


@functools.cache
def _rendered(name: str) -> str:
    return json.dumps(render(VALUE_SETS[name]))


def rendered(name: str) -> dict[str, str]:
    """The rendering of a value set of :data:`VALUE_SETS` (rendered once per session)."""
    result: dict[str, str] = json.loads(_rendered(name))
    return result


def objects_of(texts: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a rendering (NOTES.txt is not one)."""
    found = []
    for path, text in sorted(texts.items()):
        if path.endswith("NOTES.txt"):
            continue
        found += [doc for doc in yaml.safe_load_all(text) if doc]
    return found


def objects(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(_objects(name))


@functools.cache
def _objects(name: str) -> list[dict[str, Any]]:
    return objects_of(rendered(name))


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def deployment(docs: list[dict[str, Any]], process: str) -> dict[str, Any]:
    return named(docs, "Deployment", f"{RELEASE}-{process}")


def app_id(workload: dict[str, Any]) -> str | None:
    annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
    value = annotations.get("dapr.io/app-id")
    return str(value) if value is not None else None


def chart_metadata() -> dict[str, Any]:
    metadata: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return metadata


def claimed_kubernetes_versions() -> tuple[str, str]:
    """The oldest and the newest minor version of Chart.yaml's kubeVersion range (``>=A <B``)."""
    match = re.fullmatch(r">=\s*1\.(\d+)\.0-0\s+<\s*1\.(\d+)\.0-0", chart_metadata()["kubeVersion"])
    assert match, "kubeVersion must read '>=1.X.0-0 <1.Y.0-0'"
    return f"1.{match.group(1)}", f"1.{int(match.group(2)) - 1}"


# --------------------------------------------------------------------------- CRDs from Go modules


def dapr_version() -> str:
    """The Dapr release Baedal builds daprd from (tools/daprd/go.mod)."""
    match = re.search(r"^\s*github\.com/dapr/dapr (v\S+)", (ROOT / "tools" / "daprd" / "go.mod").read_text(), re.M)
    assert match, "tools/daprd/go.mod requires no github.com/dapr/dapr"
    return match.group(1)


def keda_version() -> str:
    """The KEDA release the chart's ScaledObjects are written for (Chart.yaml's annotation)."""
    return str(chart_metadata()["annotations"]["baedal.io/keda-version"])


@functools.cache
def go_module(module: str, version: str) -> Path:
    """The module's directory in the Go module cache, downloaded if need be; a skip that says why
    when it cannot be had (no Go, no module proxy)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"{module}@{version}: no go command on PATH to download it (its CRDs are read from there)")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True, env=env, timeout=600
    )
    info = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    if done.returncode != 0 or not info.get("Dir"):
        reason = info.get("Error") or done.stderr.strip() or f"exit {done.returncode}"
        pytest.skip(f"`go mod download {module}@{version}` failed: {reason}")
    return Path(info["Dir"])


def crds_in(paths: list[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of every served version of the CRDs in these files."""
    schemas = {}
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served"):
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def dapr_crds() -> dict[tuple[str, str], dict[str, Any]]:
    root = go_module("github.com/dapr/dapr", dapr_version()) / "charts" / "dapr" / "crds"
    return crds_in(sorted(root.glob("*.yaml")))


def keda_crds() -> dict[tuple[str, str], dict[str, Any]]:
    root = go_module("github.com/kedacore/keda/v2", keda_version()) / "config" / "crd" / "bases"
    return crds_in(sorted(root.glob("keda.sh_*.yaml")))


def components_contrib() -> Path:
    """The components-contrib module the pinned daprd is built with (dapr's go.mod)."""
    dapr = go_module("github.com/dapr/dapr", dapr_version())
    match = re.search(r"^\s*github\.com/dapr/components-contrib (v\S+)", (dapr / "go.mod").read_text(), re.M)
    assert match
    return go_module("github.com/dapr/components-contrib", match.group(1))


# --------------------------------------------------------------------------- structural schemas


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


def closed(schema: dict[str, Any], name: str = "") -> dict[str, Any]:
    """The schema as ``kubectl apply`` (strict field validation) uses it: an unknown field is an
    error, except in ``metadata``, which the API server checks itself."""
    result = copy.deepcopy(schema)
    if "properties" in result:
        result["properties"] = {key: closed(value, key) for key, value in result["properties"].items()}
        if name != "metadata" and not result.get("x-kubernetes-preserve-unknown-fields"):
            result.setdefault("additionalProperties", False)
    if isinstance(result.get("items"), dict):
        result["items"] = closed(result["items"])
    if isinstance(result.get("additionalProperties"), dict):
        result["additionalProperties"] = closed(result["additionalProperties"])
    return result


def structural_validator(schema: dict[str, Any]) -> Validator:
    strict = closed(schema)
    StructuralValidator.check_schema(strict)
    return StructuralValidator(strict)
