"""The picture of a run (PNG, matplotlib): orders/s, p50 and p99 latency of the main requests, and
saga completion time, over the run, with the lunch phases marked. Also the per-window figures as
CSV next to it. Pure matplotlib (the Agg backend): no display needed."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

from loadtest.lunch import Phase

# The requests whose latency is plotted: (method, locust name).
MAIN_REQUESTS = (("POST", "/orders"), ("GET", "/restaurants/{id}/menu"), ("GET", "/restaurants"))


@dataclass(frozen=True)
class Sample:
    """One request: seconds since the shape's start, method, locust name, latency, success."""

    t_s: float
    method: str
    name: str
    ms: float
    ok: bool


@dataclass(frozen=True)
class Saga:
    """One placed order: seconds since the start when it was created, ms until ACCEPTED (None: never)."""

    t_s: float
    ms: float | None
    manual: bool


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[max(math.ceil(p / 100 * len(ranked)) - 1, 0)]


def windows(samples: Sequence[Sample], window_s: float) -> list[dict[str, float | None]]:
    """Per window: start, orders/s (202s of POST /orders), requests/s, and p50/p99 of the main requests."""
    if not samples:
        return []
    count = int(max(s.t_s for s in samples) // window_s) + 1
    buckets: list[list[Sample]] = [[] for _ in range(count)]
    for sample in samples:
        if sample.t_s >= 0:
            buckets[int(sample.t_s // window_s)].append(sample)
    rows: list[dict[str, float | None]] = []
    for index, bucket in enumerate(buckets):
        row: dict[str, float | None] = {"t_s": index * window_s}
        row["orders_per_s"] = sum(1 for s in bucket if s.ok and (s.method, s.name) == ("POST", "/orders")) / window_s
        row["requests_per_s"] = len(bucket) / window_s
        row["failures"] = sum(1 for s in bucket if not s.ok)
        by_request: dict[tuple[str, str], list[float]] = defaultdict(list)
        for s in bucket:
            by_request[(s.method, s.name)].append(s.ms)
        for method, name in MAIN_REQUESTS:
            values = by_request.get((method, name), [])
            row[f"{method} {name} p50_ms"] = percentile(values, 50)
            row[f"{method} {name} p99_ms"] = percentile(values, 99)
        rows.append(row)
    return rows


def write_csv(rows: Sequence[dict[str, float | None]], path: Path) -> None:
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _series(rows: Sequence[dict[str, float | None]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if value is not None:
            xs.append(float(row["t_s"] or 0.0))
            ys.append(float(value))
    return xs, ys


def draw(
    samples: Sequence[Sample],
    sagas: Sequence[Saga],
    phases: Sequence[Phase],
    path: Path,
    title: str,
    window_s: float = 10.0,
    wanted: Sequence[tuple[float, float]] = (),
) -> list[dict[str, float | None]]:
    """Write the PNG to ``path`` and the per-window CSV next to it; return the windows."""
    rows = windows(samples, window_s)
    write_csv(rows, path.with_suffix(".csv"))
    figure, (rate_ax, latency_ax, saga_ax) = plt.subplots(3, 1, figsize=(12, 11), sharex=True)
    centre = window_s / 2

    xs, ys = _series(rows, "orders_per_s")
    rate_ax.step([x + centre for x in xs], ys, where="mid", label="orders placed/s (202)")
    if wanted:
        rate_ax.plot([t for t, _ in wanted], [r for _, r in wanted], "--", color="grey", label="shape: wanted orders/s")
    rate_ax.set_ylabel("orders / s")
    rate_ax.legend(loc="upper left", fontsize=8)

    colours = {"POST /orders": "tab:red", "GET /restaurants/{id}/menu": "tab:blue", "GET /restaurants": "tab:green"}
    for method, name in MAIN_REQUESTS:
        label = f"{method} {name}"
        for stat, style in (("p50", ":"), ("p99", "-")):
            xs, ys = _series(rows, f"{label} {stat}_ms")
            latency_ax.plot([x + centre for x in xs], ys, style, color=colours[label], label=f"{label} {stat}")
    latency_ax.set_ylabel(f"latency, ms (per {window_s:.0f} s window)")
    latency_ax.set_yscale("log")
    latency_ax.legend(loc="upper left", fontsize=7, ncol=3)

    for manual, colour, label in ((False, "tab:purple", "auto-accept"), (True, "tab:orange", "manual accept (owner)")):
        points = [(s.t_s, s.ms) for s in sagas if s.manual is manual and s.ms is not None]
        if points:
            saga_ax.scatter([t for t, _ in points], [m for _, m in points], s=4, alpha=0.5, color=colour, label=label)
    saga_ax.set_ylabel("saga: placed → ACCEPTED, ms")
    saga_ax.set_yscale("log")
    saga_ax.set_xlabel("seconds since the start of the shape")
    saga_ax.legend(loc="upper left", fontsize=8)

    shades = ("#f2f2f2", "#ffffff")
    for index, phase in enumerate(phases):
        for ax in (rate_ax, latency_ax, saga_ax):
            ax.axvspan(phase.start_s, phase.end_s, color=shades[index % 2], zorder=0)
            ax.axvline(phase.start_s, color="grey", linewidth=0.5, zorder=1)
        rate_ax.text(
            (phase.start_s + phase.end_s) / 2,
            1.02,
            f"{phase.name}\n{phase.clock}",
            transform=rate_ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    figure.suptitle(title, y=0.995, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return rows
