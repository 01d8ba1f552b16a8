"""Services on the Dapr runtime as real processes (``baedal serve <name>``, as the chart runs them), each with
its own fake sidecar, and the Dapr gateway in front of them (``services.entrypoints.gateway_dapr``), which
reaches them through Dapr service invocation."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from services.runtime.auth import TokenIssuer
from services.runtime.process import spawn_child
from tests.support.fake_dapr import FakeDapr
from tests.support.server import free_port, serve_command


class DaprCluster:
    def __init__(
        self,
        data_dir: Path,
        services: Sequence[str],
        binding_urls: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        **fake_options: Any,
    ) -> None:
        self.data_dir = data_dir
        self.services = list(services)
        self.secret = secrets.token_urlsafe(32)
        self.tokens = TokenIssuer(self.secret)
        self.fake = FakeDapr(binding_urls=binding_urls, **fake_options)
        self.ports = {name: free_port() for name in [*self.services, "gateway"]}
        self.env = env or {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self) -> DaprCluster:
        for name in self.ports:
            self.fake.add_app(name, self.ports[name])
        for name in self.ports:  # before the fake's gRPC threads exist: fork() and gRPC do not mix
            self.processes[name] = self._spawn(name)
        self.fake.start()
        for name in self.ports:
            self.wait_ready(name)
        return self

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.fake.sidecars[name].env(),
            "BAEDAL_RUNTIME": "dapr",
            "BAEDAL_DATA_DIR": str(self.data_dir),
            "BAEDAL_JWT_SECRET": self.secret,
            **self.env,
        }
        command = serve_command(name, self.ports[name])
        log = (self.data_dir / f"{name}.log").open("ab")
        return spawn_child(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.processes[name].poll() is None, f"{name} exited: {self.log(name)}"
            try:
                if httpx.get(f"{self.url(name)}/readyz", timeout=1).status_code == 200:
                    self.fake.subscribe_now(name)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{name} did not become ready: {self.log(name)}")

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def client(self) -> httpx.AsyncClient:
        """A client of the whole platform, through the gateway."""
        return httpx.AsyncClient(base_url=self.url("gateway"), timeout=30)

    def stop(self) -> dict[str, int]:
        """SIGTERM every process (a graceful shutdown), then stop the sidecars; the exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        codes: dict[str, int] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(5)
        self.fake.stop()
        return codes
