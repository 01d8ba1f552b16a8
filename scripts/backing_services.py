#!/usr/bin/env python3
"""Make sure the backing services the tests need are running on loopback: ``make services``.

Each service is used as it is when it already answers; otherwise it is installed from the
distribution's packages (when this runs as root with apt) and started from a data dir of its own.
Every service prints one line saying what it did. A second run finds everything up and returns at
once. Only the standard library is used: this runs before the project's virtualenv exists.

    scripts/backing_services.py                # every service; exit 1 if one could not be provided
    scripts/backing_services.py postgres       # only these
    scripts/backing_services.py --best-effort  # exit 0 anyway (``make test``: the tests then skip, saying why)

A later service (a real Dapr sidecar, a Kubernetes API server) is one more ``Service`` in ``SERVICES``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
WAIT_S = 60.0


class Unavailable(Exception):
    """The service cannot be provided here; the message says how to provide it instead."""


def state_dir() -> Path:
    """Where the project's own server data lives: outside the repo, kept between runs."""
    if configured := os.environ.get("BAEDAL_SERVICES_DIR"):
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/baedal-services")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "baedal-services"


def run(*argv: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    if user is not None and os.geteuid() == 0:
        argv = ("runuser", "-u", user, "--", *argv)
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def wait_until(ready: Callable[[], bool], what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if time.monotonic() > deadline:
            hint = f"; see {log}" if log else ""
            raise Unavailable(f"{what} did not answer within {WAIT_S:.0f} s{hint}")
        time.sleep(0.2)


_apt_updated = False


def apt_install(*packages: str) -> None:
    """Install Debian packages, or say why that is impossible here."""
    global _apt_updated
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"not installed, and installing {' '.join(packages)} needs root and apt-get")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, text=True, env=env)
        _apt_updated = True
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )


# --- PostgreSQL: database ``test``, user ``postgres``, trust auth on 127.0.0.1:5432 ------------

PG_PORT = 5432
PG_USER = "postgres"
PG_DATABASE = "test"


def pg_bindir() -> Path | None:
    """The newest installed server's binaries (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def psql(sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
    return run(
        "psql", "-h", HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database, "-tAc", sql, "-v", "ON_ERROR_STOP=1",
        check=False,
    )  # fmt: skip


def pg_answers() -> bool:
    return run("pg_isready", "-q", "-h", HOST, "-p", str(PG_PORT), check=False).returncode == 0


def ensure_postgres() -> str:
    if shutil.which("psql") is None or shutil.which("pg_isready") is None:
        apt_install("postgresql-client")
    action = "already running" if pg_answers() else start_postgres()
    login = psql("SELECT 1")
    if login.returncode != 0:
        raise Unavailable(
            f"a server answers on {HOST}:{PG_PORT} but refuses user {PG_USER} without a password: "
            f"{login.stderr.strip()}"
        )
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'").stdout.strip() != "1":
        created = psql(f'CREATE DATABASE "{PG_DATABASE}"')
        if created.returncode != 0:
            raise Unavailable(f"could not create database {PG_DATABASE}: {created.stderr.strip()}")
        action += f", database {PG_DATABASE} created"
    return f"{action}: postgresql://{PG_USER}@{HOST}:{PG_PORT}/{PG_DATABASE}"


def start_postgres() -> str:
    installed = ""
    if pg_bindir() is None or shutil.which("psql") is None:
        # No cluster of Debian's own: it would take the port with password auth. Ours is below.
        conf = Path("/etc/postgresql-common/createcluster.d/baedal.conf")
        if os.geteuid() == 0:
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text("create_main_cluster = false\n")
        apt_install("postgresql", "postgresql-client")
        installed = "installed and "
    bindir = pg_bindir()
    assert bindir is not None
    home = state_dir() / f"postgres-{bindir.parent.name}"
    data, log = home / "data", home / "postgres.log"
    owner = "postgres" if os.geteuid() == 0 else None
    if not (data / "PG_VERSION").exists():
        home.mkdir(parents=True, exist_ok=True)
        if owner:
            shutil.chown(home, owner, owner)
        run(str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8", user=owner)
    options = f"-c listen_addresses={HOST} -p {PG_PORT} -c unix_socket_directories={home} -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "start", user=owner, check=False)
    wait_until(pg_answers, f"PostgreSQL on {HOST}:{PG_PORT}", log)
    return f"{installed}started (data in {data})"


# --- Redis on 127.0.0.1:6379 ---------------------------------------------------------------

REDIS_PORT = 6379


def redis_answers() -> bool:
    try:
        with socket.create_connection((HOST, REDIS_PORT), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis() -> str:
    if redis_answers():
        return f"already running: redis://{HOST}:{REDIS_PORT}"
    if port_open(REDIS_PORT):
        raise Unavailable(f"something on {HOST}:{REDIS_PORT} does not answer PING as Redis does")
    installed = ""
    if shutil.which("redis-server") is None:
        apt_install("redis-server")
        installed = "installed and "
        if redis_answers():  # the package's own service started: use it
            return f"{installed}started by its package: redis://{HOST}:{REDIS_PORT}"
    home = state_dir() / "redis"
    home.mkdir(parents=True, exist_ok=True)
    log = home / "redis.log"
    run(
        "redis-server", "--bind", HOST, "--port", str(REDIS_PORT), "--daemonize", "yes",
        "--dir", str(home), "--logfile", str(log), "--pidfile", str(home / "redis.pid"),
        "--appendonly", "yes", "--save", "",
    )  # fmt: skip
    wait_until(redis_answers, f"Redis on {HOST}:{REDIS_PORT}", log)
    return f"{installed}started: redis://{HOST}:{REDIS_PORT} (data in {home})"


@dataclass(frozen=True)
class Service:
    name: str
    ensure: Callable[[], str]
    instead: str  # how to provide it by other means, for the "could not" line


SERVICES = {
    s.name: s
    for s in (
        Service("postgres", ensure_postgres, "set BAEDAL_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB"),
        Service("redis", ensure_redis, "set BAEDAL_TEST_REDIS_URL=redis://HOST:PORT"),
    )
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="SERVICE", help=f"any of: {', '.join(SERVICES)} (default: all)")
    parser.add_argument("--best-effort", action="store_true", help="exit 0 even if a service could not be provided")
    args = parser.parse_args(argv)
    if unknown := [name for name in args.names if name not in SERVICES]:
        parser.error(f"unknown service {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    failed = False
    for name in args.names or SERVICES:
        service = SERVICES[name]
        try:
            print(f"{name}: {service.ensure()}", flush=True)
        except (Unavailable, subprocess.CalledProcessError) as exc:
            failed = True
            reason = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else exc
            print(f"{name}: could not be provided ({reason}); {service.instead}", file=sys.stderr, flush=True)
    return 1 if failed and not args.best_effort else 0


if __name__ == "__main__":
    sys.exit(main())
