"""``baedal operator`` (a real process) against a real kube-apiserver, publishing to a real
``baedal up``, with only the chart's operator RBAC (templates/operator-rbac.yaml): a token of its
ServiceAccount, bound to the one namespace it watches.

What a platform engineer sees: the demo restaurants applied are on the menu and ``kubectl get rst``
says Synced; a price change reaches the menu; an outage of the platform shows as Synced=False and
heals; a deleted restaurant goes only once its removal is published; a restarted operator changes
nothing; the operator's role lets it do its work and nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiException
from prometheus_client.parser import text_string_to_metric_families

from services.catalog.manifest import load_manifests
from services.restaurant_operator import crd
from services.restaurant_operator.handlers import FINALIZER
from services.restaurant_operator.status import synced_condition
from services.runtime.auth import Role, TokenIssuer, load_or_create_secret
from tests.support import EXAMPLES, chart
from tests.support.kube_apiserver import ControlPlane, Process, as_dict, body, eventually_sync
from tests.support.server import Server, clean_env, free_port, running

WAIT_S = 60.0
OPERATOR_NAMESPACE = "baedal"  # the release's namespace: the chart puts the ServiceAccount there
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


class Menu:
    """The running ``baedal up``, as a client sees it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.token = TokenIssuer(load_or_create_secret(server.data_dir)).issue(Role.ADMIN, "test-admin")

    def _get(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.get(f"{self.server.url}{path}", headers=headers, timeout=10)

    def of(self, name: str) -> dict[str, Any] | None:
        response = self._get(f"/restaurants/{name}/menu")
        return dict(response.json()) if response.status_code == 200 else None

    def wait(self, name: str, check: Callable[[dict[str, Any] | None], bool], what: str) -> None:
        eventually_sync(lambda: check(self.of(name)), WAIT_S, f"{name}: {what}")

    def handled(self, consumer: str, outcome: str) -> float:
        labels = {"service": "order", "consumer": consumer, "outcome": outcome}
        return sum(
            sample.value
            for family in text_string_to_metric_families(self._get("/metrics").text)
            for sample in family.samples
            if sample.name == "baedal_events_handled_total" and labels.items() <= sample.labels.items()
        )


class Kubectl:
    """What the tests do with kubectl, through the official client, as the cluster's admin."""

    def __init__(self, kube: ControlPlane, api: client.ApiClient, namespace: str) -> None:
        self.kube = kube
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        return as_dict(
            self.objects.create_namespaced_custom_object(
                crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, document, field_validation="Strict"
            )
        )

    def patch(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        return as_dict(
            self.objects.patch_namespaced_custom_object(
                crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, name, changes
            )
        )

    def delete(self, name: str) -> None:
        self.objects.delete_namespaced_custom_object(crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, name)

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            found = as_dict(
                self.objects.get_namespaced_custom_object(crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, name)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def wait(self, name: str, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def holds() -> bool:
            seen["object"] = self.get(name)
            return seen["object"] is not None and condition(seen["object"])

        try:
            eventually_sync(holds, WAIT_S, f"{name}: {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc} (last seen: {(seen.get('object') or {}).get('status')})") from None
        return dict(seen["object"])

    def wait_synced(self, name: str, state: str = "True", reason: str | None = None) -> dict[str, Any]:
        def synced(obj: dict[str, Any]) -> bool:
            condition = synced_condition(obj.get("status")) or {}
            current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
            return current and condition.get("status") == state and reason in (None, condition.get("reason"))

        return self.wait(name, synced, f"Synced={state} {reason or ''}")

    def get_rst(self) -> dict[str, dict[str, Any]]:
        """``kubectl get rst``: the rows of the server-side table, by name."""
        path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{self.namespace}/{crd.PLURAL}"
        headers = {"Authorization": f"Bearer {self.kube.token}", "Accept": TABLE}
        response = httpx.get(f"{self.kube.url}{path}", headers=headers, verify=str(self.kube.ca_path), timeout=10)
        response.raise_for_status()
        table = response.json()
        names = [c["name"] for c in table["columnDefinitions"]]
        return {row["cells"][0]: dict(zip(names, row["cells"], strict=True)) for row in table["rows"]}

    def event_reasons(self, name: str) -> list[str]:
        events = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return [event.reason for event in events.items if event.reason]


class Operator:
    """``baedal operator`` as a process, with the operator ServiceAccount's kubeconfig."""

    def __init__(self, kubeconfig: Path, server: Server, namespace: str, logs: Path) -> None:
        self.kubeconfig = kubeconfig
        self.server = server
        self.namespace = namespace
        self.logs = logs
        self.process: Process | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        argv = [
            *(sys.executable, "-m", "services", "operator"),
            *("--url", self.server.url, "--data-dir", str(self.server.data_dir)),
            *("--namespace", self.namespace, "--liveness", liveness, "--log-level", "info"),
        ]
        # Quick retries, so an outage heals within the test's patience.
        env = clean_env(KUBECONFIG=str(self.kubeconfig), BAEDAL_OPERATOR_RETRY_BASE_S="0.2")
        env |= {"BAEDAL_OPERATOR_RETRY_CAP_S": "1"}
        process = Process("baedal operator", argv, self.logs / f"operator-{self.starts}.log", env)
        self.process = process

        def live() -> bool:
            try:
                return httpx.get(liveness, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually_sync(live, WAIT_S, "the operator answering its liveness probe", process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def check_alive(self) -> None:
        assert self.process is not None
        self.process.check_alive("the test ran")


def operator_rbac(namespace: str, watched: list[str]) -> list[dict[str, Any]]:
    """The chart's operator RBAC for a release in ``namespace`` watching ``watched``, as
    ``helm template ... --show-only templates/operator-rbac.yaml`` renders it."""
    values = {"operator": {"namespaces": watched}}
    rendered = chart.render(values, namespace=namespace)
    (text,) = [text for path, text in rendered.items() if path.endswith("templates/operator-rbac.yaml")]
    return [document for document in yaml.safe_load_all(text) if document]


@dataclasses.dataclass(frozen=True)
class Identity:
    """The operator's ServiceAccount as the chart creates it, and a kubeconfig holding its token."""

    namespace: str
    name: str
    kubeconfig: Path

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


def apply_rbac(kube: ControlPlane, admin: client.ApiClient, watched: str, path: Path) -> Identity:
    """The chart's operator RBAC applied (release namespace :data:`OPERATOR_NAMESPACE`, watching
    ``watched`` only), and a kubeconfig with a token of its ServiceAccount (TokenRequest)."""
    core = client.CoreV1Api(admin)
    rbac = client.RbacAuthorizationV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE)))
    documents = operator_rbac(OPERATOR_NAMESPACE, [watched])
    assert sorted(d["kind"] for d in documents) == ["ClusterRole", "RoleBinding", "ServiceAccount"]
    for document in documents:  # kubectl apply -f -
        kind, namespace = document["kind"], document["metadata"].get("namespace")
        if kind == "ServiceAccount":
            core.create_namespaced_service_account(namespace, body(document))
        elif kind == "ClusterRole":
            rbac.create_cluster_role(body(document))
        else:
            rbac.create_namespaced_role_binding(namespace, body(document))
    (account,) = [d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"]
    # kubectl create token: a bound token the API server signs with the fixture's service-account key.
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    answer = core.create_namespaced_service_account_token(account, OPERATOR_NAMESPACE, request)
    assert answer.status is not None and answer.status.token, "no token for the operator"
    return Identity(OPERATOR_NAMESPACE, account, kube.write_kubeconfig(path, answer.status.token, user=account))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``baedal up`` without its demo restaurants: only the operator puts restaurants on its menu."""
    base = tmp_path_factory.mktemp("platform")
    with running(Server(base / "data", clean_env(BAEDAL_LOAD_DEMO="false"))) as server:
        yield server


@pytest.fixture(scope="module")
def identity(
    kube: ControlPlane,
    admin: client.ApiClient,
    restaurant_crd: dict[str, Any],
    shop: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Identity:
    return apply_rbac(kube, admin, shop, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="module")
def shop(admin: client.ApiClient) -> str:
    """The namespace the operator watches (a deleted namespace would never empty: no controller-manager)."""
    name = f"shop-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.fixture(scope="module")
def operator(
    identity: Identity, server: Server, shop: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    running_operator = Operator(identity.kubeconfig, server, shop, tmp_path_factory.mktemp("operator-logs"))
    running_operator.start()
    try:
        yield running_operator
    finally:
        running_operator.stop()


@pytest.fixture
def platform(server: Server) -> Menu:
    if server.process is None or server.process.poll() is not None:
        server.start()  # a previous test's outage must not leak
    return Menu(server)


@pytest.fixture
def kubectl(kube: ControlPlane, admin: client.ApiClient, shop: str, operator: Operator) -> Iterator[Kubectl]:
    yield Kubectl(kube, admin, shop)
    operator.check_alive()


def example(name: str, as_name: str | None = None) -> dict[str, Any]:
    document = copy.deepcopy(next(m for m in load_manifests(EXAMPLES) if m["metadata"]["name"] == name))
    if as_name:
        document["metadata"]["name"] = as_name
    return document


def test_the_demo_restaurants_applied_are_on_the_menu_and_synced(kubectl: Kubectl, platform: Menu) -> None:
    examples = load_manifests(EXAMPLES)
    for document in examples:
        kubectl.apply(document)
    for document in examples:
        name = document["metadata"]["name"]
        obj = kubectl.wait_synced(name)
        assert obj["status"]["observedGeneration"] == 1 and obj["status"]["menuItems"] == len(document["spec"]["menu"])
        assert FINALIZER in obj["metadata"]["finalizers"]
        platform.wait(name, lambda menu: menu is not None, "on the menu")
        menu = platform.of(name)
        assert menu is not None and menu["restaurant"]["display_name"] == document["spec"]["displayName"]
        assert [(i["id"], i["price"]) for i in menu["items"]] == [
            (i["id"], i["price"]) for i in document["spec"]["menu"]
        ]
    rows = kubectl.get_rst()
    for document in examples:
        row = rows[document["metadata"]["name"]]
        assert (row["Open"], row["Items"], row["Synced"]) == (True, len(document["spec"]["menu"]), "True"), row


def test_a_price_change_reaches_the_menu(kubectl: Kubectl, platform: Menu) -> None:
    kubectl.apply(example("hanok-bibimbap", "k8s-bibimbap"))
    kubectl.wait_synced("k8s-bibimbap")
    menu = copy.deepcopy(example("hanok-bibimbap")["spec"]["menu"])
    menu[0]["price"] += 1000
    changed = kubectl.patch("k8s-bibimbap", {"spec": {"menu": menu}})
    assert changed["metadata"]["generation"] == 2
    obj = kubectl.wait_synced("k8s-bibimbap")
    assert obj["status"]["observedGeneration"] == 2
    platform.wait(
        "k8s-bibimbap", lambda m: m is not None and m["items"][0]["price"] == menu[0]["price"], "the new price"
    )


def test_an_outage_shows_as_not_synced_and_heals(kubectl: Kubectl, platform: Menu) -> None:
    kubectl.apply(example("seoul-chicken", "k8s-outage"))
    kubectl.wait_synced("k8s-outage")
    platform.server.stop()
    try:
        kubectl.patch("k8s-outage", {"spec": {"open": False}})
        obj = kubectl.wait_synced("k8s-outage", "False", "PublishFailed")
        assert "unreachable" in (synced_condition(obj["status"]) or {}).get("message", "")
        assert kubectl.get_rst()["k8s-outage"]["Synced"] == "False"
    finally:
        platform.server.start()
    kubectl.wait_synced("k8s-outage")
    platform.wait("k8s-outage", lambda m: m is not None and not m["restaurant"]["open"], "closed after the outage")


def test_a_deleted_restaurant_goes_only_once_its_removal_is_published(kubectl: Kubectl, platform: Menu) -> None:
    kubectl.apply(example("busan-tteokbokki", "k8s-gone"))
    kubectl.wait_synced("k8s-gone")
    platform.wait("k8s-gone", lambda menu: menu is not None, "on the menu")
    platform.server.stop()  # the removal cannot be published: the resource must stay
    try:
        kubectl.delete("k8s-gone")
        held = kubectl.wait_synced("k8s-gone", "False", "RemovalFailed")
        assert held["metadata"]["deletionTimestamp"] and FINALIZER in held["metadata"]["finalizers"]
    finally:
        platform.server.start()
    eventually_sync(lambda: kubectl.get("k8s-gone") is None, WAIT_S, "k8s-gone: deleted once the removal is published")
    assert platform.of("k8s-gone") is None, "off the menu"
    eventually_sync(lambda: "Removed" in kubectl.event_reasons("k8s-gone"), WAIT_S, "k8s-gone: a Removed event")


def test_a_restarted_operator_changes_nothing(kubectl: Kubectl, platform: Menu, operator: Operator) -> None:
    kubectl.apply(example("seoul-chicken", "k8s-restart"))
    kubectl.wait_synced("k8s-restart")
    platform.wait("k8s-restart", lambda menu: menu is not None, "on the menu")
    applied = platform.handled("order-menu-upserted", "success")
    operator.stop()
    operator.start()
    eventually_sync(
        lambda: "UpToDate" in kubectl.event_reasons("k8s-restart"), WAIT_S, "k8s-restart: the restarted operator's look"
    )
    assert platform.handled("order-menu-upserted", "success") == applied, "nothing published again"
    assert kubectl.get_rst()["k8s-restart"]["Synced"] == "True"


def test_the_operator_role_allows_its_work_and_nothing_else(
    admin: client.ApiClient, identity: Identity, shop: str
) -> None:
    """As the chart's operator ServiceAccount (impersonated by the admin): its verbs in the namespace
    it watches work; anything else is refused (403)."""
    with client.ApiClient(admin.configuration, "Impersonate-User", identity.user) as as_operator:
        objects = client.CustomObjectsApi(as_operator)
        assert isinstance(objects.list_namespaced_custom_object(crd.GROUP, crd.VERSION, shop, crd.PLURAL), dict)
        refused: dict[str, Callable[[], object]] = {
            "create a restaurant": lambda: objects.create_namespaced_custom_object(
                crd.GROUP, crd.VERSION, shop, crd.PLURAL, example("seoul-chicken", "k8s-intruder")
            ),
            "delete a restaurant": lambda: objects.delete_namespaced_custom_object(
                crd.GROUP, crd.VERSION, shop, crd.PLURAL, "seoul-chicken"
            ),
            "list restaurants of a namespace it does not watch": lambda: objects.list_namespaced_custom_object(
                crd.GROUP, crd.VERSION, "default", crd.PLURAL
            ),
            "list restaurants cluster-wide": lambda: objects.list_cluster_custom_object(
                crd.GROUP, crd.VERSION, crd.PLURAL
            ),
            "read secrets": lambda: client.CoreV1Api(as_operator).list_namespaced_secret(shop),
            "list cluster roles": lambda: client.RbacAuthorizationV1Api(as_operator).list_cluster_role(),
        }
        for action, call in refused.items():
            with pytest.raises(ApiException) as denied:
                call()
            assert denied.value.status == 403, f"{action}: {denied.value.status} {denied.value.reason}"
