"""``baedal smoke``, the chart's ``helm test``: one order through a real ``baedal up`` process reaches
ACCEPTED with a COMPLETED payment; against a platform that cannot take it, the report says which
step did not happen, in the time allowed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from services.entrypoints.cli import app
from tests.support import EXAMPLES
from tests.support.server import Server, clean_env, running, stand_in

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("smoke")
    with running(Server(base / "data", clean_env(BAEDAL_DEMO_MANIFESTS=str(EXAMPLES)))) as server:
        yield server


def test_one_order_reaches_accepted_and_its_payment_completed(server: Server) -> None:
    args = ["smoke", "--url", server.url, "--data-dir", str(server.data_dir), "--timeout", "60"]
    result = runner.invoke(app, args, env={"BAEDAL_JWT_SECRET": None})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["steps"][-2:] == [f"order {report['order']} ACCEPTED", f"payment of {report['order']} COMPLETED"]
    again = runner.invoke(app, args, env={"BAEDAL_JWT_SECRET": None})
    assert again.exit_code == 0, "a second run (an upgrade's helm test) finds the test restaurant applied already"


def test_tokens_signed_with_another_key_fail_at_the_first_step_that_needs_one(server: Server) -> None:
    args = ["smoke", "--url", server.url, "--timeout", "10"]
    result = runner.invoke(app, args, env={"BAEDAL_JWT_SECRET": "not-the-key-of-this-platform-but-32-bytes-long"})
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and report["steps"] == ["gateway ready"]
    assert "401" in report["error"]


def test_a_platform_that_is_not_ready_fails_within_the_timeout() -> None:
    with stand_in({"/readyz": (503, {"status": 503})}) as url:
        started = time.monotonic()
        result = runner.invoke(
            app,
            ["smoke", "--url", url, "--timeout", "2"],
            env={"BAEDAL_JWT_SECRET": "any-key-at-all-for-a-platform-that-is-down"},
        )
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["steps"] == [] and "the gateway is ready" in report["error"]
    assert time.monotonic() - started < 10
