"""A real ``baedal up`` process for tests that need one (crash, CLI), and a stand-in platform
whose answers a test chooses."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

# Ports are chosen below Linux's ephemeral range (32768-60999): a port the kernel hands out for
# bind(0) can be taken by any outgoing connection (a database client, an HTTP pool) in the moment
# between choosing it and the server binding it, which failed CI once. Outgoing connections never
# use these, and no port is handed out twice in one process.
_PORTS = range(20000, 32768)
_handed_out: set[int] = set()
_next = random.Random(os.getpid()).randrange(len(_PORTS))


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on, outside the range outgoing connections draw from."""
    global _next
    for _ in range(len(_PORTS)):
        port = _PORTS[_next % len(_PORTS)]
        _next += 1
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1}")


def serve_command(process: str, port: int) -> list[str]:
    """One process of the Dapr deployment, started as the chart starts it (``baedal serve``): the
    same uvicorn settings, among them the keep-alive that outlasts a client's idle connections (a
    plain ``uvicorn`` closes them after 5 s, racing the client's next request)."""
    command = [sys.executable, "-m", "services", "serve", process, "--port", str(port)]
    return [*command, "--log-level", "warning", "--graceful-shutdown", "5"]


class Server:
    """A ``baedal up`` process that is always stopped, whatever happens in the test."""

    def __init__(self, data_dir: Path, env: dict[str, str], host: str = "127.0.0.1", flags: bool = True) -> None:
        self.data_dir = data_dir
        self.env = env
        self.host = host
        self.port = free_port()
        # False: host, port and data dir reach ``baedal up`` as BAEDAL_HOST, BAEDAL_PORT, BAEDAL_DATA_DIR.
        self.flags = flags
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._wait_port_free()  # else a dying engine of the last start could answer /readyz
        where = {"host": self.host, "port": str(self.port), "data-dir": str(self.data_dir)}
        command = [sys.executable, "-m", "services", "up", "--log-level", "warning"]
        env = self.env
        if self.flags:
            command += [arg for name, value in where.items() for arg in (f"--{name}", value)]
        else:
            env = env | {f"BAEDAL_{name.replace('-', '_').upper()}": value for name, value in where.items()}
        log = (self.data_dir.parent / f"server-{self.port}.log").open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "baedal up exited during start-up"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("baedal up did not become ready")

    def _wait_port_free(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex((self.host, self.port)) != 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"something still listens on port {self.port}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without its ``BAEDAL_*`` settings, plus these."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BAEDAL_")} | settings


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# What a stand-in platform answers a path it has no answer for: a server error.
BROKEN = (500, {"type": "about:blank", "status": 500, "detail": "the database is down"})


@contextmanager
def stand_in(answers: dict[str, tuple[int, Any]] | None = None) -> Iterator[str]:
    """An HTTP server (its URL) answering each path with a canned status and JSON body, any other
    path with :data:`BROKEN`, whatever the method and token."""
    table = answers or {}

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            status, body = table.get(self.path.split("?")[0], BROKEN)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that hung up mid-answer (it gave up after another request failed)

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
