"""A service on the Dapr runtime whose sidecar never answers, as its operator sees it: the process
gives up after BAEDAL_DAPR_SIDECAR_TIMEOUT_S with one line naming the address it tried, and a
SIGTERM while it waits stops it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.server import free_port

pytestmark = pytest.mark.slow
# Python starting and importing the service takes a few seconds on a busy machine.
START_S = 30.0


@contextmanager
def service_without_sidecar(tmp_path: Path, timeout_s: float) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``uvicorn services.entrypoints.apps.order:app`` on the Dapr runtime, its sidecar ports closed; the
    process and the health address it must name."""
    dapr_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAEDAL_", "DAPR_"))} | {
        "BAEDAL_RUNTIME": "dapr",
        "BAEDAL_DATA_DIR": str(tmp_path),
        "BAEDAL_JWT_SECRET": "test-only",
        "BAEDAL_DAPR_SIDECAR_TIMEOUT_S": str(timeout_s),
        "DAPR_HTTP_PORT": str(dapr_port),
        "DAPR_GRPC_PORT": str(dapr_port),
    }
    command = [sys.executable, "-m", "uvicorn", "services.entrypoints.apps.order:app", "--port", str(free_port())]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield process, f"http://127.0.0.1:{dapr_port}/v1.0/healthz/outbound"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def wait_for_line(process: subprocess.Popen[str], text: str) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        if text in line:
            return
    raise AssertionError(f"the process ended without saying {text!r}")


def rest_of_stderr(process: subprocess.Popen[str]) -> str:
    """What the process writes until it exits (a few lines: the pipe never fills)."""
    process.wait(START_S)
    assert process.stderr is not None
    return process.stderr.read()


def test_a_sidecar_that_never_answers_fails_start_up_in_time_with_one_line(tmp_path: Path) -> None:
    with service_without_sidecar(tmp_path, timeout_s=2) as (process, address):
        wait_for_line(process, "Waiting for application startup")
        waiting = time.monotonic()
        stderr = rest_of_stderr(process)
        waited = time.monotonic() - waiting
    assert process.returncode != 0
    assert 1.5 < waited < 30, waited  # the configured 2 s, not the SDK's 60 s (a busy machine is slow to exit)
    [failure] = [line for line in stderr.splitlines() if address in line]
    assert f"no Dapr sidecar answered at {address} within 2 s (Connection refused)" in failure
    assert "BAEDAL_DAPR_SIDECAR_TIMEOUT_S" in failure and "Traceback" not in stderr, stderr


def test_sigterm_while_waiting_for_the_sidecar_stops_the_process_at_once(tmp_path: Path) -> None:
    with service_without_sidecar(tmp_path, timeout_s=120) as (process, address):
        wait_for_line(process, "Waiting for application startup")
        time.sleep(0.5)  # well into the wait
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        stderr = rest_of_stderr(process)
        assert time.monotonic() - stopping < 30  # at once, not after the 120 s timeout
    assert process.returncode != 0
    assert f"stopped while waiting for the Dapr sidecar at {address}" in stderr
    assert "Traceback" not in stderr, stderr
