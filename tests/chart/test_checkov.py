"""A security scan of every rendered manifest: checkov's Kubernetes checks find nothing that the
chart does not skip with a written reason (the ``checkov.io/skipN`` annotations of
charts/baedal/templates/_helpers.tpl, "baedal.checkovSkips")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import VALUE_SETS, objects

CHECKOV = Path(sys.executable).with_name("checkov")


def scan(directory: Path) -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.skip(f"no checkov at {CHECKOV}: `make .venv/.installed` installs it")
    command = [str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "--compact", "-o", "json"]
    # --skip-download: no guidelines or policies from the network; the built-in checks only.
    done = subprocess.run([*command, "--skip-download"], capture_output=True, text=True, timeout=600)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    (result,) = report if isinstance(report, list) else [report]
    found: dict[str, Any] = result
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("rendered")
    for name in VALUE_SETS:
        (directory / f"{name}.yaml").write_text(yaml.safe_dump_all(objects(name)))
    return scan(directory)


def test_checkov_finds_nothing_that_is_not_skipped_with_a_reason(report: dict[str, Any]) -> None:
    failed = [f"{c['check_id']} {c['resource']} ({c['check_name']})" for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 1000 and report["summary"]["parsing_errors"] == 0
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.split()) >= 5, f"{check['check_id']} on {check['resource']} skipped without a reason"


def test_checkov_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    """A Deployment stripped of its security context and skips is reported."""
    deployment = next(d for d in objects("defaults") if d["kind"] == "Deployment")
    del deployment["metadata"]["annotations"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["securityContext"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(deployment))
    failed = {c["check_id"] for c in scan(tmp_path)["results"]["failed_checks"]}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28"} <= failed, failed  # escalation, read-only root, capabilities
