"""The control-plane fixture itself: what it starts answers on loopback only, and a start that
fails half-way leaves nothing running."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.dapr.test_engines import be
from tests.support.kube_apiserver import ControlPlane, started


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_admin_kubeconfig_reaches_an_rbac_api_server_that_refuses_anonymous_requests(kube: ControlPlane) -> None:
    anonymous = httpx.get(f"{kube.url}/api", verify=str(kube.ca_path), timeout=10)
    assert anonymous.status_code == 401
    admin = httpx.get(
        f"{kube.url}/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin",
        headers={"Authorization": f"Bearer {kube.token}"},
        verify=str(kube.ca_path),
        timeout=10,
    )
    assert admin.status_code == 200, "RBAC's bootstrap roles are there"
    version = httpx.get(
        f"{kube.url}/version", headers={"Authorization": f"Bearer {kube.token}"}, verify=str(kube.ca_path)
    )
    assert version.json()["gitVersion"] == be.load_engine("kube-apiserver").version, "the pinned release"


def test_a_control_plane_whose_api_server_cannot_start_leaves_nothing_running(
    engines: dict[str, Path], tmp_path: Path
) -> None:
    plane = ControlPlane(tmp_path, {**engines, "kube-apiserver": Path("/bin/false")})
    with pytest.raises(AssertionError, match=r"kube-apiserver exited \(1\)"), started(plane):
        pass
    assert _refused(plane.etcd_port), "etcd was stopped"
    assert (tmp_path / "etcd.log").is_file(), "its log stays for a post-mortem"
