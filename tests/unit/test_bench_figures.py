"""The parts of ``baedal bench`` that need no platform: the open-loop schedule, the saga figures of
both paths, and the CPU accounting over /proc (the whole run: tests/e2e/test_bench.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from services.tools.bench import (
    CpuSnapshot,
    ProcessStat,
    _cpu_line,
    _paced,
    _pool,
    _process_table,
    _sagas,
    _tree,
)


async def test_open_loop_jobs_are_due_on_the_schedule_even_when_the_cap_holds_them_back() -> None:
    """Order i is due at start + i / rate; with one slot and a slow first job, the next jobs start
    late, and their due time (from which placement latency counts) stays on the schedule."""
    due: dict[int, float] = {}
    started: dict[int, float] = {}

    async def job(index: int, at: float) -> None:
        due[index], started[index] = at, time.perf_counter()
        if index == 0:
            await asyncio.sleep(0.2)

    await _paced(5, 1000.0, 1, job)
    assert sorted(due) == [0, 1, 2, 3, 4]
    assert [due[i] - due[0] for i in range(5)] == pytest.approx([i / 1000 for i in range(5)])
    # Held back by the cap (the slow job 0 sleeps 0.2 s): counted from the schedule, that wait is in.
    assert all(started[i] - due[i] >= 0.19 for i in range(1, 5))


async def test_closed_loop_jobs_are_due_when_a_worker_takes_them() -> None:
    lags: list[float] = []

    async def job(index: int, at: float) -> None:
        lags.append(time.perf_counter() - at)
        await asyncio.sleep(0.01)

    await _pool(6, 2, job)
    assert len(lags) == 6 and all(lag >= 0 for lag in lags)


def _row(status: str, created: str, updated: str, accepted: str | None) -> dict[str, str | None]:
    return {"status": status, "created_at": created, "updated_at": updated, "accepted_at": accepted}


def test_sagas_count_both_final_states_and_leave_orders_in_flight_out() -> None:
    rows = [
        _row("ACCEPTED", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.100Z", "2026-01-01T00:00:00.100Z"),
        _row("CANCELLED", "2026-01-01T00:00:00.500Z", "2026-01-01T00:00:00.530Z", None),
        _row("PAID", "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:01.010Z", None),
        _row("ACCEPTED", "2026-01-01T00:00:01.500Z", "2026-01-01T00:00:02.000Z", "2026-01-01T00:00:02.000Z"),
    ]
    sagas = _sagas(rows)
    assert sagas.accepted_ms == pytest.approx([100, 500])
    assert sagas.refused_ms == pytest.approx([30])
    assert sagas.per_s == 1.5  # 3 finished sagas from the first created (0 s) to the last finished (2 s)
    assert _sagas([rows[2]]).per_s is None


def test_the_server_group_is_its_whole_process_tree() -> None:
    table = {
        10: ProcessStat(1, "python", 1.0),
        11: ProcessStat(10, "python", 2.0),
        12: ProcessStat(11, "python", 4.0),
        20: ProcessStat(1, "postgres", 8.0),
    }
    assert _tree(table, 10) == {10, 11, 12}
    assert _tree(table, None) == set()


def test_cpu_figures_split_the_machine_between_server_tree_client_postgres_and_the_rest() -> None:
    """A busy grandchild of a stand-in "server" process counts as server CPU."""
    burn = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"
    server = subprocess.Popen([sys.executable, "-c", burn])
    try:
        time.sleep(0.3)  # let the grandchild start
        before = CpuSnapshot.take(server.pid, postgres=False)
        time.sleep(0.5)
        cpu = CpuSnapshot.take(server.pid, postgres=False).figures(before, orders=10)
    finally:
        for pid in sorted(_tree(_process_table(), server.pid), reverse=True):
            os.kill(pid, signal.SIGKILL)
        server.wait()
    assert cpu["server"]["processes"] == 2 and cpu["server"]["cpu_s"] > 0
    assert cpu["client"]["cpu_s"] >= 0 and cpu["postgres"] is None and cpu["other"] is not None
    assert cpu["cores"] == os.cpu_count() and cpu["wall_s"] >= 0.5
    assert cpu["server"]["ms_per_order"] == pytest.approx(cpu["server"]["cpu_s"] * 100, abs=0.01)
    line = _cpu_line(cpu)
    assert line.startswith("CPU used while placing and until settled") and "everything else" in line
