"""The ``baedal`` command line (typer: typed options, help text and completion for free)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from typer.core import TyperGroup

from services.runtime.auth import Role, TokenIssuer, load_secret
from services.runtime.failures import CouldNotRun, raise_if_unusable, response_detail, transport_failure
from services.runtime.process import spawn_child
from services.runtime.settings import Settings
from services.runtime.web.server import server, shared_socket

if TYPE_CHECKING:
    from services.entrypoints.bootstrap import Platform

# Exit codes: 0 done, 1 the answer is "no" (an audit violation, a rejected manifest), 2 could not run.
FOUND_A_PROBLEM = 1
COULD_NOT_RUN = 2
REFUSED_HINT = " (a token of this platform: its --data-dir, or --token)"


class BaedalGroup(TyperGroup):
    """Every verb's failure to run is one line on stderr and exit code 2; ``--debug`` adds the
    traceback. Usage errors and typer's own exits pass through."""

    def invoke(self, ctx: Any) -> Any:  # ctx: the click Context vendored in typer (private)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, EOFError, BrokenPipeError):
            raise  # typer's own: exits, usage errors (TyperExceptions), end of input, closed pipe
        except Exception as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            typer.echo(f"Error: {' '.join(_reason(exc).split())}", err=True)
            raise typer.Exit(COULD_NOT_RUN) from exc


def _reason(exc: Exception) -> str:
    """What kept the verb from running, for a person; anything unexpected (a bug) by its type."""
    if isinstance(exc, httpx.HTTPStatusError):
        response, request = exc.response, exc.request
        hint = REFUSED_HINT if response.status_code in (401, 403) else ""
        answer = f"{response.status_code} {response.reason_phrase}: {response_detail(response)}"
        return f"{request.method} {request.url} answered {answer}{hint}"
    if isinstance(exc, httpx.TransportError):  # refused, timed out, unknown host, ...
        return f"could not reach {exc.request.url}: {transport_failure(exc)}"
    if isinstance(exc, CouldNotRun):
        return str(exc)
    return f"{type(exc).__name__}: {exc} (--debug shows the traceback)"


app = typer.Typer(
    cls=BaedalGroup, help="Baedal: food-delivery ordering platform.", no_args_is_help=True, add_completion=False
)
dlq = typer.Typer(help="Inspect and re-drive dead-lettered events.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")

DEFAULT_URL = "http://127.0.0.1:8000"


Debug = Annotated[bool, typer.Option("--debug", help="on an error, show the traceback too")]


@app.callback()
def _options(debug: Debug = False) -> None:
    """Options of every verb (the group reads them from its context)."""


def _checked_url(url: str | None) -> str | None:
    """Refuse a malformed URL before anything is sent."""
    if url is None:
        return None
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CouldNotRun(f"malformed URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CouldNotRun(f"malformed URL {url!r}: expected http(s)://HOST[:PORT]")
    return url


DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="BAEDAL_DATA_DIR", help="data dir (default $BAEDAL_DATA_DIR or ./.baedal)")
]
Url = Annotated[str, typer.Option("--url", callback=_checked_url, help="base URL of a running platform")]
Token = Annotated[str | None, typer.Option("--token", help="bearer token (default: admin, from the data dir)")]


def _signing_secret(data_dir: Path) -> str:
    """The platform's token signing key: BAEDAL_JWT_SECRET when set (a cluster's Secret, as the
    services read it), else the data dir's."""
    configured = Settings(data_dir=data_dir).jwt_secret
    return configured.get_secret_value() if configured else load_secret(data_dir)


def _admin_client(url: str, data_dir: Path, token: str | None, timeout: float = 60.0) -> httpx.AsyncClient:
    if token is None:
        token = TokenIssuer(_signing_secret(data_dir)).issue(Role.ADMIN, "baedal-cli")
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


@app.command()
def up(
    port: Annotated[int, typer.Option(envvar="BAEDAL_PORT", help="HTTP port of the gateway")] = 8000,
    host: Annotated[str, typer.Option(envvar="BAEDAL_HOST", help="interface to listen on")] = "127.0.0.1",
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
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=2,
            help="1: everything in one process; 2: the other services' consumers in a second (default: 2 on 2+ cores)",
        ),
    ] = None,
) -> None:
    """Run every service (embedded runtime) behind the gateway, in one process or, to use two
    cores, two (docs/decisions.md, decision 27)."""
    _start_logging(log_level)
    overrides: dict[str, Any] = {"port": port, "host": host, "data_dir": data_dir}
    if database_url:
        overrides["database_url"] = database_url
    simulator_port = port + 100 if paygate_port is None else paygate_port
    if simulator_port and "BAEDAL_PAYGATE_URL" not in os.environ:
        overrides["paygate_url"] = f"http://{host}:{simulator_port}"
    else:
        simulator_port = 0  # an external gateway was configured
    if processes:
        overrides["processes"] = processes
    settings = Settings(**overrides)
    processes = settings.processes or (2 if (os.cpu_count() or 1) >= 2 else 1)
    try:  # with two processes, both serve HTTP on one socket
        sock = shared_socket(host, port) if processes == 2 else None
    except OSError as exc:
        raise CouldNotRun(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    if sock is not None:
        _share_metrics(settings.data_dir / "metrics")
    from services.entrypoints.gateway import create_app  # after _share_metrics: see there

    platform = _platform(settings, set(pause or ()), sock)
    typer.echo(
        f"Baedal on http://{host}:{port}  (data dir {data_dir.resolve()}, "
        f"{'PostgreSQL' if settings.database_url else 'SQLite'}, {processes} process{'es' if processes > 1 else ''})"
    )
    simulator = _start_simulator(host, simulator_port, data_dir / "paygate.db") if simulator_port else None
    try:
        if sock is None:
            _serve(create_app(platform), host, port)
        else:
            server(create_app(platform)).run(sockets=[sock])
    finally:
        if simulator is not None:
            simulator.terminate()
            simulator.wait(10)
    if platform.engine is not None and platform.engine.exit_code is not None:
        raise typer.Exit(platform.engine.exit_code)  # the engine died: so does the platform


def _share_metrics(directory: Path) -> None:
    """Both processes answer /metrics, so each records its metrics in files there, and either sums
    them (prometheus_client's multiprocess mode). It is chosen when prometheus_client is first
    imported, hence before anything that imports it; the engine inherits the variable. Emptied at
    every start: a new platform's counters start at zero, as a restarted process's would."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


def _platform(settings: Settings, paused: set[str], http: socket.socket | None) -> Platform:
    """The platform in this process; given the HTTP socket, the engine process serves it too and
    runs the other services' consumers."""
    from services.entrypoints.bootstrap import Platform
    from services.entrypoints.engine import GATEWAY_SERVICES, EngineProcess
    from services.runtime.embedded.peer import Peer

    if http is None:
        return Platform(settings, paused=paused)
    peer, theirs = Peer.pair()
    engine = EngineProcess(theirs, http, settings, sorted(paused))
    platform = Platform(settings, paused, local=GATEWAY_SERVICES, peer=peer, engine=engine)
    # The engine died: stop serving (uvicorn's own signal path, so requests in flight finish).
    platform.engine_died = lambda code: os.kill(os.getpid(), signal.SIGTERM)
    return platform


def _start_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _start_simulator(host: str, port: int, ledger: Path) -> subprocess.Popen[bytes]:
    """The payment-gateway simulator, a process of its own like the real gateway, its ledger in the
    data dir so that a restart forgets no charge."""
    typer.echo(f"payment-gateway simulator on http://{host}:{port}")
    command = [sys.executable, "-m", "services.tools.paygate", "--host", host, "--port", str(port)]
    return spawn_child([*command, "--ledger", str(ledger)])


def _serve(asgi_app: Any, host: str, port: int, graceful_shutdown_s: int = 10) -> None:
    server(asgi_app, graceful_shutdown_s, host=host, port=port).run()


@app.command()
def token(
    role: Annotated[Role, typer.Argument(help="customer, owner, rider or admin")],
    subject: Annotated[str, typer.Argument(help="the customer, owner or rider id")],
    data_dir: DataDir = Path(".baedal"),
    ttl: Annotated[int, typer.Option(min=1, help="lifetime in seconds")] = 12 * 3600,
) -> None:
    """Print a bearer token signed with the platform's key: BAEDAL_JWT_SECRET (in a cluster), else
    the secret of its data dir."""
    typer.echo(TokenIssuer(_signing_secret(data_dir)).issue(role, subject, ttl))


@app.command()
def openapi() -> None:
    """Print the API's OpenAPI document (the one published as docs/openapi.json)."""
    from services.entrypoints.gateway import openapi_text

    sys.stdout.write(openapi_text())


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
                response = raise_if_unusable(await client.post("/admin/restaurants", json=document))
                if response.is_success:
                    result = response.json()
                    verb = "configured" if result["changed"] else "unchanged"
                    typer.echo(f"restaurant.baedal.io/{name} {verb} (generation {result['generation']})")
                else:
                    failures += 1
                    typer.echo(f"restaurant.baedal.io/{name} rejected: {response_detail(response)}", err=True)
        return failures

    raise typer.Exit(FOUND_A_PROBLEM if asyncio.run(run()) else 0)


@app.command()
def audit(
    url: Url = DEFAULT_URL,
    data_dir: DataDir = Path(".baedal"),
    token: Token = None,
    stuck_after: Annotated[float, typer.Option(help="seconds after which PENDING/CANCELLING counts as stuck")] = 30.0,
) -> None:
    """Check the consistency invariants; print a JSON report; exit 1 on any violation."""
    from services.tools.audit import audit as run_audit

    async def run() -> dict[str, Any]:
        async with _admin_client(url, data_dir, token) as client:
            return await run_audit(client, stuck_after_s=stuck_after)

    report = asyncio.run(run())
    _print_json(report)
    raise typer.Exit(0 if report["ok"] else FOUND_A_PROBLEM)


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
    from services.restaurant_operator.handlers import preflight, run

    context = preflight(OperatorConfig(url=url, data_dir=data_dir, token=token))
    _start_logging(log_level)  # after the checks: a refusal is one line, no log lines before it
    run(context, namespace or [], liveness)


class Process(StrEnum):
    """The processes of the Dapr deployment (one container image runs any of them)."""

    order = "order"
    payment = "payment"
    restaurant = "restaurant"
    delivery = "delivery"
    notification = "notification"
    gateway = "gateway"
    operator = "operator"
    paygate = "paygate"


# Where each process listens unless told otherwise: the ports of dapr.yaml (and of the chart's
# values.yaml); the operator's port serves only its liveness probe.
DEFAULT_PORTS = {
    Process.gateway: 8000,
    Process.order: 8001,
    Process.payment: 8002,
    Process.restaurant: 8003,
    Process.delivery: 8004,
    Process.notification: 8005,
    Process.operator: 8080,
    Process.paygate: 8100,
}


@app.command()
def serve(
    process: Annotated[Process, typer.Argument(help="which process to run", show_default=False)],
    host: Annotated[
        str, typer.Option(envvar="BAEDAL_HOST", help="interface to listen on (0.0.0.0 in a container)")
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help="port to listen on (default: gateway 8000, order 8001 … notification 8005, "
            "operator 8080, paygate 8100)"
        ),
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", metavar="NAMESPACE", help="operator: watch it (repeatable); default: all"),
    ] = None,
    graceful_shutdown: Annotated[
        int, typer.Option(min=0, help="seconds in-flight requests and event deliveries get after SIGTERM")
    ] = 20,
    log_level: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Run one process of the Dapr deployment, behind its own Dapr sidecar: a service (order,
    payment, restaurant, delivery, notification), the gateway, the Restaurant operator (publishing
    through its sidecar), or the card-gateway simulator (paygate, no sidecar needed). Always on
    the Dapr runtime, whatever BAEDAL_RUNTIME says; every other setting comes from the
    environment (docs/operations.md)."""
    listen = port if port is not None else DEFAULT_PORTS[process]
    if process is Process.operator:
        from services.restaurant_operator.config import OperatorConfig
        from services.restaurant_operator.handlers import preflight, run

        context = preflight(OperatorConfig(runtime="dapr"))
        _start_logging(log_level)
        run(context, namespace or [], f"http://{host}:{listen}/healthz")
        return
    _start_logging(log_level)
    asgi_app: Any
    if process is Process.paygate:
        from services.tools.paygate.app import create_app as create_paygate

        asgi_app = create_paygate()
    elif process is Process.gateway:
        from services.entrypoints.gateway_dapr import create_gateway_app

        asgi_app = create_gateway_app(Settings(runtime="dapr"))
    else:
        from services.entrypoints.dapr_host import create_service_app

        asgi_app = create_service_app(process.value, Settings(runtime="dapr"))
    typer.echo(f"Baedal {process.value} on http://{host}:{listen}")
    _serve(asgi_app, host, listen, graceful_shutdown)


@app.command()
def smoke(
    url: Url = DEFAULT_URL,
    data_dir: DataDir = Path(".baedal"),
    timeout: Annotated[float, typer.Option(min=1, help="seconds the whole check may take")] = 120.0,
) -> None:
    """Place one order on a running platform (as a new customer, at a test restaurant it applies)
    and wait until it is ACCEPTED and its payment COMPLETED; print a JSON report, exit 1 if not.
    Tokens are signed with BAEDAL_JWT_SECRET, else the data dir's secret. The chart's helm test."""
    from services.tools.smoke import smoke as run_smoke

    tokens = TokenIssuer(_signing_secret(data_dir))

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            return await run_smoke(client, tokens, timeout)

    report = asyncio.run(run())
    _print_json(report)
    raise typer.Exit(0 if report["ok"] else FOUND_A_PROBLEM)


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
            return raise_if_unusable(await client.post(f"/admin/dlq/{letter_id}/replay"))

    response = asyncio.run(run())
    _print_json(response.json())
    raise typer.Exit(0 if response.is_success else FOUND_A_PROBLEM)


@app.command()
def bench(
    orders: Annotated[int, typer.Option(help="orders to place")] = 2000,
    concurrency: Annotated[int, typer.Option(help="orders in flight at once (at most, with --rate)")] = 64,
    rate: Annotated[float | None, typer.Option(min=1, help="open loop: start this many orders per second")] = None,
    database_url: Annotated[str | None, typer.Option(help="run the platform on PostgreSQL")] = None,
    url: Annotated[
        str | None, typer.Option(callback=_checked_url, help="drive an already running platform instead")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="with --url: that platform's data dir")] = None,
    customers: Annotated[int, typer.Option(help="funded customers")] = 200,
    underfunded: Annotated[
        float, typer.Option(min=0, max=1, help="share of customers funded with half of what their orders cost")
    ] = 0.0,
    menu_readers: Annotated[
        int, typer.Option(min=0, help="clients reading restaurant menus while the orders are placed")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON result")] = False,
) -> None:
    """Throughput/latency benchmark: place orders over HTTP, wait until settled, audit."""
    from services.tools.bench import BenchConfig, run_bench

    config = BenchConfig(
        rate=rate,
        orders=orders,
        concurrency=concurrency,
        database_url=database_url,
        url=url,
        data_dir=data_dir,
        customers=customers,
        underfunded=underfunded,
        menu_readers=menu_readers,
        quiet=as_json,
    )
    result = asyncio.run(run_bench(config))
    typer.echo(json.dumps(result, indent=None if as_json else 2))
    raise typer.Exit(0 if result["violations"] == 0 else FOUND_A_PROBLEM)


def main() -> None:  # pragma: no cover - console entry convenience
    app(sys.argv[1:])
