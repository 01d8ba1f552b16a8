"""components/ and dapr.yaml against the code: every component a service uses is declared and
scoped to it, and every topic a service publishes or reads is declared in the pub/sub scopes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.entrypoints.bootstrap import SERVICES, ServiceHost
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


def test_the_multi_app_run_file_starts_every_service_on_its_own_app_module() -> None:
    (run,) = documents(ROOT / "dapr.yaml")
    assert run["common"]["resourcesPath"] == "./components"
    assert (ROOT / run["common"]["configFilePath"]).exists()
    assert run["common"]["env"]["BAEDAL_RUNTIME"] == "dapr"
    apps = {app["appID"]: app for app in run["apps"]}
    assert set(apps) == set(SERVICES)
    for name, app in apps.items():
        assert f"services.entrypoints.apps.{name}:app" in app["command"]
        assert str(app["appPort"]) in app["command"]
        assert (ROOT / "services" / "entrypoints" / "apps" / f"{name}.py").exists()


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
