"""``baedal bench`` end to end on a tiny load: it starts its own platform, places and settles the
orders, audits, and reports the figures in the documented shape. (A smoke test: the performance
figures themselves are measured by hand, see docs/benchmarks.md, never asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", [[], ["--rate", "40"]], ids=["closed-loop", "open-loop"])
def test_bench_reports_every_figure_and_a_clean_audit(mode: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAEDAL_")}
    command = [
        sys.executable,
        "-m",
        "services",
        "bench",
        "--orders",
        "60",
        "--concurrency",
        "8",
        "--customers",
        "5",
        "--json",
        *mode,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["orders"] == 60 and result["accepted"] == 60
    assert result["violations"] == 0 and result["errors"] == 0
    assert result["backend"] == "sqlite"
    assert result["sagas_per_s"] > 0 and result["peak_rss_mb"] > 0
    for figure in ("placement_ms", "saga_ms"):
        assert result[figure]["p50"] <= result[figure]["p95"] <= result[figure]["p99"]
    assert len(result["rss_mb_samples"]) == 4
