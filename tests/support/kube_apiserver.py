"""A real Kubernetes control plane for tests: etcd and kube-apiserver as processes on loopback.

Both are built from their pinned Go modules by ``make kube-apiserver`` (tools/etcd,
tools/kube-apiserver) into the engines cache; :func:`engine_paths` says where, and why not when
they are not built. :class:`ControlPlane` generates what the API server needs (a CA and a serving
certificate for 127.0.0.1, the service-account signing key, a static admin token), starts etcd with
a temporary data dir, then kube-apiserver with RBAC authorization, waits for ``/readyz`` and writes
a kubeconfig. :meth:`ControlPlane.stop` stops both, whatever happened before.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support import ROOT
from tests.support.server import free_port

ENGINES = ("etcd", "kube-apiserver")
BUILD_HINT = "make kube-apiserver"
# A cold start of kube-apiserver (all its post-start hooks, on two shared cores) takes 10-40 s.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
ADMIN_USER = "baedal-test-admin"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class EnginesMissing(Exception):
    """etcd or kube-apiserver is not built; the message says how to build them."""


def engine_paths() -> dict[str, Path]:
    """Where ``make kube-apiserver`` put each engine (scripts/build_engine.py --print-path)."""
    paths: dict[str, Path] = {}
    for name in ENGINES:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build_engine.py"), name, "--print-path"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise EnginesMissing(f"{name}: cannot tell where it is built: {done.stdout.strip()} {done.stderr.strip()}")
        path = Path(done.stdout.strip())
        if not path.is_file():
            raise EnginesMissing(f"{name} is not built ({path} is missing): run `{BUILD_HINT}` (many minutes once)")
        paths[name] = path
    return paths


def eventually_sync(condition: Callable[[], bool], timeout_s: float, what: str, process: Process | None = None) -> None:
    """Wait for ``condition`` until the deadline (and while ``process`` runs), else fail saying what."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None:
            process.check_alive(what)
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.2)


class Process:
    """A child process with its output in a log file, always stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def check_alive(self, what: str) -> None:
        if self.popen.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
            raise AssertionError(f"{self.name} exited ({self.popen.returncode}) while {what}; its log ends:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT_S)
        self._log.close()


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    ips: list[str] = [],  # noqa: B006  # read only
    dns: list[str] = [],  # noqa: B006
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if ips or dns:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.DNSName(d) for d in dns]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class ControlPlane:
    """etcd + kube-apiserver on 127.0.0.1, their files under ``workdir``."""

    def __init__(self, workdir: Path, engines: dict[str, Path]) -> None:
        self.workdir = workdir
        self.engines = engines
        self.processes: list[Process] = []
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.ca_path = workdir / "ca.crt"
        self.kubeconfig = workdir / "kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _pki(self) -> dict[str, Path]:
        """A CA, the serving certificate it signs, the service-account key pair, the token file."""
        files = {
            name: self.workdir / name
            for name in ("ca.crt", "serving.crt", "serving.key", "sa.key", "sa.pub", "tokens.csv")
        }
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("baedal-test-ca", ca_key, None)
        serving_key = ec.generate_private_key(ec.SECP256R1())
        serving = _certificate(
            "kube-apiserver", serving_key, (ca, ca_key), ips=["127.0.0.1"], dns=["localhost", "kubernetes"]
        )
        files["ca.crt"].write_bytes(_pem(ca))
        files["serving.crt"].write_bytes(_pem(serving))
        _write_key(files["serving.key"], serving_key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(files["sa.key"], sa_key)
        files["sa.pub"].write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # token,user,uid,"group1,group2": system:masters is bound to cluster-admin by RBAC's bootstrap policy.
        files["tokens.csv"].write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        files["tokens.csv"].chmod(0o600)
        return files

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        files = self._pki()
        self._start_etcd()
        self._start_apiserver(files)
        self.write_kubeconfig(self.kubeconfig, self.token)

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            str(self.engines["etcd"]),
            "--name=baedal-test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=baedal-test={peer}",
            "--initial-cluster-state=new",
            # A throwaway store: no fsync (much faster on a shared disk), a small quota.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=268435456",
            "--log-level=warn",
        ]
        etcd = Process("etcd", argv, self.workdir / "etcd.log")
        self.processes.append(etcd)

        def healthy() -> bool:
            try:
                return bool(httpx.get(f"{client}/health", timeout=2).json().get("health") == "true")
            except (httpx.HTTPError, ValueError):
                return False

        eventually_sync(healthy, START_TIMEOUT_S, "etcd becoming healthy", etcd)

    def _start_apiserver(self, files: dict[str, Path]) -> None:
        argv = [
            str(self.engines["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # No endpoints for the `kubernetes` Service (nothing in-cluster calls it here); since 1.37
            # the reconciler refuses a loopback advertise address.
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.port}",
            f"--tls-cert-file={files['serving.crt']}",
            f"--tls-private-key-file={files['serving.key']}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--token-auth-file={files['tokens.csv']}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={files['sa.pub']}",
            f"--service-account-signing-key-file={files['sa.key']}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--anonymous-auth=false",
            "--profiling=false",
            "--v=1",
        ]
        apiserver = Process("kube-apiserver", argv, self.workdir / "kube-apiserver.log")
        self.processes.append(apiserver)
        headers = {"Authorization": f"Bearer {self.token}"}

        def ready() -> bool:
            try:
                return (
                    httpx.get(f"{self.url}/readyz", headers=headers, verify=str(self.ca_path), timeout=2).text == "ok"
                )
            except httpx.HTTPError:
                return False

        eventually_sync(ready, START_TIMEOUT_S, "kube-apiserver becoming ready (/readyz)", apiserver)

    def write_kubeconfig(self, path: Path, token: str, user: str = ADMIN_USER) -> Path:
        """A kubeconfig for ``token`` (the admin's by default): kubectl, kopf and the Python client read it."""
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": "default"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        """Stop what was started, the API server first (it would log etcd's going away)."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


@contextmanager
def started(plane: ControlPlane) -> Iterator[ControlPlane]:
    """``plane`` started, and stopped on the way out (also when starting it failed half-way)."""
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def control_plane(workdir: Path, engines: dict[str, Path] | None = None) -> AbstractContextManager[ControlPlane]:
    """A started :class:`ControlPlane` of the built engines, its files in ``workdir``."""
    return started(ControlPlane(workdir, engines or engine_paths()))


def body(document: dict[str, Any]) -> Any:
    """A manifest as the official client's body argument: it sends a plain dict as it is (its
    annotations ask for its model classes)."""
    return document


def as_dict(answer: object) -> dict[str, Any]:
    """What CustomObjectsApi returns (typed ``object``): the JSON object the server answered."""
    assert isinstance(answer, dict), answer
    return answer


def require_kube() -> bool:
    """``BAEDAL_REQUIRE_KUBE=1`` (``make e2e-k8s``): missing engines fail the tests instead of skipping them."""
    return os.environ.get("BAEDAL_REQUIRE_KUBE") == "1"
