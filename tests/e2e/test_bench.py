"""``baedal bench`` end to end on a tiny load: it starts its own platform, places and settles the
orders, audits, and reports the figures in the documented shape. (A smoke test: the performance
figures themselves are measured by hand, see docs/benchmarks.md, never asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from services.tools.bench import BenchConfig, run_bench

pytestmark = pytest.mark.slow


@pytest.fixture
def no_baedal_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The platform the bench starts inherits the environment: no BAEDAL_* from the caller's."""
    for key in [k for k in os.environ if k.startswith("BAEDAL_")]:
        monkeypatch.delenv(key)
    yield


def _ranked(figure: dict[str, Any]) -> bool:
    return bool(figure["p50"] <= figure["p95"] <= figure["p99"])


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
    assert all(_ranked(result[figure]) for figure in ("placement_ms", "service_ms", "saga_ms"))
    # Placement counts from when an order was due, which is never after its request was sent.
    assert all(result["placement_ms"][p] >= result["service_ms"][p] for p in ("p50", "p95", "p99"))
    assert result["refused"] == 0 and result["refused_saga_ms"] == {"p50": None, "p95": None, "p99": None}
    assert result["underfunded"] == 0 and result["underfunded_customers"] == 0 and result["menu_reads"] is None
    assert len(result["rss_mb_samples"]) == 4
    cpu = result["cpu"]
    assert cpu["server"]["cpu_s"] > 0 and cpu["server"]["processes"] >= 1 and cpu["client"]["cpu_s"] > 0
    assert cpu["postgres"] is None and cpu["other"]["cpu_s"] >= 0 and cpu["wall_s"] > 0


@pytest.mark.usefixtures("no_baedal_env")
async def test_underfunded_customers_orders_are_refused_and_compensated_while_menus_are_read() -> None:
    """Half the customers can pay for half their orders: some of theirs end CANCELLED, every other
    customer's are ACCEPTED, the audit stays clean, and the menu readers read all along."""
    config = BenchConfig(orders=40, concurrency=4, customers=4, underfunded=0.5, menu_readers=2, rate=40, quiet=True)
    result = await run_bench(config)
    assert result["violations"] == 0 and result["errors"] == 0
    assert result["underfunded_customers"] == 2
    assert result["accepted"] + result["refused"] == 40
    # Customers 2 and 3 are fully funded (20 orders); 0 and 1 can pay for only some of their 20.
    assert 20 < result["accepted"] < 40 and result["refused"] > 0
    assert _ranked(result["saga_ms"]) and _ranked(result["refused_saga_ms"])
    assert result["sagas_per_s"] > 0
    menu = result["menu_reads"]
    assert menu["readers"] == 2 and menu["reads"] > 0 and menu["errors"] == 0
    assert menu["reads_per_s"] > 0 and _ranked(menu["latency_ms"])
    assert result["cpu"]["server"]["cpu_s"] > 0 and result["cpu"]["postgres"] is None


@pytest.mark.usefixtures("no_baedal_env")
async def test_out_of_range_options_are_refused_before_anything_starts() -> None:
    with pytest.raises(Exception, match="--underfunded must be between 0 and 1"):
        await run_bench(BenchConfig(orders=1, underfunded=1.5, quiet=True))
