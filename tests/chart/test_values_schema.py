"""values.schema.json refuses the values that would install a broken or unsafe release, each rule
with its own test, through Helm's own validation (what ``helm install`` does before rendering);
and values.yaml documents every key it sets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.chart import CHART, VALUE_SETS, helm

REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    # what a user could type        -> the path Helm names in its refusal
    "an unknown key (a typo)": ({"autoscalling": {"mode": "keda"}}, ""),
    "an unknown key deep down": ({"defaults": {"sidecar": {"cpuLimits": "1"}}}, "/defaults/sidecar"),
    "an autoscaling mode that does not exist": ({"autoscaling": {"mode": "both"}}, "/autoscaling/mode"),
    "zero replicas": ({"defaults": {"replicas": 0}}, "/defaults/replicas"),
    "a CPU target above 100 %": ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "/autoscaling"),
    "a privileged port (the image runs as non-root)": ({"services": {"gateway": {"port": 80}}}, "/services/gateway"),
    "a process that does not exist": ({"services": {"kitchen": {"port": 9000}}}, "/services"),
    "a malformed CPU quantity": ({"defaults": {"resources": {"requests": {"cpu": "lots"}}}}, "/defaults/resources"),
    "a malformed memory quantity": ({"defaults": {"sidecar": {"memoryLimit": "256MB"}}}, "/defaults/sidecar"),
    "a pub/sub that is not Redis or Kafka": ({"pubsub": {"type": "rabbitmq"}}, "/pubsub/type"),
    "a Redis host without a port": ({"pubsub": {"redis": {"host": "redis-master"}}}, "/pubsub/redis/host"),
    "Kafka SASL without credentials": (
        {"pubsub": {"type": "kafka", "kafka": {"authType": "password"}}},
        "/pubsub/kafka",
    ),
    "no simulator and no card gateway URL": ({"paygate": {"simulator": {"enabled": False}}}, "/paygate/url"),
    "a card gateway URL that is not HTTP": ({"paygate": {"url": "cards.example.com"}}, "/paygate/url"),
    "no PostgreSQL Secret and no connection string": (
        {"postgresql": {"connectionString": ""}},
        "/postgresql/connectionString",
    ),
    "an image tag with a space": ({"image": {"tag": "1.0 beta"}}, "/image/tag"),
    "a pull policy Kubernetes does not know": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "a Secret name Kubernetes refuses": ({"jwt": {"existingSecret": "My_Secret"}}, "/jwt/existingSecret"),
    "an Ingress without hosts": ({"ingress": {"hosts": []}}, "/ingress/hosts"),
    "TLS without the Ingress": (
        {"ingress": {"enabled": False, "tls": [{"secretName": "t", "hosts": ["a.example"]}]}},
        "/ingress/tls",
    ),
    "a rush hour that is not a cron expression": (
        {"autoscaling": {"keda": {"rushHours": [{"start": "11:00", "end": "13:30"}]}}},
        "/autoscaling/keda/rushHours/0",
    ),
    "an operator namespace Kubernetes refuses": ({"operator": {"namespaces": ["Food"]}}, "/operator/namespaces/0"),
    "a helm test shorter than an order": ({"tests": {"timeoutSeconds": 1}}, "/tests/timeoutSeconds"),
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_value_set_of_the_tests_is_accepted(name: str) -> None:
    with helm().Chart.load(str(CHART)) as chart:
        chart.validate_schema(VALUE_SETS[name])


@pytest.mark.parametrize("case", REFUSED)
def test_the_schema_refuses(case: str) -> None:
    values, where = REFUSED[case]
    module = helm()
    with module.Chart.load(str(CHART)) as chart, pytest.raises(module.HelmValuesError) as refused:
        chart.validate_schema(values)
    assert f"at '{where}" in str(refused.value), str(refused.value)


def test_a_refused_value_stops_the_install_before_anything_renders() -> None:
    module = helm()
    with module.Chart.load(str(CHART)) as chart, pytest.raises(module.HelmError):
        chart.render({"autoscaling": {"mode": "both"}}, name="baedal", namespace="food")


def _schema_paths(schema: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> set[str]:
    """Every leaf path the schema declares (objects with closed properties are descended into)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    if "allOf" in schema and "properties" not in schema:  # a $ref with more rules beside it
        schema = {k: v for part in schema["allOf"] for k, v in part.items()}
        return _schema_paths(schema, defs, prefix)
    properties = schema.get("properties")
    if schema.get("type") != "object" or not properties or schema.get("additionalProperties") is not False:
        return {prefix}
    paths = set()
    for key, sub in properties.items():
        paths |= _schema_paths(sub, defs, f"{prefix}.{key}" if prefix else key)
    return paths


def _values_paths(values: Any, prefix: str = "") -> set[str]:
    if not isinstance(values, dict) or not values or prefix.endswith(("annotations", "Annotations")):
        return {prefix}
    paths = set()
    for key, value in values.items():
        paths |= _values_paths(value, f"{prefix}.{key}" if prefix else key)
    return paths


def test_every_key_of_values_yaml_is_in_the_schema_and_commented() -> None:
    import yaml

    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    declared = _schema_paths(schema, schema["$defs"])
    for path in _values_paths(values):
        assert any(path == d or path.startswith(f"{d}.") for d in declared), f"{path}: not in values.schema.json"
    lines = text.splitlines()
    # The comment of "resources:" (Kubernetes' own fields) and of "rushHours:" (its items) describes what is below.
    free_form_below: int | None = None
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match or line.lstrip().startswith("-"):
            continue
        indent = len(match.group(1))
        if free_form_below is not None and indent > free_form_below:
            continue
        free_form_below = indent if match.group(2) in ("resources", "rushHours") else None
        previous = lines[number - 1].strip() if number else ""
        assert previous.startswith("#"), f"values.yaml line {number + 1}: {match.group(2)} has no comment above it"


def _documented_paths(text: str) -> list[re.Pattern[str]]:
    """The values of the "Every value" table of docs/kubernetes.md: the first cell's spans, where a
    later span without a dot is a sibling of the first (`a.b.c`, `d` is a.b.d), `<process>` is any
    process and `x.*` everything under x."""
    patterns = []
    for line in text.split("## Every value", 1)[1].split("\n## ", 1)[0].splitlines():
        if not line.startswith("| `"):
            continue
        spans = re.findall(r"`([^`]+)`", line.split("|")[1])
        first = spans[0]
        parent = first.rsplit(".", 1)[0] if "." in first else ""
        for span in spans:
            path = span if "." in span or not parent else f"{parent}.{span}"
            pattern = re.escape(path.removesuffix(".*")).replace(re.escape("<process>"), r"[a-z]+")
            patterns.append(re.compile(rf"{pattern}(\..+)?"))
    return patterns


def test_docs_kubernetes_md_describes_every_value() -> None:
    import yaml

    from tests.support import ROOT

    documented = _documented_paths((ROOT / "docs" / "kubernetes.md").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in sorted(_values_paths(values)) if not any(d.fullmatch(p) for d in documented)]
    assert missing == [], "values that docs/kubernetes.md does not describe"
