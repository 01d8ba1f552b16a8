"""The cluster ``baedal operator`` will watch, checked before kopf starts: kopf itself reports no
credentials or no API server with tracebacks in its log, and keeps retrying for minutes."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import kopf

from services.runtime.failures import CouldNotRun

CONNECT_TIMEOUT_S = 5.0


def check_cluster(timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """The API server's URL, once it accepts a connection; else :class:`CouldNotRun`."""
    server = _api_server()
    parts = urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout_s).close()
    except OSError as exc:
        raise CouldNotRun(f"could not reach the Kubernetes API at {server}: {exc}") from exc
    return server


def _api_server() -> str:
    """Where kopf's own login handlers point: the pod's service account, else the kubeconfig."""
    settings = kopf.OperatorSettings()
    try:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    except Exception as exc:  # whatever the parser trips on, the kubeconfig is unusable
        kubeconfig = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CouldNotRun(f"cannot use the kubeconfig {kubeconfig}: {type(exc).__name__}: {exc}") from exc
    if info is None or not info.server:
        raise CouldNotRun(
            "no Kubernetes cluster: no kubeconfig (KUBECONFIG or ~/.kube/config) and no in-cluster service account"
        )
    return info.server
