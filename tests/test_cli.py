"""The ``baedal`` verbs against a real ``baedal up`` process, as an operator would use them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app
from tests.conftest import EXAMPLES
from tests.server import Server, clean_env, running

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("cli")
    with running(Server(base / "data", clean_env(BAEDAL_DEMO_MANIFESTS=str(EXAMPLES)))) as server:
        yield server


def baedal(server: Server, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--url", server.url, "--data-dir", str(server.data_dir)])
    return result.exit_code, result.output


def test_apply_reports_unchanged_then_configured(server: Server, tmp_path: Path) -> None:
    code, output = baedal(server, "apply", "-f", str(EXAMPLES))
    assert code == 0, output
    assert "restaurant.baedal.io/seoul-chicken unchanged (generation 1)" in output
    assert output.count("unchanged") == 3

    manifest = yaml.safe_load((EXAMPLES / "seoul-chicken.yaml").read_text())
    manifest["spec"]["menu"][0]["price"] = 18900
    changed = tmp_path / "seoul-chicken.yaml"
    changed.write_text(yaml.safe_dump(manifest, allow_unicode=True))
    code, output = baedal(server, "apply", "-f", str(changed))
    assert code == 0 and "restaurant.baedal.io/seoul-chicken configured (generation 2)" in output

    for _ in range(100):
        menu = httpx.get(f"{server.url}/restaurants/seoul-chicken/menu").json()
        if menu["items"][0]["price"] == 18900:
            break
        time.sleep(0.05)
    assert menu["items"][0]["price"] == 18900


def test_apply_rejects_a_bad_manifest(server: Server, tmp_path: Path) -> None:
    manifest = yaml.safe_load((EXAMPLES / "busan-tteokbokki.yaml").read_text())
    manifest["spec"]["menu"][0]["price"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest, allow_unicode=True))
    code, output = baedal(server, "apply", "-f", str(bad))
    assert code == 1
    assert "busan-tteokbokki rejected" in output and "price" in output


def test_audit_and_dead_letters(server: Server) -> None:
    code, output = baedal(server, "audit")
    assert code == 0, output
    assert json.loads(output)["ok"] is True

    code, output = baedal(server, "dlq", "list")
    assert code == 0 and json.loads(output) == []
    code, output = baedal(server, "dlq", "replay", "order-424242")
    assert code == 1 and "DEAD_LETTER_NOT_FOUND" in output


def test_token_is_accepted_by_the_running_platform(server: Server) -> None:
    result = runner.invoke(app, ["token", "customer", "cli-customer", "--data-dir", str(server.data_dir)])
    assert result.exit_code == 0
    token = result.output.strip()
    wallet = httpx.get(f"{server.url}/wallets/cli-customer", headers={"Authorization": f"Bearer {token}"})
    assert wallet.status_code == 200 and wallet.json() == {"customer_id": "cli-customer", "balance": 0}


@pytest.mark.parametrize(
    ("runtime", "secret", "message"),
    [("embedded", False, "no signing secret"), ("carrier-pigeon", True, "no catalog publisher for runtime")],
)
def test_operator_refuses_a_configuration_it_cannot_publish_with(
    tmp_path: Path, runtime: str, secret: bool, message: str
) -> None:
    if secret:
        (tmp_path / "jwt-secret").write_text("s" * 64)
    result = runner.invoke(app, ["operator", "--data-dir", str(tmp_path)], env={"BAEDAL_RUNTIME": runtime})
    assert result.exit_code == 2 and message in result.output, result.output
