"""skaffold.yaml, for what can be checked without skaffold and a cluster: its schema version, the
Dockerfile and the chart it names, the port it forwards, and that every value it sets (in each
profile too) is a value of the chart that values.schema.json accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.support import ROOT
from tests.support.chart import CHART, RELEASE, helm, objects_of, render

SKAFFOLD = ROOT / "skaffold.yaml"


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return loaded


def release(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (only,) = (values or config())["deploy"]["helm"]["releases"]
    found: dict[str, Any] = only
    return found


def set_values(profile: str | None) -> dict[str, str]:
    """The --set values of the release, with a profile's patches applied."""
    values = dict(release().get("setValues", {}))
    values.update({k: "x" for k in release().get("setValueTemplates", {})})
    if profile:
        (chosen,) = [p for p in config()["profiles"] if p["name"] == profile]
        for patch in chosen["patches"]:
            prefix = "/deploy/helm/releases/0/setValues/"
            assert patch["op"] == "add" and patch["path"].startswith(prefix), patch
            values[patch["path"].removeprefix(prefix)] = patch["value"]
    return values


def schema_has(path: str) -> bool:
    schema = json.loads((CHART / "values.schema.json").read_text())
    node = schema
    for key in path.split("."):
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        properties = node.get("properties", {})
        if key not in properties:
            return False
        node = properties[key]
    return True


def test_the_schema_version_and_what_it_builds() -> None:
    skaffold = config()
    assert (skaffold["apiVersion"], skaffold["kind"]) == ("skaffold/v4beta14", "Config")
    (artifact,) = skaffold["build"]["artifacts"]
    assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    chart = yaml.safe_load((ROOT / release()["chartPath"] / "Chart.yaml").read_text())
    assert chart["name"] == "baedal" and release()["name"] == RELEASE
    templates = release()["setValueTemplates"]
    image = artifact["image"]
    assert templates == {"image.repository": f"{{{{.IMAGE_REPO_{image}}}}}", "image.tag": f"{{{{.IMAGE_TAG_{image}}}}}"}


def test_the_gateway_is_forwarded_to_localhost_8000() -> None:
    (forward,) = config()["portForward"]
    assert (forward["localPort"], forward["port"]) == (8000, 8000)
    services = [d for d in objects_of(render({}, namespace=forward["namespace"])) if d["kind"] == "Service"]
    (gateway,) = [s for s in services if s["metadata"]["name"] == forward["resourceName"]]
    assert gateway["spec"]["ports"][0]["port"] == forward["port"]
    assert forward["namespace"] == release()["namespace"]


def test_the_profiles_are_kafka_keda_and_dev() -> None:
    assert [p["name"] for p in config()["profiles"]] == ["kafka", "keda", "dev"]
    assert set_values("kafka")["pubsub.type"] == "kafka"
    assert set_values("keda")["autoscaling.mode"] == "keda"
    assert (set_values("dev")["defaults.replicas"], set_values("dev")["autoscaling.mode"]) == ("1", "none")


@pytest.mark.parametrize("profile", [None, "kafka", "keda", "dev"])
def test_every_value_it_sets_is_a_value_of_the_chart_that_the_schema_accepts(profile: str | None) -> None:
    values = set_values(profile)
    for path in values:
        assert schema_has(path), f"{path} is not in values.schema.json"
    module = helm()
    parsed = module.parse_set_string(",".join(f"{k}={'baedal' if v == 'x' else v}" for k, v in values.items()))
    with module.Chart.load(str(CHART)) as chart:
        chart.validate_schema(parsed)


def test_a_value_path_that_does_not_exist_is_caught() -> None:
    assert schema_has("autoscaling.keda.timezone") and schema_has("services.order.port")
    assert not schema_has("autoscaling.kedaMode") and not schema_has("image.name")
