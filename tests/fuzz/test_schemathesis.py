"""The API against its own OpenAPI document, fuzzed by schemathesis: a real ``baedal up`` (SQLite,
a temp data dir, a free loopback port) and ``st run`` with every check (no server error;
status code, content type, headers and body as documented; invalid data rejected, valid data
accepted; unsupported methods; ignored auth; the stateful checks) and every phase, stateful
included (it follows the document's links), once with a customer's token and once with an
admin's. Bounded (``--max-examples``, a fixed seed) to about 2,000 requests in all.

Left out: ``GET /notifications/stream`` (an open stream never ends a request; its contract is in
tests/integration/test_notifications.py and test_integer_inputs.py). The 422s that business rules
answer to schema-valid requests are listed in ``schemathesis.toml``.

Run by hand: ``baedal up``, then ``st --config-file tests/fuzz/schemathesis.toml run
http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer $(baedal token admin me)" --checks all``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.runtime.auth import Role, TokenIssuer, load_secret
from tests.support import EXAMPLES
from tests.support.server import Server, clean_env, running

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = 5  # per operation and phase: about 1,000 requests per role
SEED = 16


def fuzz(url: str, token: str, workdir: Path) -> tuple[int, str, dict[str, int]]:
    """One ``st run``: its exit code, its output, and from its reports the counts of requests
    sent (the HAR file records each), test cases and failures."""
    command = [
        str(ST),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--exclude-path",
        "/notifications/stream",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        "--output-truncate",
        "false",
        "--report",
        "json,har",
        "--report-dir",
        str(workdir / "report"),
    ]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)
    return done.returncode, done.stdout + done.stderr, _counts(workdir / "report")


def _counts(reports: Path) -> dict[str, int]:
    counts = {"requests": -1, "test_cases": -1, "failures": -1}
    for har in reports.glob("har-*.json"):
        counts["requests"] = len(json.loads(har.read_text())["log"]["entries"])
    for report in reports.glob("json-*.json"):
        cases = json.loads(report.read_text())["test_cases"]
        counts["test_cases"], counts["failures"] = cases["generated"], cases["with_failures"]
    return counts


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.ADMIN])
def test_the_api_keeps_its_documented_contract_under_fuzzing(tmp_path: Path, role: Role) -> None:
    data = tmp_path / "data"
    with running(Server(data, clean_env(BAEDAL_DEMO_MANIFESTS=str(EXAMPLES)))) as server:
        token = TokenIssuer(load_secret(data)).issue(role, f"fuzz-{role.value}")
        code, output, counts = fuzz(server.url, token, tmp_path)
        assert server.process is not None and server.process.poll() is None, "the platform died"
    print(f"schemathesis as {role.value}: {counts}")
    assert code == 0, output[-20000:]
    assert counts["failures"] == 0, output[-20000:]
    assert 300 <= counts["requests"] <= 1500, counts  # it ran, and stays bounded
