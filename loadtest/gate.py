"""The SLO gate: the targets (with their documented defaults, docs/loadtest.md) and the verdict
on one run's figures. Pure: the locustfile gathers the figures, this decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Targets:
    max_failure_ratio: float = 0.001  # 0.1 % of all requests
    orders_p99_ms: float = 500.0  # POST /orders
    menu_p99_ms: float = 300.0  # GET /restaurants/{id}/menu
    settle_timeout_s: float = 60.0  # every placed order in its expected state this long after the load


@dataclass
class Figures:
    """What one run measured; ``None`` where nothing was measured."""

    requests: int = 0
    failures: int = 0
    orders_placed: int = 0
    exceptions: int = 0  # errors raised in the users' own code (a bug of the load test, or an odd answer)
    orders_p99_ms: float | None = None
    menu_p99_ms: float | None = None
    unsettled: int = 0  # placed orders not in their expected state when the bound ran out
    settled_after_s: float | None = None
    audit_ok: bool | None = None  # None: the audit could not run
    audit_violations: int = 0
    setup_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def verdict(figures: Figures, targets: Targets) -> list[str]:
    """Why the run fails; an empty list is a pass."""
    if figures.setup_error:
        return [f"the data set could not be set up: {figures.setup_error}"]
    failed = []
    if figures.orders_placed == 0:
        failed.append("no order was placed")
    if figures.failure_ratio > targets.max_failure_ratio:
        failed.append(
            f"failure ratio {figures.failure_ratio:.4%} > {targets.max_failure_ratio:.4%}"
            f" ({figures.failures} of {figures.requests} requests)"
        )
    if figures.exceptions:
        failed.append(f"{figures.exceptions} exceptions in the users' code (see locust's error report)")
    for what, value, target in (
        ("POST /orders p99", figures.orders_p99_ms, targets.orders_p99_ms),
        ("GET /restaurants/{id}/menu p99", figures.menu_p99_ms, targets.menu_p99_ms),
    ):
        if value is None:
            failed.append(f"{what}: nothing measured")
        elif value > target:
            failed.append(f"{what} {value:.0f} ms > {target:.0f} ms")
    if figures.unsettled:
        failed.append(
            f"{figures.unsettled} placed orders not in their expected state {targets.settle_timeout_s:.0f} s"
            " after the load stopped"
        )
    if figures.audit_ok is None:
        failed.append("baedal audit could not run")
    elif not figures.audit_ok:
        failed.append(f"baedal audit found {figures.audit_violations} violations")
    return failed
