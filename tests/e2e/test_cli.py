"""The ``baedal`` verbs against a real ``baedal up`` process, as an operator would use them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from services.entrypoints.cli import app
from tests.support import EXAMPLES
from tests.support.server import Server, clean_env, free_port, running, stand_in

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


def test_operator_refuses_a_runtime_it_cannot_publish_with(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("s" * 64)
    result = runner.invoke(app, ["operator", "--data-dir", str(tmp_path)], env={"BAEDAL_RUNTIME": "carrier-pigeon"})
    assert_could_not_run(result, "no catalog publisher for runtime 'carrier-pigeon'")


def assert_could_not_run(result: Result, *says: str) -> None:
    """Exit code 2, and on stderr one line that says why: no traceback, nothing else."""
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()], result.output
    assert result.stderr.startswith("Error: ") and all(part in result.stderr for part in says), result.output
    assert "Traceback" not in result.output and result.stdout == "", result.output


# Every verb that talks to a platform, and what it is given besides --url and --data-dir.
CLIENT_VERBS = {
    "apply": ["apply", "-f", str(EXAMPLES)],
    "audit": ["audit"],
    "dlq list": ["dlq", "list"],
    "dlq replay": ["dlq", "replay", "order-1"],
    "bench --url": ["bench", "--orders", "1"],
    "operator": ["operator"],
}
UNUSABLE = ["nothing listening", "token refused", "no secret", "server error", "malformed URL"]
Unusable = tuple[str, Path, tuple[str, ...]]


@pytest.fixture(scope="module")
def unusable(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Unusable]]:
    """Per case: the URL and data dir a verb is given, and what its error line must say."""
    base = tmp_path_factory.mktemp("unusable")
    empty, foreign = base / "empty", base / "foreign"
    empty.mkdir()
    foreign.mkdir()
    (foreign / "jwt-secret").write_text("the signing secret of another platform, not this one")
    closed = f"http://127.0.0.1:{free_port()}"
    platform, home = server.url, server.data_dir
    with stand_in() as broken:
        yield {
            "nothing listening": (closed, home, (f"could not reach {closed}/", ": Connection refused")),
            "token refused": (platform, foreign, (f"{platform}/admin/", "answered 401 Unauthorized", "token")),
            "no secret": (platform, empty, (f"no signing secret {empty / 'jwt-secret'}",)),
            "server error": (broken, home, (f"{broken}/admin/", "answered 500 Internal Server Error: the database")),
            "malformed URL": ("localhost:8000", home, ("malformed URL 'localhost:8000'",)),
        }


@pytest.mark.parametrize("case", UNUSABLE)
@pytest.mark.parametrize("verb", CLIENT_VERBS)
def test_a_verb_that_cannot_run_says_why_in_one_line(verb: str, case: str, unusable: dict[str, Unusable]) -> None:
    url, data_dir, says = unusable[case]
    result = runner.invoke(app, [*CLIENT_VERBS[verb], "--url", url, "--data-dir", str(data_dir)])
    assert_could_not_run(result, *says)


@pytest.mark.parametrize("verb", [verb for verb in CLIENT_VERBS if verb != "bench --url"])
def test_a_token_the_platform_refuses(verb: str, server: Server) -> None:
    result = runner.invoke(app, [*CLIENT_VERBS[verb], "--url", server.url, "--token", "garbage"])
    assert_could_not_run(result, "answered 401 Unauthorized: invalid bearer token", "(a token of this platform")


def test_debug_shows_the_traceback_too(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "audit", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr and "MissingSecret" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: no signing secret")


def test_token_refuses_a_data_dir_without_a_secret(tmp_path: Path) -> None:
    """A new secret would sign tokens that the running platform rejects."""
    result = runner.invoke(app, ["token", "admin", "someone", "--data-dir", str(tmp_path)])
    assert_could_not_run(result, f"no signing secret {tmp_path / 'jwt-secret'}")
    assert list(tmp_path.iterdir()) == []


def test_audit_exits_1_for_a_violation_and_2_when_it_cannot_tell(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("any secret: the stand-in does not check")
    order = {"id": "o1", "status": "CANCELLED", "total_price": 10000, "updated_at": "2026-01-01T00:00:00Z"}
    payment = {"order_id": "o1", "status": "COMPLETED", "amount": 10000, "method": "card", "customer_id": "c1"}
    rows = {"orders": [order], "payments": [payment], "wallets": [], "tickets": []}
    with stand_in({f"/admin/audit/{name}": (200, value) for name, value in rows.items()}) as platform:
        result = runner.invoke(app, ["audit", "--url", platform, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert {v["invariant"] for v in json.loads(result.stdout)["violations"]} == {1, 3}
    del rows["tickets"]  # that endpoint now answers 500
    with stand_in({f"/admin/audit/{name}": (200, value) for name, value in rows.items()}) as platform:
        result = runner.invoke(app, ["audit", "--url", platform, "--data-dir", str(tmp_path)])
    assert_could_not_run(result, f"GET {platform}/admin/audit/tickets answered 500")


@pytest.mark.parametrize(
    ("kubeconfig", "message"),
    [
        (None, "no Kubernetes cluster: no kubeconfig (KUBECONFIG or ~/.kube/config) and no in-cluster service account"),
        ("missing", "cannot use the kubeconfig"),
        ("closed port", "could not reach the Kubernetes API at https://127.0.0.1:"),
    ],
)
def test_operator_without_a_cluster(kubeconfig: str | None, message: str, server: Server, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "KUBECONFIG": None}  # no ~/.kube/config either
    if kubeconfig == "missing":
        env["KUBECONFIG"] = str(tmp_path / "missing")
    elif kubeconfig == "closed port":
        env["KUBECONFIG"] = str(_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{free_port()}"))
    args = ["operator", "--url", server.url, "--data-dir", str(server.data_dir)]
    assert_could_not_run(runner.invoke(app, args, env=env), message)


def _kubeconfig(path: Path, server: str) -> Path:
    cluster = {"name": "gone", "cluster": {"server": server}}
    context = {"name": "gone", "context": {"cluster": "gone", "user": "me"}}
    config = {"clusters": [cluster], "users": [{"name": "me", "user": {"token": "t"}}], "contexts": [context]}
    path.write_text(yaml.safe_dump(config | {"current-context": "gone"}))
    return path


def test_up_listens_where_baedal_host_and_baedal_port_say(tmp_path: Path) -> None:
    """The environment alone (no flags), on an interface other than the default; the platform
    creates its data dir's signing secret on the first start."""
    with running(Server(tmp_path / "data", clean_env(BAEDAL_LOAD_DEMO="false"), host="127.0.0.2", flags=False)) as up:
        assert httpx.get(f"{up.url}/readyz").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{up.port}/readyz")
        assert (up.data_dir / "jwt-secret").exists()
