"""Real ``daprd`` sidecars for the tests: every Baedal app as its own process, each with its own
daprd in self-hosted mode, on loopback only, on Redis and PostgreSQL from ``make services``.

One :class:`DaprdCluster` per test session:

- a **per-run PostgreSQL database** (``baedal_e2e_<run>``: the state stores' tables and the services'
  SQL schemas) and a **per-run Redis database** (``redisDB`` 1–15, claimed with a marker key), so two
  runs on one machine never see each other's data; both are dropped at the end;
- ``resources/``: the project's ``components/*.yaml`` (daprd does not read subdirectories), with
  only their addresses changed: connection strings to the run's database, ``redisDB``, the bindings'
  URLs to this run's card-gateway simulator and notification webhook;
- ``config.yaml``: ``components/config/configuration.yaml`` plus a name resolution of our own: the
  ``kubernetes`` resolver (compiled into daprd's stable components; it needs no cluster) with a
  template mapping each app id to its sidecar's internal gRPC port on 127.0.0.1. mDNS would announce
  the apps on every interface and mix two runs' sidecars up;
- every port below 32768 (Linux hands out 32768–60999 to outgoing connections), every listener on
  127.0.0.1: the Dapr API (``--dapr-listen-addresses``), the internal gRPC API, metrics, the apps;
  no mTLS, no placement, no scheduler.

The processes are tied to the test process (they get SIGTERM if it dies), and :meth:`stop` ends
every one it started, also after a failure.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from services.runtime.auth import TokenIssuer
from services.runtime.process import spawn_child
from tests.support import ROOT
from tests.support.server import free_port, serve_command

COMPONENTS = ROOT / "components"
CONFIGURATION = COMPONENTS / "config" / "configuration.yaml"
PG_ADMIN_URL = os.environ.get("BAEDAL_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
REDIS = ("127.0.0.1", 6379)
REQUIRE = os.environ.get("BAEDAL_REQUIRE_DAPRD") == "1"

# The processes behind a sidecar of their own (``baedal serve``); the operator is started apart.
APPS = ("order", "payment", "restaurant", "delivery", "notification", "gateway")
# Apps that read topics: ready only once their sidecar subscribed for them.
SUBSCRIBERS = ("order", "payment", "restaurant", "delivery", "notification")


# ---------------------------------------------------------------------------------------- prerequisites


def _build_engine() -> Any:
    spec = importlib.util.spec_from_file_location("build_engine", ROOT / "scripts" / "build_engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_engine", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@functools.cache
def daprd_binary() -> Path | None:
    """The daprd ``make daprd`` built, or None when it is not built (or Go is missing)."""
    try:
        be = _build_engine()
        path: Path = be.binary_path(be.load_engine("daprd"), be.go_target())
    except Exception:
        return None
    return path if path.is_file() else None


class Resp:
    """Just enough of a Redis client (RESP2 over a socket) for the tests' handful of commands."""

    def __init__(self, db: int | None = None, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(REDIS, timeout=timeout)
        self.buffer = b""
        if db is not None:
            self.command("SELECT", str(db))

    def close(self) -> None:
        self.sock.close()

    def command(self, *args: str) -> Any:
        encoded = [a.encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in encoded))
        return self._reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            while len(self.buffer) < length + 2:
                self.buffer += self.sock.recv(65536)
            data, self.buffer = self.buffer[:length], self.buffer[length + 2 :]
            return data.decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise RedisError(f"unexpected reply {line[:40]!r}")


class RedisError(Exception):
    pass


def redis_command(*args: str, db: int | None = None) -> Any:
    """One Redis command (in database ``db``), on a connection of its own."""
    conn = Resp(db)
    try:
        return conn.command(*args)
    finally:
        conn.close()


def redis_problem() -> str | None:
    try:
        reply = redis_command("PING")
    except (OSError, RedisError) as exc:
        return f"no Redis on {REDIS[0]}:{REDIS[1]} ({exc})"
    return None if reply == "PONG" else f"{REDIS[0]}:{REDIS[1]} answered {reply!r} to PING"


def postgres_problem() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return f"no PostgreSQL at {PG_ADMIN_URL} ({str(exc).strip()})"


def missing_prerequisite() -> str | None:
    """Why the real-sidecar tests cannot run here, or None."""
    if daprd_binary() is None:
        return "daprd is not built: run `make daprd` (builds it from its Go module, many minutes the first time)"
    for problem in (redis_problem(), postgres_problem()):
        if problem:
            return f"{problem}: run `make services`"
    return None


# ---------------------------------------------------------------------------------------- ports


@dataclass
class Ports:
    app: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    internal: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)


# ---------------------------------------------------------------------------------------- processes


class Proc:
    """One child process with its log file; started again with the same command and environment."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        # The child dies with the thread that started it (PR_SET_PDEATHSIG is per thread): a child
        # started from asyncio.to_thread would get SIGTERM when the executor's thread ends.
        assert threading.current_thread() is threading.main_thread(), f"start {self.name} from the main thread"
        assert not self.alive, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.process = spawn_child(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout: float) -> int | None:
        """The exit code once it stopped; SIGKILL after ``timeout``."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""


# ---------------------------------------------------------------------------------------- the run's data


CLAIM = "baedal-e2e-claim"  # the run that uses a Redis database
ALIVE = "baedal-e2e-alive"  # expires: a claim without it is a killed run's
CLAIM_TTL_S = 3600


class RunData:
    """The run's own PostgreSQL database and Redis database, dropped at the end."""

    def __init__(self, run_id: str) -> None:
        self.pg_database = f"baedal_e2e_{run_id}"
        self.redis_db: int | None = None
        self._claim = f"baedal-e2e-claim:{run_id}"

    @property
    def pg_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.pg_database}"

    @property
    def pg_dsn(self) -> str:
        """daprd's PostgreSQL components take a keyword connection string."""
        return f"host=127.0.0.1 port=5432 user=postgres database={self.pg_database}"

    def create(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.pg_database}"')
        for db in range(1, 16):  # an empty Redis database, claimed with a marker so no other run takes it
            if redis_command("DBSIZE", db=db) != 0:
                if redis_command("EXISTS", CLAIM, db=db) and not redis_command("EXISTS", ALIVE, db=db):
                    redis_command("FLUSHDB", db=db)  # left by a run that was killed over an hour ago
                else:
                    continue
            if redis_command("SET", CLAIM, self._claim, "NX", db=db) == "OK":
                redis_command("SET", ALIVE, "1", "EX", str(CLAIM_TTL_S), db=db)
                self.redis_db = db
                return
        raise RuntimeError("no empty Redis database (1–15) left for this run")

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            if self.redis_db is not None:
                redis_command("FLUSHDB", db=self.redis_db)
        with contextlib.suppress(psycopg.Error), psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')


def write_resources(
    target: Path, data: RunData, binding_urls: dict[str, str], overrides: dict[str, dict[str, str]] | None = None
) -> None:
    """The project's components with this run's addresses (and any test ``overrides`` of metadata)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(COMPONENTS.glob("*.yaml")):
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for doc in documents:
            if doc.get("kind") != "Component":
                continue
            name, kind = doc["metadata"]["name"], doc["spec"]["type"]
            metadata: dict[str, str] = {m["name"]: str(m.get("value", "")) for m in doc["spec"].get("metadata", [])}
            if kind.startswith("state.postgresql"):
                metadata["connectionString"] = data.pg_dsn
            if kind.startswith("pubsub.redis") or kind.startswith("state.redis"):
                metadata["redisHost"] = f"{REDIS[0]}:{REDIS[1]}"
                metadata["redisDB"] = str(data.redis_db)
            if name in binding_urls:
                metadata["url"] = binding_urls[name]
            metadata |= (overrides or {}).get(name, {})
            doc["spec"]["metadata"] = [{"name": k, "value": v} for k, v in metadata.items()]
        (target / path.name).write_text(yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True))


def write_configuration(target: Path, internal_ports: dict[str, int]) -> None:
    """The project's Configuration, with name resolution to each sidecar's internal port."""
    config = yaml.safe_load(CONFIGURATION.read_text())
    branches = "".join(
        f'{"if" if i == 0 else "else if"} eq .ID "{app}"}}}}127.0.0.1:{port}{{{{'
        for i, (app, port) in enumerate(internal_ports.items())
    )
    template = "{{" + branches + "else}}127.0.0.1:1{{end}}"
    config["spec"]["nameResolution"] = {"component": "kubernetes", "configuration": {"template": template}}
    target.write_text(yaml.safe_dump(config, sort_keys=False))


# ---------------------------------------------------------------------------------------- the cluster


@dataclass
class App:
    name: str
    ports: Ports
    sidecar: Proc
    app: Proc | None  # None: a sidecar without an app process of ours (started by the test)


class DaprdCluster:
    def __init__(
        self,
        base: Path,
        binding_urls: dict[str, str],
        apps: Iterable[str] = (*APPS, "operator"),
        extra_env: dict[str, str] | None = None,
        overrides: dict[str, dict[str, str]] | None = None,
        log_level: str = "info",
    ) -> None:
        daprd = daprd_binary()
        assert daprd is not None, missing_prerequisite()
        self.base = base
        self.run_id = uuid.uuid4().hex[:10]
        self.data = RunData(self.run_id)
        self.secret = secrets.token_urlsafe(32)
        self.tokens = TokenIssuer(self.secret)
        self.binding_urls = binding_urls
        self.overrides = overrides or {}
        self.extra_env = extra_env or {}
        self.daprd = daprd
        self.log_level = log_level
        self.names = list(apps)
        self.apps: dict[str, App] = {}
        # What scenarios put on dead-letter topics on purpose (topic → messages since the start).
        self.expected_dead_letters: dict[str, int] = {}
        self.resources = base / "resources"
        self.config = base / "config.yaml"
        self.logs = base / "logs"

    # ------------------------------------------------------------------ set-up

    @property
    def cli_data_dir(self) -> Path:
        """A data dir holding the run's signing secret, for ``baedal token/apply/audit --data-dir``."""
        return self.base / "cli"

    def prepare(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cli_data_dir.mkdir(parents=True, exist_ok=True)
        (self.cli_data_dir / "jwt-secret").write_text(self.secret)
        (self.cli_data_dir / "jwt-secret").chmod(0o600)
        self.data.create()
        write_resources(self.resources, self.data, self.binding_urls, self.overrides)
        ports = {name: Ports() for name in self.names}
        write_configuration(self.config, {name: p.internal for name, p in ports.items()})
        for name in self.names:
            self.apps[name] = App(name, ports[name], self._sidecar(name, ports[name]), self._app(name, ports[name]))

    def _sidecar(self, name: str, ports: Ports) -> Proc:
        command = [
            str(self.daprd),
            "--app-id", name,
            "--mode", "standalone",
            "--resources-path", str(self.resources),
            "--config", str(self.config),
            "--dapr-listen-addresses", "127.0.0.1",
            "--dapr-http-port", str(ports.http),
            "--dapr-grpc-port", str(ports.grpc),
            "--dapr-internal-grpc-port", str(ports.internal),
            "--dapr-internal-grpc-listen-address", "127.0.0.1",
            "--metrics-port", str(ports.metrics),
            "--metrics-listen-address", "127.0.0.1",
            "--log-level", self.log_level,
            "--dapr-graceful-shutdown-seconds", "3",
        ]  # fmt: skip
        if name in APPS:
            command += ["--app-port", str(ports.app), "--app-channel-address", "127.0.0.1", "--app-protocol", "http"]
            # An app that is not ready (/readyz: it cannot reach its database or its sidecar) is
            # unsubscribed until it is again (as in dapr.yaml): its messages wait for it rather
            # than use up their retries and end on the dead-letter topic.
            command += ["--enable-app-health-check", "--app-health-check-path", "/readyz"]
            command += ["--app-health-probe-interval", "1", "--app-health-probe-timeout", "1000"]
            command += ["--app-health-threshold", "2"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAPR_", "BAEDAL_", "APP_"))}
        return Proc(f"daprd-{name}", command, env, self.logs / f"daprd-{name}.log")

    def app_env(self, name: str, ports: Ports) -> dict[str, str]:
        """An app process's environment: its sidecar's ports and the run's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAPR_", "BAEDAL_", "APP_"))}
        env |= {"DAPR_HTTP_PORT": str(ports.http), "DAPR_GRPC_PORT": str(ports.grpc), "APP_ID": name}
        return env | {
            "BAEDAL_RUNTIME": "dapr",
            "BAEDAL_DATA_DIR": str(self.base / "data" / name),
            "BAEDAL_JWT_SECRET": self.secret,
            "BAEDAL_DATABASE_URL": self.data.pg_url,
            "BAEDAL_DAPR_SIDECAR_TIMEOUT_S": "60",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def _app(self, name: str, ports: Ports) -> Proc | None:
        if name not in APPS:
            return None
        command = serve_command(name, ports.app)
        (self.base / "data" / name).mkdir(parents=True, exist_ok=True)
        return Proc(name, command, self.app_env(name, ports), self.logs / f"{name}.log")

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120.0) -> DaprdCluster:
        self.prepare()
        for app in self.apps.values():
            app.sidecar.start()
            if app.app is not None:
                app.app.start()
        deadline = time.monotonic() + timeout
        for name in self.apps:
            self.wait_ready(name, deadline - time.monotonic())
        return self

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process (apps first, then sidecars); SIGKILL what is still there after 15 s."""
        codes: dict[str, int | None] = {}
        try:
            procs = [a.app for a in self.apps.values() if a.app is not None]
            for proc in procs:
                proc.terminate()
            for proc in procs:
                codes[proc.name] = proc.wait(15)
            sidecars = [a.sidecar for a in self.apps.values()]
            for proc in sidecars:
                proc.terminate()
            for proc in sidecars:
                codes[proc.name] = proc.wait(15)
        finally:
            for app in self.apps.values():
                for left in (app.app, app.sidecar):
                    if left is not None:
                        left.kill()
            self.data.drop()
        return codes

    # ------------------------------------------------------------------ readiness

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.apps[name].ports.app}"

    def sidecar_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.apps[name].ports.http}"

    def ready(self, name: str) -> bool:
        """The app answers /readyz, and its sidecar is healthy and has subscribed for it."""
        app = self.apps[name]
        try:
            if app.app is not None and httpx.get(f"{self.url(name)}/readyz", timeout=2).status_code != 200:
                return False
            path = "/v1.0/healthz" if app.app is not None else "/v1.0/healthz/outbound"
            if httpx.get(f"{self.sidecar_url(name)}{path}", timeout=2).status_code != 204:
                return False
            if name in SUBSCRIBERS:
                metadata = httpx.get(f"{self.sidecar_url(name)}/v1.0/metadata", timeout=2).json()
                return bool(metadata.get("subscriptions"))
        except httpx.HTTPError:
            return False
        return True

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        app = self.apps[name]
        deadline = time.monotonic() + max(timeout, 1.0)
        while not self.ready(name):
            for proc in (app.sidecar, app.app):
                if proc is not None and not proc.alive:
                    raise AssertionError(f"{proc.name} exited during start-up:\n{proc.log()}")
            if time.monotonic() > deadline:
                logs = "\n".join(p.log(2000) for p in (app.sidecar, app.app) if p is not None)
                raise AssertionError(f"{name} did not become ready within {timeout:.0f} s:\n{logs}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ faults

    def kill_app(self, name: str) -> None:
        proc = self.apps[name].app
        assert proc is not None
        proc.kill()

    def kill_sidecar(self, name: str) -> None:
        self.apps[name].sidecar.kill()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start whatever of ``name`` is not running (its app, its sidecar), and wait until ready."""
        app = self.apps[name]
        for proc in (app.sidecar, app.app):
            if proc is not None and not proc.alive:
                proc.start()
        self.wait_ready(name, timeout)

    def wait_all_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for name in self.apps:
            self.wait_ready(name, deadline - time.monotonic())

    # ------------------------------------------------------------------ inspection

    def client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        """A client of the whole platform, through the gateway and its sidecar."""
        return httpx.AsyncClient(base_url=self.url("gateway"), timeout=timeout)

    def sidecar_env(self, name: str) -> dict[str, str]:
        """How a process of the test's own finds ``name``'s sidecar (the operator's, say)."""
        ports = self.apps[name].ports
        return {"DAPR_HTTP_PORT": str(ports.http), "DAPR_GRPC_PORT": str(ports.grpc)}

    def sidecar_log(self, name: str) -> str:
        return self.apps[name].sidecar.log_path.read_text(errors="replace")

    def sidecar_lines(self, name: str, *needles: str) -> list[str]:
        """The lines of a sidecar's log that contain every one of ``needles``."""
        return [line for line in self.sidecar_log(name).splitlines() if all(n in line for n in needles)]

    def metrics(self, name: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.apps[name].ports.metrics}/metrics", timeout=5).text

    def redis(self, *args: str) -> Any:
        return redis_command(*args, db=self.data.redis_db)

    def stream_backlog(self) -> dict[str, tuple[int, int]]:
        """Every consumer group of every stream of the run (the business topics, the outbox's
        internal topics, dead letters): (entries not yet read by the group, read but not acked)."""
        conn = Resp(self.data.redis_db)
        try:
            cursor, streams = "0", []
            while True:
                cursor, keys = conn.command("SCAN", cursor, "COUNT", "1000", "TYPE", "stream")
                streams += keys
                if cursor == "0":
                    break
            backlog: dict[str, tuple[int, int]] = {}
            for stream in streams:
                last_id: str | None = None
                for group in conn.command("XINFO", "GROUPS", stream):
                    info = dict(zip(group[::2], group[1::2], strict=True))
                    lag = info.get("lag")
                    if lag is None:  # Redis cannot tell (entries were trimmed): compare the ids
                        if last_id is None:
                            fields = conn.command("XINFO", "STREAM", stream)
                            last_id = dict(zip(fields[::2], fields[1::2], strict=True))["last-generated-id"]
                        lag = 0 if info["last-delivered-id"] == last_id else 1
                    backlog[f"{stream}/{info['name']}"] = (int(lag), int(info["pending"]))
            return backlog
        finally:
            conn.close()

    def pending(self, stream: str, group: str, count: int = 5) -> list[str]:
        """What a consumer group holds unacknowledged: id, idle time, deliveries, the start of the message."""
        conn = Resp(self.data.redis_db)
        try:
            found = []
            for message_id, _, idle_ms, deliveries in conn.command("XPENDING", stream, group, "-", "+", str(count)):
                entries = conn.command("XRANGE", stream, message_id, message_id)
                body = str(entries[0][1])[:300] if entries else "(gone)"
                found.append(f"{message_id} idle {idle_ms / 1000:.0f} s, delivered {deliveries}x: {body}")
            return found
        finally:
            conn.close()

    def pg(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.data.pg_url, autocommit=True) as conn:
            return list(conn.execute(sql, params).fetchall())


@contextlib.contextmanager
def running(cluster: DaprdCluster) -> Iterator[DaprdCluster]:
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def wait_for(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll a synchronous condition until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(poll)
