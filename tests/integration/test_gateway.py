"""The gateway: its routing table, the operations endpoints, the OpenAPI document, and the
``baedal token`` CLI verb producing tokens the platform accepts."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from services.entrypoints.cli import app as cli
from services.entrypoints.gateway import create_app
from services.entrypoints.routes import ROUTES, SERVICE_ROUTERS, service_for
from services.runtime.auth import load_or_create_secret
from tests.support.platform import ORDER_BODY, Api, PlatformFactory, api_for

PROBLEM = "application/problem+json"


def _router_routes() -> dict[str, set[tuple[str, str]]]:
    """Per service, the (method, path) pairs its router serves."""
    served: dict[str, set[tuple[str, str]]] = {}
    for service, router in SERVICE_ROUTERS.items():
        pairs: set[tuple[str, str]] = set()
        for route in router.routes:
            assert isinstance(route, APIRoute), route
            pairs |= {(method, route.path) for method in route.methods or ()}
        served[service] = pairs
    return served


# --------------------------------------------------------------------------- routing table


def test_routing_table_has_no_duplicates() -> None:
    pairs = Counter((method, path) for method, path, _ in ROUTES)
    assert [pair for pair, n in pairs.items() if n > 1] == []
    assert {service for _, _, service in ROUTES} == set(SERVICE_ROUTERS)


def test_routing_table_is_every_route_of_every_service_router() -> None:
    served = _router_routes()
    assert {(m, p, s) for m, p, s in ROUTES} == {(m, p, s) for s, pairs in served.items() for m, p in pairs}
    assert len(ROUTES) == 31
    # No (method, path) is served by two services: the gateway could not pick one.
    owners = Counter(pair for pairs in served.values() for pair in pairs)
    assert [pair for pair, n in owners.items() if n > 1] == []


def test_a_request_is_forwarded_to_the_service_that_serves_its_route() -> None:
    for method, path, service in ROUTES:
        concrete = re.sub(r"\{[^/}]+\}", "id-1", path)
        assert service_for(method, concrete) == service, (method, concrete)
    assert service_for("GET", "/restaurants/id-1/orders/id-2") is None
    assert service_for("DELETE", "/orders/id-1") is None


# --------------------------------------------------------------------------- operations


async def test_healthz(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_every_service_ready(api: Api) -> None:
    response = await api.client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["services"] == {service: True for service in SERVICE_ROUTERS}


async def test_readyz_is_503_once_the_platform_stopped(make_platform: PlatformFactory) -> None:
    platform = await make_platform()
    api = api_for(platform)
    try:
        assert (await api.client.get("/readyz")).status_code == 200
        await platform.stop()
        response = await api.client.get("/readyz")
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        body = response.json()
        assert body["code"] == "NOT_READY"
        assert set(body["services"]) == set(SERVICE_ROUTERS)
        assert not any(body["services"].values())
        # Liveness is not readiness: the process still answers /healthz.
        assert (await api.client.get("/healthz")).status_code == 200
    finally:
        await api.client.aclose()


async def test_metrics_is_prometheus_text_with_handled_events(api: Api) -> None:
    await api.top_up("cust-metrics", 100_000)
    order_id = await api.place_ok("cust-metrics", ORDER_BODY)
    await api.wait_status(order_id, "ACCEPTED")
    await api.settle()
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "baedal_events_handled_total" in response.text
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    handled = families["baedal_events_handled"]
    assert handled.type == "counter"
    samples = [s for s in handled.samples if s.name == "baedal_events_handled_total"]
    assert samples, "the order went through the saga, so events were handled"
    assert {"service", "consumer", "outcome"} <= set(samples[0].labels)
    assert {s.labels["service"] for s in samples} >= {"order", "payment", "restaurant"}
    assert sum(s.value for s in samples) > 0


async def test_openapi_lists_the_whole_api(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"get", "post"} <= set(paths["/orders"])
    missing = [(m, p) for m, p, _ in ROUTES if m.lower() not in paths.get(p, {})]
    assert missing == []
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path in paths
    docs = await api.client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


# --------------------------------------------------------------------------- baedal token


def _cli_token(data_dir: Path, role: str, subject: str, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["token", role, subject, "--data-dir", str(data_dir), *extra])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token.split(".")) == 3, f"not a JWT: {token!r}"
    return token


async def test_cli_token_is_accepted_by_the_platform_on_that_data_dir(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "cli-data"
    platform = await make_platform(data_dir=data_dir)  # the platform makes the data dir's secret
    customer = _cli_token(data_dir, "customer", "cust-cli")
    admin = _cli_token(data_dir, "admin", "ops")
    claims = jwt.decode(customer, options={"verify_signature": False})
    assert claims["sub"] == "cust-cli"
    assert claims["role"] == "customer"
    assert isinstance(claims["exp"], int)

    api = api_for(platform)
    try:
        await api.settle()
        as_customer = {"Authorization": f"Bearer {customer}"}
        top_up = await api.client.post("/wallets/cust-cli/top-ups", json={"amount": 50_000}, headers=as_customer)
        assert top_up.status_code == 200, top_up.text
        placed = await api.client.post("/orders", json=ORDER_BODY, headers=as_customer)
        assert placed.status_code == 202, placed.text
        assert placed.json()["customer_id"] == "cust-cli"
        # The role is the one asked for: a customer token is not an admin token, the admin one is.
        forbidden = await api.client.get("/admin/audit/orders", headers=as_customer)
        assert forbidden.status_code == 403
        audit = await api.client.get("/admin/audit/orders", headers={"Authorization": f"Bearer {admin}"})
        assert audit.status_code == 200, audit.text
        # A token minted after the platform started (same secret file) works too.
        later = _cli_token(data_dir, "owner", "owner-kim")
        queue = await api.client.get("/restaurants/seoul-chicken/orders", headers={"Authorization": f"Bearer {later}"})
        assert queue.status_code == 200, queue.text
    finally:
        await api.client.aclose()


async def test_cli_token_of_another_data_dir_is_401(make_platform: PlatformFactory, tmp_path: Path) -> None:
    platform = await make_platform(data_dir=tmp_path / "platform")
    load_or_create_secret(tmp_path / "elsewhere")  # another platform's data dir
    foreign = _cli_token(tmp_path / "elsewhere", "admin", "ops")
    app = create_app(platform, manage_lifecycle=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://baedal") as client:
        response = await client.get("/admin/audit/orders", headers={"Authorization": f"Bearer {foreign}"})
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("role", ["superuser", "ADMIN", ""])
def test_cli_token_refuses_unknown_roles(tmp_path: Path, role: str) -> None:
    result = CliRunner().invoke(cli, ["token", role, "someone", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "eyJ" not in result.stdout, "no token is printed"
