"""A card charged before ``baedal up`` restarts is refunded after it: the card-gateway simulator it
starts keeps its ledger in the data dir, as a real processor keeps its charges."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from services.runtime.auth import Role, TokenIssuer, load_secret
from tests.support import EXAMPLES
from tests.support.platform import ORDER_BODY
from tests.support.server import Server, clean_env, running

pytestmark = pytest.mark.slow
CUSTOMER = "card-restart"
CARD_ORDER = {**ORDER_BODY, "payment": {"method": "card", "card_token": "tok_visa"}}


def wait_for(client: httpx.Client, path: str, field: str, value: str, timeout_s: float = 30.0) -> dict[str, object]:
    """Poll ``path`` until its ``field`` is ``value`` (the saga runs in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, object] = client.get(path).json()
        if body.get(field) == value or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def wait_healthy(url: str, timeout_s: float = 30.0) -> None:
    """``baedal up`` is ready before the simulator it starts may be."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def test_a_card_charged_before_a_restart_is_refunded_after_it(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", clean_env(BAEDAL_DEMO_MANIFESTS=str(EXAMPLES)))
    simulator = f"http://127.0.0.1:{server.port + 100}"
    with running(server):
        wait_healthy(simulator)
        token = TokenIssuer(load_secret(server.data_dir)).issue(Role.CUSTOMER, CUSTOMER)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            placed = client.post("/orders", json=CARD_ORDER)
            assert placed.status_code == 202, placed.text
            order_id = placed.json()["id"]
            assert wait_for(client, f"/orders/{order_id}", "status", "ACCEPTED")["status"] == "ACCEPTED"
        assert httpx.get(f"{simulator}/charges/{order_id}", timeout=5).json()["status"] == "approved"

    with running(server):  # the same data dir, a new simulator process
        wait_healthy(simulator)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            assert client.post(f"/orders/{order_id}/cancel").status_code == 202
            order = wait_for(client, f"/orders/{order_id}", "status", "CANCELLED")
            assert (order["status"], order["cancel_reason"]) == ("CANCELLED", "CUSTOMER_CANCELLED")
            assert wait_for(client, f"/payments/{order_id}", "status", "REFUNDED")["status"] == "REFUNDED"
        assert httpx.get(f"{simulator}/charges/{order_id}", timeout=5).json()["status"] == "refunded"
