"""What a reviewer of the rendered manifests looks for, and what the code expects of them: a
Deployment per process running ``baedal serve <process>`` with the Dapr annotations daprd knows,
probes on the routes the apps serve, resources, the restricted security context, PDBs, selectors
that never change and never overlap, secrets only by reference, and autoscaling that measures the
app container and is never done twice."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from services.entrypoints.cli import DEFAULT_PORTS, Process
from services.runtime.settings import Settings
from tests.support import ROOT
from tests.support.chart import (
    CHART,
    NAMESPACE,
    PROCESSES,
    RELEASE,
    VALUE_SETS,
    app_id,
    dapr_version,
    deployment,
    go_module,
    kinds,
    named,
    objects,
)


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod the release runs: (name, pod spec), the helm test's pod too."""
    found = [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in kinds(docs, "Deployment")]
    return found + [(d["metadata"]["name"], d["spec"]) for d in kinds(docs, "Pod")]


def known_dapr_annotations() -> set[str]:
    source = go_module("github.com/dapr/dapr", dapr_version()) / "pkg" / "injector" / "annotations" / "annotations.go"
    return set(re.findall(r'"(dapr\.io/[a-z0-9-]+)"', source.read_text()))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_each_process_is_a_deployment_running_baedal_serve_on_its_port(name: str) -> None:
    docs = objects(name)
    for process in PROCESSES:
        workload = deployment(docs, process)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[:2] == ["serve", process] and process in {p.value for p in Process}
        port = int(args[args.index("--port") + 1])
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert app_id(workload) == process
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/app-port"] == str(port)
        service = named(docs, "Service", workload["metadata"]["name"])
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_default_ports_are_those_baedal_serve_uses() -> None:
    docs = objects("defaults")
    for process in PROCESSES:
        args = deployment(docs, process)["spec"]["template"]["spec"]["containers"][0]["args"]
        assert int(args[args.index("--port") + 1]) == DEFAULT_PORTS[Process(process)]


def self_hosted_health_check() -> dict[str, Any]:
    common: dict[str, Any] = yaml.safe_load((ROOT / "dapr.yaml").read_text())["common"]
    return common


def test_dapr_annotations_are_complete_and_known_to_daprd() -> None:
    known = known_dapr_annotations()
    docs = objects("defaults")
    for workload in kinds(docs, "Deployment"):
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        used = {key for key in annotations if key.startswith("dapr.io/")}
        assert used <= known, used - known
        if workload["metadata"]["name"].endswith("-paygate"):
            assert not used, "the simulator has no sidecar"
            continue
        for needed in ("enabled", "app-id", "config", "log-as-json", "enable-metrics", "graceful-shutdown-seconds"):
            assert f"dapr.io/{needed}" in annotations, (workload["metadata"]["name"], needed)
        for resource in ("cpu-request", "cpu-limit", "memory-request", "memory-limit"):
            assert annotations[f"dapr.io/sidecar-{resource}"], "CPU autoscaling needs the sidecar's requests"
        config = annotations["dapr.io/config"]
        assert named(docs, "Configuration", config)
        if app_id(workload) in PROCESSES:
            health = self_hosted_health_check()  # the same checks as self-hosted (dapr.yaml)
            assert annotations["dapr.io/enable-app-health-check"] == str(health["enableAppHealthCheck"]).lower()
            assert annotations["dapr.io/app-health-check-path"] == health["appHealthCheckPath"]
            assert annotations["dapr.io/app-health-probe-interval"] == str(health["appHealthProbeInterval"])
            assert annotations["dapr.io/app-health-probe-timeout"] == str(health["appHealthProbeTimeout"])
            assert annotations["dapr.io/app-health-threshold"] == str(health["appHealthThreshold"])
            grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert int(annotations["dapr.io/graceful-shutdown-seconds"]) < grace, "daprd stops before the kubelet kills"


def test_probes_use_the_routes_the_apps_serve() -> None:
    from services.runtime.web.api import probes

    served = {route.path for route in probes.routes}  # type: ignore[attr-defined]
    for process in PROCESSES:
        container = deployment(objects("defaults"), process)["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"/healthz", "/readyz"} <= served
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_container_has_resources_and_the_restricted_security_context(name: str) -> None:
    for pod, spec in pod_specs(objects(name)):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, pod
            assert context["readOnlyRootFilesystem"] is True, pod
            assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, pod
            assert context["capabilities"] == {"drop": ["ALL"]}, pod
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, pod
            assert set(container["resources"]) == {"requests", "limits"}, pod
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), pod
            assert "memory" in container["resources"]["limits"], pod
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{pod}: the only writable path of the image (HOME, BAEDAL_DATA_DIR)"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_selectors_use_only_name_and_instance_and_pick_exactly_their_own_pods(name: str) -> None:
    docs = objects(name)
    workloads = kinds(docs, "Deployment")
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
        matching = [
            w["metadata"]["name"]
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matching == [workload["metadata"]["name"]]
    for pdb in kinds(docs, "PodDisruptionBudget"):
        assert set(pdb["spec"]["selector"]["matchLabels"]) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def _min_replicas(docs: list[dict[str, Any]], workload: dict[str, Any]) -> int:
    name = workload["metadata"]["name"]
    for kind, key in (("HorizontalPodAutoscaler", "minReplicas"), ("ScaledObject", "minReplicaCount")):
        for scaler in kinds(docs, kind):
            if scaler["spec"]["scaleTargetRef"]["name"] == name:
                return int(scaler["spec"][key])
    return int(workload["spec"]["replicas"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_a_pdb_exactly_for_each_deployment_that_runs_more_than_one_replica(name: str) -> None:
    docs = objects(name)
    budgets = {p["metadata"]["name"]: p for p in kinds(docs, "PodDisruptionBudget")}
    for workload in kinds(docs, "Deployment"):
        wanted = _min_replicas(docs, workload) > 1
        assert (workload["metadata"]["name"] in budgets) == wanted, workload["metadata"]["name"]
    if name == "minimal":
        assert budgets == {}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_each_autoscaler_targets_an_existing_deployment_and_none_is_scaled_twice(name: str) -> None:
    docs = objects(name)
    deployments = {d["metadata"]["name"]: d for d in kinds(docs, "Deployment")}
    targets: list[str] = []
    for scaler in [*kinds(docs, "HorizontalPodAutoscaler"), *kinds(docs, "ScaledObject")]:
        ref = scaler["spec"]["scaleTargetRef"]
        assert (ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment")) == ("apps/v1", "Deployment")
        assert ref["name"] in deployments
        assert "replicas" not in deployments[ref["name"]]["spec"], "helm upgrade would reset the scaler's count"
        targets.append(ref["name"])
    assert len(targets) == len(set(targets)), "an HPA and a ScaledObject for one Deployment"
    mode = VALUE_SETS[name].get("autoscaling", {}).get("mode", "hpa")
    scaled = {d.removeprefix(f"{RELEASE}-") for d in targets}
    expected = {"hpa": set(PROCESSES), "keda": set(PROCESSES), "none": set()}[mode]
    if name == "existing-secrets":
        expected -= {"order"}
    assert scaled == expected


def test_hpas_measure_the_app_container_and_scale_up_fast_and_down_slowly() -> None:
    for hpa in kinds(objects("defaults"), "HorizontalPodAutoscaler"):
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "ContainerResource", "the sidecar's CPU must not skew it"
        assert metric["containerResource"]["container"] == "app" and metric["containerResource"]["name"] == "cpu"
        target = deployment(objects("defaults"), hpa["metadata"]["name"].removeprefix(f"{RELEASE}-"))
        assert "app" in [c["name"] for c in target["spec"]["template"]["spec"]["containers"]]
        behavior = hpa["spec"]["behavior"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
        assert {"type": "Percent", "value": 100, "periodSeconds": 15} in behavior["scaleUp"]["policies"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_scaled_objects_scale_on_the_backlog_of_each_stream_cpu_and_the_rush_hours() -> None:
    from services.entrypoints.bootstrap import SERVICES, ServiceHost

    settings = Settings(runtime="dapr", jwt_secret="test-only")
    for value_set, trigger_type, stream_key in (
        ("keda", "redis-streams", "stream"),
        ("kafka-sasl-keda", "kafka", "topic"),
    ):
        docs = objects(value_set)
        for process in PROCESSES:
            scaled = named(docs, "ScaledObject", f"{RELEASE}-{process}")
            triggers = scaled["spec"]["triggers"]
            lag = [t for t in triggers if t["type"] == trigger_type]
            streams = set(ServiceHost(process, settings).subscriber.streams()) if process in SERVICES else set()
            assert {t["metadata"][stream_key] for t in lag} == streams, (value_set, process)
            assert {t["metadata"]["consumerGroup"] for t in lag} <= {process}, "daprd's consumer group is the app id"
            (cpu,) = [t for t in triggers if t["type"] == "cpu"]
            assert cpu["metadata"]["containerName"] == "app"
            windows = [t["metadata"] for t in triggers if t["type"] == "cron"]
            assert windows == [
                {"timezone": "Asia/Seoul", "start": "0 11 * * *", "end": "30 13 * * *", "desiredReplicas": "4"},
                {"timezone": "Asia/Seoul", "start": "0 17 * * *", "end": "30 19 * * *", "desiredReplicas": "4"},
            ]
            behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
            assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300


def _keda_parameters(trigger_type: str) -> dict[str, set[str]]:
    """The metadata and authParams names the KEDA scaler declares (its ``keda:"name=..."`` tags)."""
    from tests.support.chart import keda_version

    scalers = go_module("github.com/kedacore/keda/v2", keda_version()) / "pkg" / "scalers"
    files = {
        "redis-streams": ["redis_streams_scaler.go", "redis_scaler.go"],
        "kafka": ["kafka_scaler.go"],
        "cron": ["cron_scaler.go"],
        "cpu": ["cpu_memory_scaler.go"],
    }[trigger_type]
    found: dict[str, set[str]] = {"triggerMetadata": set(), "authParams": set()}
    for file in files:
        for names, order in re.findall(r'keda:"name=([^,"]+),\s*order=([^,"]+)', (scalers / file).read_text()):
            for where in order.split(";"):
                found.setdefault(where.strip(), set()).update(n.strip() for n in names.split(";"))
    return found


def test_every_trigger_parameter_is_one_the_keda_scaler_reads() -> None:
    for value_set in ("keda", "kafka-sasl-keda"):
        docs = objects(value_set)
        auths = {a["metadata"]["name"]: a for a in kinds(docs, "TriggerAuthentication")}
        for scaled in kinds(docs, "ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                declared = _keda_parameters(trigger["type"])
                assert set(trigger["metadata"]) <= declared["triggerMetadata"], trigger
                if "authenticationRef" in trigger:
                    auth = auths[trigger["authenticationRef"]["name"]]
                    parameters = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
                    assert parameters <= declared["authParams"], parameters


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_secrets_reach_pods_and_components_only_by_reference(name: str) -> None:
    docs = objects(name)
    secrets = {s["metadata"]["name"] for s in kinds(docs, "Secret")}
    existing = {"baedal-auth", "baedal-db", "redis"}  # the existing Secrets the value sets name
    for pod, spec in pod_specs(docs):
        for container in spec["containers"]:
            for variable, entry in _env(container).items():
                if re.search(r"SECRET|PASSWORD|DATABASE_URL|TOKEN", variable):
                    assert "value" not in entry, (pod, variable)
                    ref = entry["valueFrom"]["secretKeyRef"]
                    assert ref["name"] in secrets | existing, (pod, ref)
    for component in kinds(docs, "Component"):
        for item in component["spec"]["metadata"]:
            if re.search(r"(?i)password|connectionString", item["name"]):
                assert "value" not in item and item["secretKeyRef"]["name"] in secrets | existing, item


def test_services_get_the_signing_key_and_the_database_from_secrets() -> None:
    docs = objects("existing-secrets")
    for process in PROCESSES[1:]:
        env = _env(deployment(docs, process)["spec"]["template"]["spec"]["containers"][0])
        assert env["BAEDAL_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "baedal-auth", "key": "signing-key"}
        assert env["BAEDAL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "baedal-db", "key": "url"}
    assert {s["metadata"]["name"] for s in kinds(docs, "Secret")} == {"baedal-redis"}, "no Secret is made twice"


def test_the_generated_signing_key_is_kept_across_upgrades_and_uninstalls() -> None:
    secret = named(objects("defaults"), "Secret", f"{RELEASE}-jwt")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(secret["data"]["jwt-secret"]) >= 48
    text = (CHART / "templates" / "secrets.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in text, "an upgrade reads the installed key back"


def test_the_gateway_is_reached_through_the_ingress_with_tls() -> None:
    docs = objects("ingress-tls")
    (ingress,) = kinds(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "baedal-tls", "hosts": ["baedal.example.com", "api.baedal.example.com"]}
    ]
    for rule in ingress["spec"]["rules"]:
        (path,) = rule["http"]["paths"]
        assert path["backend"]["service"] == {"name": f"{RELEASE}-gateway", "port": {"name": "http"}}
    assert kinds(objects("minimal"), "Ingress") == []


def test_the_operator_runs_alone_with_its_rbac_and_publishes_through_its_sidecar() -> None:
    docs = objects("defaults")
    operator = named(docs, "Deployment", f"{RELEASE}-operator")
    assert operator["spec"]["replicas"] == 1 and operator["spec"]["strategy"]["type"] == "Recreate"
    spec = operator["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"][:2] == ["serve", "operator"]
    assert app_id(operator) == "operator"
    account = named(docs, "ServiceAccount", spec["serviceAccountName"])
    (binding,) = kinds(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    role = named(docs, "ClusterRole", binding["roleRef"]["name"])
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("restaurants", "watch"), ("restaurants", "patch"), ("restaurants/status", "patch")} <= granted
    assert not [
        v
        for rule in role["rules"]
        for v in rule["verbs"]
        if v in ("*", "delete", "create") and "events" not in rule["resources"]
    ]
    assert spec["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_an_operator_watching_some_namespaces_is_bound_only_there() -> None:
    docs = objects("demo-restaurants")
    assert kinds(docs, "ClusterRoleBinding") == []
    bindings = kinds(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["food", "food-staging"]
    args = named(docs, "Deployment", f"{RELEASE}-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--namespace", "food", "--namespace", "food-staging"]


def test_the_helm_test_places_an_order_through_the_gateway() -> None:
    docs = objects("defaults")
    (pod,) = kinds(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"][:3] == ["smoke", "--url", f"http://{RELEASE}-gateway.{NAMESPACE}.svc:8000"]
    assert "BAEDAL_JWT_SECRET" in _env(container)


@pytest.mark.parametrize("name", ["defaults", "kafka", "minimal"])
def test_every_service_has_a_deployment_whose_app_id_is_scoped_on_the_components_it_uses(name: str) -> None:
    from services.entrypoints.bootstrap import SERVICES

    docs = objects(name)
    components = {c["metadata"]["name"]: c for c in kinds(docs, "Component")}
    dapr = Settings().dapr
    bindings = {"payment": [dapr.paygate_binding], "notification": [dapr.notify_binding]}
    app_ids = {app_id(w) for w in kinds(docs, "Deployment")}
    for service in SERVICES:
        assert service in app_ids, f"no Deployment with app id {service}"
        for used in [dapr.store_of(service), dapr.pubsub, *bindings.get(service, [])]:
            assert service in components[used]["scopes"], (service, used)
        others = [c for c in components.values() if c["spec"]["type"].startswith("state.") and service in c["scopes"]]
        assert [c["metadata"]["name"] for c in others] == [dapr.store_of(service)], "no service sees another's state"
    if name != "minimal":
        assert "operator" in app_ids and "operator" in components[dapr.pubsub]["scopes"]
