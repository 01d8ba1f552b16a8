"""``baedal serve PROCESS``: the one verb the container image runs, for every process of the Dapr
deployment. Each test starts it as a real process, the way the chart's Deployments do, with no
``BAEDAL_RUNTIME`` in the environment (the verb picks the Dapr runtime itself)."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from services.entrypoints.bootstrap import SERVICES
from services.entrypoints.cli import DEFAULT_PORTS, Process, app
from services.runtime.auth import TokenIssuer
from services.runtime.process import spawn_child
from tests.support import ROOT
from tests.support.fake_dapr import FakeDapr
from tests.support.server import clean_env, free_port

pytestmark = pytest.mark.slow
runner = CliRunner()


def spawn(process: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "services", "serve", process, "--port", str(port), "--log-level", "warning"]
    return spawn_child(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited {process.returncode}: {log.read_text()[-3000:]}"
        try:
            response = httpx.get(url, timeout=1)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200: {log.read_text()[-3000:]}")


@contextmanager
def stopped_at_exit(processes: dict[str, subprocess.Popen[bytes]]) -> Iterator[dict[str, int]]:
    """SIGTERM each process at the end, as the kubelet does; the exit codes are filled in then."""
    codes: dict[str, int] = {}
    try:
        yield codes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for name, process in processes.items():
            try:
                codes[name] = process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(5)


def test_a_service_and_the_gateway_run_behind_their_sidecars(tmp_path: Path) -> None:
    fake = FakeDapr()
    ports = {"order": free_port(), "gateway": free_port()}
    for name, port in ports.items():
        fake.add_app(name, port)
    secret = secrets.token_urlsafe(32)
    processes = {}
    for name, port in ports.items():  # before the fake's gRPC threads exist: fork() and gRPC do not mix
        env = clean_env(BAEDAL_DATA_DIR=str(tmp_path / "data"), BAEDAL_JWT_SECRET=secret, **fake.sidecars[name].env())
        processes[name] = spawn(name, port, env, tmp_path / f"{name}.log")
    fake.start()
    try:
        with stopped_at_exit(processes) as codes:
            order = wait_for(f"http://127.0.0.1:{ports['order']}/readyz", processes["order"], tmp_path / "order.log")
            assert order.json()["services"] == {"order": True}, "the order service on its Dapr state store"
            gateway = f"http://127.0.0.1:{ports['gateway']}"
            assert wait_for(f"{gateway}/readyz", processes["gateway"], tmp_path / "gateway.log").json()["services"] == {
                "sidecar": True
            }
            token = TokenIssuer(secret).issue("customer", "cust-serve")
            answer = httpx.get(f"{gateway}/orders/no-such-order", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 404, answer.text
            assert answer.json()["code"] == "ORDER_NOT_FOUND", "forwarded to the order service, which checked the token"
        # uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop exits 0 or -SIGTERM.
        assert set(codes.values()) <= {0, -signal.SIGTERM}, codes
        assert not [name for name in ports if "Traceback" in (tmp_path / f"{name}.log").read_text()]
    finally:
        fake.stop()


def test_the_card_gateway_simulator_needs_no_sidecar(tmp_path: Path) -> None:
    port = free_port()
    process = spawn("paygate", port, clean_env(), tmp_path / "paygate.log")
    with stopped_at_exit({"paygate": process}):
        wait_for(f"http://127.0.0.1:{port}/healthz", process, tmp_path / "paygate.log")
        charge = {"idempotency_key": "order-1", "card_token": "tok_visa", "amount": 15000}
        answer = httpx.post(f"http://127.0.0.1:{port}/charges", json=charge)
        assert (answer.status_code, answer.json()["status"]) == (201, "approved")


def test_the_operator_publishes_through_its_sidecar_so_it_needs_only_the_cluster(tmp_path: Path) -> None:
    """On the embedded runtime the operator would first look for a platform on 127.0.0.1:8000; here
    the first thing it needs is the Kubernetes API, and it says so in one line."""
    closed = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{closed}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    env = {"KUBECONFIG": str(kubeconfig), "BAEDAL_RUNTIME": "embedded", "BAEDAL_DATA_DIR": str(tmp_path / "none")}
    result = runner.invoke(app, ["serve", "operator"], env=env)
    assert result.exit_code == 2, result.output
    assert f"could not reach the Kubernetes API at http://127.0.0.1:{closed}" in result.output


def test_an_unknown_process_is_a_usage_error_that_lists_the_processes() -> None:
    result = runner.invoke(app, ["serve", "kitchen"])
    assert result.exit_code == 2
    assert "kitchen" in result.output
    for process in Process:
        assert process.value in result.output


def test_the_default_ports_are_those_of_the_multi_app_run_file_and_never_collide() -> None:
    """``baedal serve order`` listens where ``dapr run -f .`` tells daprd to find the order app."""
    run = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    assert {app["appID"]: app["appPort"] for app in run["apps"]} == {
        p.value: DEFAULT_PORTS[p] for p in Process if p.value in SERVICES
    }
    assert set(DEFAULT_PORTS) == set(Process)
    assert len(set(DEFAULT_PORTS.values())) == len(DEFAULT_PORTS), "every process on one machine at once"


def test_in_a_pod_baedal_token_signs_with_the_clusters_key(tmp_path: Path) -> None:
    """NOTES.txt: `kubectl exec deploy/baedal-order -- baedal token ...`; the pod has BAEDAL_JWT_SECRET
    (from the chart's Secret) and no data dir with a secret of its own."""
    key = secrets.token_urlsafe(32)
    env = {"BAEDAL_JWT_SECRET": key, "BAEDAL_DATA_DIR": str(tmp_path / "empty")}
    result = runner.invoke(app, ["token", "customer", "cust-1"], env=env)
    assert result.exit_code == 0, result.output
    principal = TokenIssuer(key).verify(result.output.strip())
    assert (principal.subject, principal.role.value) == ("cust-1", "customer")
    result = runner.invoke(app, ["token", "customer", "cust-1"], env={**env, "BAEDAL_JWT_SECRET": None})
    assert result.exit_code == 2 and "no signing secret" in result.output
