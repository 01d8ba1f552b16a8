"""A real Kubernetes API for the tests of this directory: etcd and kube-apiserver, built by
``make kube-apiserver`` and started once per session (tests/support/kube_apiserver.py).

Without the built engines the tests skip and say how to build them; with ``BAEDAL_REQUIRE_KUBE=1``
(``make e2e-k8s``) they fail instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from services.restaurant_operator import crd
from tests.support.kube_apiserver import (
    ControlPlane,
    EnginesMissing,
    body,
    control_plane,
    engine_paths,
    require_kube,
)

CRD_ESTABLISHED_S = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the control plane are marked ``kube`` (``make e2e-k8s`` runs them) and ``slow``."""
    for item in items:
        if {"kube", "engines"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kube)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def engines() -> dict[str, Path]:
    """The built etcd and kube-apiserver; else skip saying how to build them (fail: BAEDAL_REQUIRE_KUBE=1)."""
    try:
        return engine_paths()
    except EnginesMissing as exc:
        if require_kube():
            pytest.fail(f"BAEDAL_REQUIRE_KUBE=1: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def kube(engines: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver on loopback for the whole session; stopped at its end."""
    with control_plane(tmp_path_factory.mktemp("kube"), engines) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin(kube: ControlPlane) -> Iterator[client.ApiClient]:
    """The official Python client, as the cluster's admin (the kubeconfig the fixture wrote)."""
    api = config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]  # untyped
    with api:
        yield api


@pytest.fixture(scope="session")
def restaurant_crd(admin: client.ApiClient) -> dict[str, Any]:
    """The chart's CRD, installed (``kubectl apply -f charts/baedal/crds/``) and Established."""
    extensions = client.ApiextensionsV1Api(admin)
    definition = crd.load_crd()
    extensions.create_custom_resource_definition(body(definition))
    deadline = time.monotonic() + CRD_ESTABLISHED_S
    while True:
        current = extensions.read_custom_resource_definition(definition["metadata"]["name"])
        conditions = {c.type: c.status for c in ((current.status and current.status.conditions) or [])}
        if conditions.get("Established") == "True":
            return definition
        assert time.monotonic() < deadline, f"the CRD was not Established within {CRD_ESTABLISHED_S:g} s: {conditions}"
        time.sleep(0.2)
