"""components/ and dapr.yaml against the code: every component a service uses is declared and
scoped to it, and every topic a service publishes or reads is declared in the pub/sub scopes. The
Helm chart's Dapr components (charts/baedal) say the same, and every metadata key of both is one
daprd reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.entrypoints.bootstrap import SERVICES, ServiceHost
from services.entrypoints.cli import DEFAULT_PORTS, Process
from services.runtime.settings import Settings
from services.topics import PUBLISHERS, dead_letters_of, stream_of
from tests.support.fake_dapr import COMPONENTS, Component, load_components

ROOT = COMPONENTS.parent
PUBLISHING = set(PUBLISHERS.values())


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def components() -> dict[str, Component]:
    return load_components()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServiceHost]:
    settings = Settings(runtime="dapr", data_dir=tmp_path_factory.mktemp("hosts"), jwt_secret="test-only")
    return {name: ServiceHost(name, settings) for name in SERVICES}


def test_every_yaml_file_parses_into_known_dapr_kinds() -> None:
    files = sorted(ROOT.glob("components/**/*.yaml"))
    kinds = {doc.get("kind") for path in files for doc in documents(path)}
    assert kinds == {"Component", "Resiliency", "Configuration"}
    assert documents(ROOT / "dapr.yaml")[0]["version"] == 1
    for path in files:
        for doc in documents(path):
            assert doc["apiVersion"] in ("dapr.io/v1alpha1", "dapr.io/v2alpha1"), path
            assert doc["metadata"]["name"], path


def test_each_service_sees_exactly_its_state_store_and_none_uses_daprds_outbox(
    components: dict[str, Component],
) -> None:
    """Each service relays its own outbox keys (services/runtime/dapr/outbox.py): daprd 1.18's
    transactional outbox must not be configured (it spins forever after a failed transaction)."""
    settings = Settings()
    stores = {name: c for name, c in components.items() if c.type.startswith("state.")}
    assert set(stores) == {settings.dapr.store_of(s) for s in SERVICES}
    for service in SERVICES:
        store = stores[settings.dapr.store_of(service)]
        assert (store.type, store.scopes) == ("state.postgresql", [service])
        assert components[store.name].metadata.get("tablePrefix") == f"{service}_"
        # One migrations table per store: daprd's CREATE TABLE IF NOT EXISTS races on a shared one.
        assert components[store.name].metadata.get("metadataTableName") == f"{service}_dapr_metadata"
        assert not {k for k in store.metadata if k.startswith("outbox")}, store.name


def test_state_stores_are_not_retried_by_the_sidecar() -> None:
    """daprd's retries cannot tell a failed ETag guard from a network fault: a conflict must reach
    the app at once (it retries from a fresh read), not after seconds of doomed retries."""
    resiliency = next(doc for doc in documents(ROOT / "components" / "resiliency.yaml"))
    targets = resiliency["spec"]["targets"]["components"]
    for service in SERVICES:
        assert "retry" not in targets[Settings().dapr.store_of(service)]["outbound"], service


def test_bindings_are_scoped_to_the_services_that_invoke_them(components: dict[str, Component]) -> None:
    settings = Settings()
    assert components[settings.dapr.notify_binding].scopes == ["notification"]
    assert components[settings.dapr.paygate_binding].scopes == ["payment"]
    for name in (settings.dapr.notify_binding, settings.dapr.paygate_binding):
        assert components[name].type == "bindings.http" and components[name].metadata["url"].startswith("http")


def test_topic_scopes_match_what_each_service_publishes_and_reads(
    components: dict[str, Component], hosts: dict[str, ServiceHost]
) -> None:
    pubsub = components[Settings().dapr.pubsub]
    assert set(SERVICES) <= set(pubsub.scopes)
    publishing = pubsub.topic_scopes("publishingScopes")
    reading = pubsub.topic_scopes("subscriptionScopes")
    assert publishing is not None and reading is not None
    for service, host in hosts.items():
        own = {stream_of(service)} if service in PUBLISHING else set()
        assert publishing[service] == own | {dead_letters_of(service)}, service
        assert reading[service] == set(host.subscriber.streams()), service
        for stream in host.subscriber.streams():  # somebody publishes every stream a service reads
            assert any(stream in topics for topics in publishing.values()), stream


def test_the_kafka_variant_is_a_drop_in_replacement(components: dict[str, Component]) -> None:
    (kafka_doc,) = documents(ROOT / "components" / "variants" / "kafka" / "pubsub.yaml")
    redis = components["pubsub"]
    assert kafka_doc["metadata"]["name"] == redis.name and kafka_doc["spec"]["type"] == "pubsub.kafka"
    kafka_meta = {m["name"]: m["value"] for m in kafka_doc["spec"]["metadata"]}
    for key in ("publishingScopes", "subscriptionScopes"):
        assert kafka_meta[key] == redis.metadata[key]
    assert kafka_doc["scopes"] == redis.scopes


def test_resiliency_targets_declared_components_and_policies(components: dict[str, Component]) -> None:
    (resiliency,) = documents(ROOT / "components" / "resiliency.yaml")
    policies = resiliency["spec"]["policies"]
    for name, target in resiliency["spec"]["targets"]["components"].items():
        assert name in components, name
        for direction in target.values():
            for kind, policy in direction.items():
                plural = {"timeout": "timeouts", "retry": "retries", "circuitBreaker": "circuitBreakers"}[kind]
                assert policy in policies[plural], (name, kind, policy)
    # One breaker in front of the card gateway: the payment service's own (see resiliency.yaml).
    assert "circuitBreaker" not in resiliency["spec"]["targets"]["components"]["paygate"]["outbound"]


def test_the_multi_app_run_file_serves_every_service_as_the_chart_does() -> None:
    (run,) = documents(ROOT / "dapr.yaml")
    assert run["common"]["resourcesPath"] == "./components"
    assert (ROOT / run["common"]["configFilePath"]).exists()
    assert run["common"]["env"]["BAEDAL_RUNTIME"] == "dapr"
    apps = {app["appID"]: app for app in run["apps"]}
    assert set(apps) == set(SERVICES)
    for name, app in apps.items():
        assert app["appPort"] == DEFAULT_PORTS[Process(name)], name
        assert app["command"][:5] == ["python", "-m", "services", "serve", name], app["command"]
        assert app["command"][5:7] == ["--port", str(app["appPort"])], app["command"]


def test_a_service_app_runs_only_on_the_dapr_runtime(tmp_path: Path) -> None:
    from services.entrypoints.dapr_host import create_service_app

    with pytest.raises(RuntimeError, match="BAEDAL_RUNTIME=dapr"):
        create_service_app("order", Settings(data_dir=tmp_path))
    with pytest.raises(ValueError, match="no service 'kitchen'"):
        create_service_app("kitchen", Settings(runtime="dapr", data_dir=tmp_path, jwt_secret="x"))
    app = create_service_app("payment", Settings(runtime="dapr", data_dir=tmp_path, jwt_secret="x"))
    paths = set(app.openapi()["paths"])
    assert {"/wallets/{customer_id}/top-ups", "/readyz", "/dapr/subscribe", "/events/order-events"} <= paths
    assert "/orders" not in paths, "one service per process"


# --------------------------------------------------------------------------- the chart agrees


def chart_components(value_set: str = "defaults") -> dict[str, dict[str, Any]]:
    from tests.support.chart import objects

    return {d["metadata"]["name"]: d for d in objects(value_set) if d["kind"] == "Component"}


def metadata_names(doc: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m.get("value", m.get("secretKeyRef")) for m in doc["spec"]["metadata"]}


@pytest.mark.parametrize("value_set", ["defaults", "kafka"])
def test_the_chart_declares_the_same_components_with_the_same_scopes(
    components: dict[str, Component], value_set: str
) -> None:
    chart = chart_components(value_set)
    assert set(chart) == set(components)
    local = {d["metadata"]["name"]: d for p in ROOT.glob("components/*.yaml") for d in documents(p)}
    for name, doc in chart.items():
        assert doc["spec"]["version"] == local[name]["spec"]["version"], name
        assert sorted(doc["scopes"]) == sorted(components[name].scopes), name
        kind = components[name].type.split(".")[0]
        expected_type = "pubsub.kafka" if (kind, value_set) == ("pubsub", "kafka") else components[name].type
        assert doc["spec"]["type"] == expected_type, name


@pytest.mark.parametrize("value_set", ["defaults", "kafka"])
def test_the_chart_topic_scopes_are_those_of_components_and_so_of_the_code(
    components: dict[str, Component], value_set: str
) -> None:
    """components/pubsub.yaml is checked against the code above; the chart must say the same."""
    chart = metadata_names(chart_components(value_set)["pubsub"])
    for key in ("publishingScopes", "subscriptionScopes"):
        assert chart[key] == components["pubsub"].metadata[key], key


def test_the_chart_state_stores_carry_the_same_outbox_and_table_prefixes(components: dict[str, Component]) -> None:
    chart = chart_components()
    for name, component in components.items():
        if not component.type.startswith("state."):
            continue
        ours = metadata_names(chart[name])
        for key in ("tablePrefix", "metadataTableName", "outboxPublishPubsub", "outboxPublishTopic", "outboxPubsub"):
            assert ours.get(key) == component.metadata.get(key), (name, key)
        assert set(ours["connectionString"]) == {"name", "key"}, "from a Secret, never a plain value"


def test_the_chart_resiliency_is_that_of_components() -> None:
    from tests.support.chart import objects

    (chart,) = [d for d in objects("defaults") if d["kind"] == "Resiliency"]
    (local,) = documents(ROOT / "components" / "resiliency.yaml")
    assert chart["spec"] == local["spec"]
    assert set(chart["scopes"]) >= set(SERVICES) | {"gateway", "operator"}


def test_every_component_metadata_key_is_one_daprd_reads() -> None:
    """Each metadata name of components/ and of the chart is in the component's metadata.yaml of
    the components-contrib release daprd is built with, or a key daprd's runtime reads itself."""
    from tests.support.chart import components_contrib

    contrib = components_contrib()
    # Read by daprd's runtime for every pub/sub (topic scopes) or state store (the outbox).
    runtime_keys = {"publishingScopes", "subscriptionScopes", "outboxPublishPubsub", "outboxPublishTopic"}
    runtime_keys.add("outboxPubsub")
    docs = [doc for path in sorted(ROOT.glob("components/**/*.yaml")) for doc in documents(path)]
    docs += list(chart_components("defaults").values()) + list(chart_components("kafka-sasl-keda").values())
    for doc in docs:
        if doc["kind"] != "Component":
            continue
        kind, _, name = doc["spec"]["type"].partition(".")
        version = doc["spec"]["version"]
        folder = contrib / ("bindings" if kind == "bindings" else kind) / name
        metadata_file = folder / version / "metadata.yaml" if (folder / version).is_dir() else folder / "metadata.yaml"
        spec = yaml.safe_load(metadata_file.read_text())
        known = {m["name"] for m in spec.get("metadata", [])}
        for profile in spec.get("authenticationProfiles", []) + spec.get("builtinAuthenticationProfiles", []):
            known |= {m["name"] for m in profile.get("metadata", [])}
        unknown = {m["name"] for m in doc["spec"]["metadata"]} - known - runtime_keys
        assert unknown == set(), (doc["metadata"]["name"], doc["spec"]["type"])
