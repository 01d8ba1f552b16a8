"""Plot ``baedal bench --json`` results side by side (docs/benchmarks.md): sagas per second, and
where the CPU of each saga went (the server's processes, the bench client, PostgreSQL, the rest).

    python scripts/plot_bench.py -o docs/bench-cores.png "SQLite, 1 process=a.json" "SQLite, 2=b.json"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

GROUPS = ("server", "postgres", "client", "other")


def load(spec: str) -> tuple[str, dict[str, Any]]:
    label, _, path = spec.rpartition("=")
    if not label:
        raise SystemExit(f"expected LABEL=PATH, got {spec!r}")
    return label, json.loads(Path(path).read_text())


def cpu_ms(result: dict[str, Any], group: str) -> float:
    usage = (result.get("cpu") or {}).get(group)
    return float(usage["ms_per_order"]) if usage else 0.0


def plot(runs: list[tuple[str, dict[str, Any]]], out: Path) -> None:
    labels = [label for label, _ in runs]
    fig, (rate, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    rate.barh(labels, [r["sagas_per_s"] for _, r in runs], color="#3b7dd8")
    rate.set_xlabel("sagas per second")
    rate.set_xlim(0, max(r["sagas_per_s"] for _, r in runs) * 1.18)
    rate.invert_yaxis()
    for y, (_, r) in enumerate(runs):
        rate.annotate(f" {r['sagas_per_s']:.0f}", (r["sagas_per_s"], y), va="center")
    left = [0.0] * len(runs)
    for group, colour in zip(GROUPS, ("#3b7dd8", "#8e5fc7", "#e0a030", "#aaaaaa"), strict=True):
        widths = [cpu_ms(r, group) for _, r in runs]
        cpu.barh(labels, widths, left=left, color=colour, label=group)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    cpu.set_xlabel("CPU per saga (ms), by process group")
    cpu.invert_yaxis()
    cpu.set_yticklabels([])
    cpu.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(GROUPS), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=PATH of a baedal bench --json result")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    plot([load(spec) for spec in args.runs], args.out)


if __name__ == "__main__":
    main()
