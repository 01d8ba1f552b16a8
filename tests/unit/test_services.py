"""``make services`` (scripts/backing_services.py): the backing services the tests need, provided by the project."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from tests.support import ROOT
from tests.support.platform import PG_URL, postgres_problem

SCRIPT = ROOT / "scripts" / "backing_services.py"
REDIS_URL = os.environ.get("BAEDAL_TEST_REDIS_URL") or "redis://127.0.0.1:6379"
PROVIDE_REDIS = "run `make services` (root and apt), or set BAEDAL_TEST_REDIS_URL=redis://HOST:PORT"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baedal_services_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def redis_ping(url: str) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


@pytest.fixture
def redis_url() -> str:
    """A Redis server for the tests, or a skip that says how to provide one."""
    try:
        redis_ping(REDIS_URL)
    except OSError as exc:
        pytest.skip(f"Redis at {REDIS_URL} does not answer ({exc}): {PROVIDE_REDIS}")
    return REDIS_URL


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_a_second_run_finds_every_service_up_and_changes_nothing(redis_url: str) -> None:
    if (problem := postgres_problem()) or urlsplit(PG_URL).port != 5432:
        pytest.skip(f"needs the PostgreSQL that `make services` provides on 127.0.0.1:5432 ({problem or PG_URL})")
    result = run_script()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "postgres: already running: postgresql://postgres@127.0.0.1:5432/test",
        "redis: already running: redis://127.0.0.1:6379",
    ]
    assert redis_ping(redis_url).startswith(b"+PONG")


def test_an_unknown_service_is_refused_with_the_known_ones() -> None:
    result = run_script("postgress")
    assert result.returncode == 2
    assert "unknown service postgress; known: postgres, redis" in result.stderr


def test_without_root_or_apt_it_says_how_to_provide_the_service(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    script = load_script()
    monkeypatch.setattr(script.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    monkeypatch.setattr(script, "pg_bindir", lambda: None)
    monkeypatch.setattr(script, "redis_answers", lambda: False)
    monkeypatch.setattr(script, "port_open", lambda port: False)

    assert script.main(["redis", "postgres"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "redis: could not be provided (not installed, and installing redis-server needs root and apt-get); "
        "set BAEDAL_TEST_REDIS_URL=redis://HOST:PORT",
        "postgres: could not be provided (not installed, and installing postgresql-client needs root and apt-get); "
        "set BAEDAL_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB",
    ]
    assert script.main(["--best-effort", "redis"]) == 0


def test_a_server_that_refuses_the_trusted_login_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script()
    monkeypatch.setattr(script.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(script, "pg_answers", lambda: True)
    refused = subprocess.CompletedProcess(["psql"], 2, "", 'FATAL:  password authentication failed for user "postgres"')
    monkeypatch.setattr(script, "psql", lambda sql, database="postgres": refused)
    with pytest.raises(script.Unavailable, match="refuses user postgres without a password: FATAL"):
        script.ensure_postgres()
