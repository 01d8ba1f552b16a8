"""The lunch shape and the SLO gate of loadtest/ as plain functions (no locust here: it
monkey-patches the standard library, so it only ever runs as a subprocess, tests/e2e/test_loadtest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.gate import Figures, Targets, verdict
from loadtest.lunch import FULL_DURATION_S, PEAK_FACTOR, Lunch
from loadtest.plot import Saga, Sample, draw, percentile


def test_the_lunch_day_is_quiet_rises_from_1130_peaks_from_12_to_1230_and_declines() -> None:
    lunch = Lunch(base_rate=2.0, duration_s=FULL_DURATION_S)
    phases = {p.name: p for p in lunch.phases()}
    assert [p.name for p in lunch.phases()] == ["quiet morning", "rise", "plateau", "decline", "afternoon"]
    assert phases["rise"].clock == "11:30–12:00" and phases["plateau"].clock == "12:00–12:30"
    assert phases["afternoon"].end_s == pytest.approx(FULL_DURATION_S)
    assert lunch.rate(0) == 2.0 and lunch.rate(phases["rise"].start_s - 1) == 2.0
    middle = (phases["plateau"].start_s + phases["plateau"].end_s) / 2
    assert lunch.rate(middle) == pytest.approx(2.0 * PEAK_FACTOR)
    rising = [
        lunch.rate(phases["rise"].start_s + i) or 0 for i in range(int(phases["rise"].end_s - phases["rise"].start_s))
    ]
    assert rising == sorted(rising) and rising[-1] > 5.5
    declining = [lunch.rate(phases["decline"].start_s + i) or 0 for i in range(100)]
    assert declining == sorted(declining, reverse=True)
    assert lunch.rate(FULL_DURATION_S) is None and lunch.rate(-1) is None
    assert lunch.clock(phases["plateau"].start_s + 0.01) == "12:00"


def test_the_smoke_variant_is_the_same_day_in_sixty_seconds() -> None:
    smoke = Lunch(base_rate=3.0, duration_s=60.0)
    plateau = next(p for p in smoke.phases() if p.name == "plateau")
    assert plateau.start_s == pytest.approx(60 * 90 / 210) and smoke.rate(plateau.start_s + 1) == pytest.approx(9.0)


def healthy() -> Figures:
    return Figures(requests=10_000, failures=5, orders_placed=800, orders_p99_ms=80, menu_p99_ms=40, audit_ok=True)


def test_a_healthy_run_passes_the_gate_with_the_documented_defaults() -> None:
    assert Targets() == Targets(max_failure_ratio=0.001, orders_p99_ms=500, menu_p99_ms=300, settle_timeout_s=60)
    assert verdict(healthy(), Targets()) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"failures": 11}, "failure ratio"),
        ({"orders_p99_ms": 501}, "POST /orders p99"),
        ({"menu_p99_ms": 301}, "menu p99"),
        ({"menu_p99_ms": None}, "nothing measured"),
        ({"unsettled": 3}, "3 placed orders not in their expected state"),
        ({"audit_ok": False, "audit_violations": 2}, "audit found 2 violations"),
        ({"audit_ok": None}, "audit could not run"),
        ({"orders_placed": 0}, "no order was placed"),
        ({"exceptions": 1}, "exceptions in the users' code"),
        ({"setup_error": "ConnectError: refused"}, "could not be set up"),
    ],
)
def test_each_target_fails_the_gate(change: dict[str, object], reason: str) -> None:
    figures = healthy()
    for key, value in change.items():
        setattr(figures, key, value)
    failed = verdict(figures, Targets())
    assert len(failed) == 1 and reason in failed[0], failed


def test_the_plot_marks_the_phases_and_writes_its_figures_next_to_it(tmp_path: Path) -> None:
    lunch = Lunch(duration_s=60.0)
    samples = [Sample(t / 10, "POST", "/orders", 5.0 + t % 7, True) for t in range(600)]
    samples += [Sample(t / 5, "GET", "/restaurants/{id}/menu", 3.0, t % 50 != 0) for t in range(300)]
    sagas = [Saga(t, 20.0 + t, manual=t % 3 == 0) for t in range(60)]
    rows = draw(samples, sagas, lunch.phases(), tmp_path / "run_plot.png", "test", window_s=5.0)
    assert (tmp_path / "run_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "run_plot.csv").read_text().startswith("t_s,orders_per_s,")
    assert len(rows) == 12 and rows[0]["orders_per_s"] == 10.0 and rows[0]["failures"] == 1
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([], 99) is None
