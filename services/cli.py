"""The ``baedal`` command line (typer: typed options, help text and completion for free)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from services.runtime.auth import Role, TokenIssuer, load_or_create_secret
from services.runtime.process import spawn_child
from services.runtime.settings import Settings

app = typer.Typer(help="Baedal: food-delivery ordering platform.", no_args_is_help=True, add_completion=False)
dlq = typer.Typer(help="Inspect and re-drive dead-lettered events.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")

DEFAULT_URL = "http://127.0.0.1:8000"


DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="BAEDAL_DATA_DIR", help="data dir (default $BAEDAL_DATA_DIR or ./.baedal)")
]
Url = Annotated[str, typer.Option("--url", help="base URL of a running platform")]
Token = Annotated[str | None, typer.Option("--token", help="bearer token (default: admin, from the data dir)")]


def _admin_client(url: str, data_dir: Path, token: str | None, timeout: float = 60.0) -> httpx.AsyncClient:
    if token is None:
        secret_file = data_dir / "jwt-secret"
        if not secret_file.exists():
            raise typer.BadParameter(f"no signing secret in {data_dir}; pass --data-dir of the platform or --token")
        token = TokenIssuer(load_or_create_secret(data_dir)).issue(Role.ADMIN, "baedal-cli")
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


@app.command()
def up(
    port: Annotated[int, typer.Option(help="HTTP port of the gateway")] = 8000,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    data_dir: DataDir = Path(".baedal"),
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL (default: SQLite under the data dir)")
    ] = None,
    pause: Annotated[list[str] | None, typer.Option(help="start with this service's consumers paused")] = None,
    paygate_port: Annotated[
        int | None,
        typer.Option(help="port of the payment-gateway simulator started alongside (default: port + 100; 0: none)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Run every service in one process (embedded runtime) behind the gateway."""
    import uvicorn

    from services.bootstrap import Platform
    from services.gateway import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"port": port, "host": host, "data_dir": data_dir}
    if database_url:
        overrides["database_url"] = database_url
    simulator_port = port + 100 if paygate_port is None else paygate_port
    if simulator_port and "BAEDAL_PAYGATE_URL" not in os.environ:
        overrides["paygate_url"] = f"http://{host}:{simulator_port}"
    else:
        simulator_port = 0  # an external gateway was configured
    settings = Settings(**overrides)
    platform = Platform(settings, paused=set(pause or ()))
    typer.echo(
        f"Baedal on http://{host}:{port}  (data dir {data_dir.resolve()}, "
        f"{'PostgreSQL' if settings.database_url else 'SQLite'})"
    )
    simulator = _start_simulator(host, simulator_port) if simulator_port else None
    try:
        _serve(uvicorn, create_app(platform), host, port)
    finally:
        if simulator is not None:
            simulator.terminate()
            simulator.wait(10)


def _start_simulator(host: str, port: int) -> subprocess.Popen[bytes]:
    """The payment-gateway simulator, a process of its own like the real gateway."""
    typer.echo(f"payment-gateway simulator on http://{host}:{port}")
    return spawn_child([sys.executable, "-m", "services.paygate", "--host", host, "--port", str(port)])


def _serve(uvicorn: Any, asgi_app: Any, host: str, port: int) -> None:
    uvicorn.run(
        asgi_app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        # Longer than common clients' idle expiry (httpx: 5 s), so a client never reuses a
        # connection the server is closing at that moment.
        timeout_keep_alive=75,
    )


@app.command()
def token(
    role: Annotated[Role, typer.Argument(help="customer, owner, rider or admin")],
    subject: Annotated[str, typer.Argument(help="the customer, owner or rider id")],
    data_dir: DataDir = Path(".baedal"),
    ttl: Annotated[int, typer.Option(min=1, help="lifetime in seconds")] = 12 * 3600,
) -> None:
    """Print a bearer token signed with the data dir's secret."""
    typer.echo(TokenIssuer(load_or_create_secret(data_dir)).issue(role, subject, ttl))


@app.command()
def apply(
    file: Annotated[Path, typer.Option("-f", "--filename", exists=True, help="a manifest file or a directory")],
    url: Url = DEFAULT_URL,
    data_dir: DataDir = Path(".baedal"),
    token: Token = None,
) -> None:
    """Send Restaurant manifests to a running platform (same reconcile as the operator)."""
    from services.catalog.manifest import load_manifests

    async def run() -> int:
        failures = 0
        async with _admin_client(url, data_dir, token) as client:
            for document in load_manifests(file):
                name = (document.get("metadata") or {}).get("name", "?")
                response = await client.post("/admin/restaurants", json=document)
                if response.is_success:
                    result = response.json()
                    verb = "configured" if result["changed"] else "unchanged"
                    typer.echo(f"restaurant.baedal.io/{name} {verb} (generation {result['generation']})")
                else:
                    failures += 1
                    typer.echo(f"restaurant.baedal.io/{name} rejected: {response.json().get('detail')}", err=True)
        return failures

    raise typer.Exit(1 if asyncio.run(run()) else 0)


@app.command()
def audit(
    url: Url = DEFAULT_URL,
    data_dir: DataDir = Path(".baedal"),
    token: Token = None,
    stuck_after: Annotated[float, typer.Option(help="seconds after which PENDING/CANCELLING counts as stuck")] = 30.0,
) -> None:
    """Check the consistency invariants; print a JSON report; exit 1 on any violation."""
    from services.audit import audit as run_audit

    async def run() -> dict[str, Any]:
        async with _admin_client(url, data_dir, token) as client:
            return await run_audit(client, stuck_after_s=stuck_after)

    report = asyncio.run(run())
    _print_json(report)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command("operator")
def operator_(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", metavar="NAMESPACE", help="watch it (repeatable, globs allowed); default: all"
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    data_dir: DataDir = Path(".baedal"),
    token: Token = None,
    liveness: Annotated[
        str | None, typer.Option(help="serve liveness probes here, e.g. http://0.0.0.0:8080/healthz")
    ] = None,
    log_level: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Run the Restaurant operator: Restaurant resources of the current kubeconfig's cluster (or the
    pod's service account) become catalog events of the platform (BAEDAL_RUNTIME: embedded, at --url)."""
    from services.restaurant_operator.config import OperatorConfig
    from services.restaurant_operator.handlers import run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(OperatorConfig(url=url, data_dir=data_dir, token=token), namespace or [], liveness)
    except ValueError as exc:  # no publisher for this configuration
        raise typer.BadParameter(str(exc)) from exc


@dlq.command("list")
def dlq_list(url: Url = DEFAULT_URL, data_dir: DataDir = Path(".baedal"), token: Token = None) -> None:
    """List dead-lettered events."""

    async def run() -> Any:
        async with _admin_client(url, data_dir, token) as client:
            response = await client.get("/admin/dlq")
            response.raise_for_status()
            return response.json()

    _print_json(asyncio.run(run()))


@dlq.command("replay")
def dlq_replay(
    letter_id: Annotated[str, typer.Argument(help="dead letter id from `baedal dlq list`")],
    url: Url = DEFAULT_URL,
    data_dir: DataDir = Path(".baedal"),
    token: Token = None,
) -> None:
    """Put a dead-lettered event back on its consumer's queue."""

    async def run() -> httpx.Response:
        async with _admin_client(url, data_dir, token) as client:
            return await client.post(f"/admin/dlq/{letter_id}/replay")

    response = asyncio.run(run())
    _print_json(response.json())
    raise typer.Exit(0 if response.is_success else 1)


@app.command()
def bench(
    orders: Annotated[int, typer.Option(help="orders to place")] = 2000,
    concurrency: Annotated[int, typer.Option(help="orders in flight at once (at most, with --rate)")] = 64,
    rate: Annotated[float | None, typer.Option(min=1, help="open loop: start this many orders per second")] = None,
    database_url: Annotated[str | None, typer.Option(help="run the platform on PostgreSQL")] = None,
    url: Annotated[str | None, typer.Option(help="drive an already running platform instead")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="with --url: that platform's data dir")] = None,
    customers: Annotated[int, typer.Option(help="funded customers")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON result")] = False,
) -> None:
    """Throughput/latency benchmark: place orders over HTTP, wait until settled, audit."""
    from services.bench import BenchConfig, run_bench

    config = BenchConfig(
        rate=rate,
        orders=orders,
        concurrency=concurrency,
        database_url=database_url,
        url=url,
        data_dir=data_dir,
        customers=customers,
        quiet=as_json,
    )
    result = asyncio.run(run_bench(config))
    typer.echo(json.dumps(result, indent=None if as_json else 2))
    raise typer.Exit(0 if result["violations"] == 0 else 1)


def main() -> None:  # pragma: no cover - console entry convenience
    app(sys.argv[1:])
