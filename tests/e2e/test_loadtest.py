"""``make loadtest`` end to end, bounded: the lunch shape's smoke variant against a platform the
runner starts on 127.0.0.1, with the SLO gate on (docs/loadtest.md). locust monkey-patches the
standard library, so it only ever runs as a subprocess here.

The healthy run gets loose latency targets: this machine is shared (2 cores, other suites running),
and what is checked here is that the gate passes a healthy platform and fails when it should, not
the latency figures (measured by hand, docs/loadtest.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Few users: the smoke is about the gate, not about load (base 1 order/s, plateau 3/s).
BOUNDED = ["--base-rate", "1", "--customers", "40", "--restaurants", "6", "--owners", "2", "--riders", "3"]


def loadtest(out: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAEDAL_")}
    command = [sys.executable, "-m", "loadtest.run", "--out", str(out), *BOUNDED, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def gate(out: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads((out / "lunch_gate.json").read_text())
    return result


def test_the_smoke_passes_the_gate_on_a_healthy_platform_and_writes_every_report(tmp_path: Path) -> None:
    started = time.monotonic()
    done = loadtest(tmp_path, "--smoke", "--slo-orders-p99-ms", "3000", "--slo-menu-p99-ms", "3000")
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 150  # 60 s of shape, set-up, settling, audit, start and stop
    for name in ("lunch.html", "lunch_stats.csv", "lunch_stats_history.csv", "lunch_plot.png", "lunch_plot.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = gate(tmp_path)
    figures = report["figures"]
    assert isinstance(figures, dict)
    assert report["passed"] is True and report["failed"] == []
    assert figures["orders_placed"] > 20 and figures["failures"] == 0
    assert figures["unsettled"] == 0 and figures["audit_ok"] is True
    assert "the SLO gate passed" in done.stderr and str(tmp_path / "lunch_plot.png") in done.stderr


def test_an_impossible_target_fails_the_gate(tmp_path: Path) -> None:
    done = loadtest(tmp_path, "--smoke", "--lunch-duration", "15", "--slo-orders-p99-ms", "1")
    assert done.returncode == 1, done.stderr[-3000:]
    report = gate(tmp_path)
    assert report["passed"] is False
    failed = report["failed"]
    assert isinstance(failed, list) and any("POST /orders p99" in reason for reason in failed), failed
    assert "the SLO gate FAILED" in done.stderr


def test_an_unreachable_target_fails_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = loadtest(tmp_path, "--host", url, "--jwt-secret", "not-a-platform", "--smoke", timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert time.monotonic() - started < 30
    failed = gate(tmp_path)["failed"]
    assert isinstance(failed, list) and "could not be set up" in failed[0]
