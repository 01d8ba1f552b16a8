"""``make loadtest``: the lunch shape against a platform, with the SLO gate; prints where the reports are.

    python -m loadtest.run [--host URL] [--smoke] [--out DIR] [LOCUST OPTIONS ...]

Without ``--host`` it starts ``baedal up`` (SQLite) on a free port of 127.0.0.1 with a temporary data
dir, signs the tokens with that data dir's secret, and stops the platform at the end, whatever
happens. With ``--host`` it drives that deployment; tokens are then signed with ``--jwt-secret``
(or ``BAEDAL_JWT_SECRET``, the cluster's Secret) or ``--data-dir``. locust runs as a subprocess (it
monkey-patches the standard library); its exit code is this one's: 0 the gate passed, 1 it failed,
2 the run could not go on. Other options go to locust and the locustfile (docs/loadtest.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx

from services.runtime.process import spawn_child

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
REPORTS = ROOT / "loadtest" / "reports"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def platform(out: Path) -> Iterator[tuple[str, Path]]:
    """A fresh ``baedal up`` on 127.0.0.1 (its URL and data dir), always stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="baedal-loadtest-") as tmp:
        data_dir, port = Path(tmp), _free_port()
        env = {k: v for k, v in os.environ.items() if k != "BAEDAL_DATABASE_URL"} | {"BAEDAL_LOAD_DEMO": "false"}
        command = [sys.executable, "-m", "services", "up", "--port", str(port), "--data-dir", str(data_dir)]
        command += ["--log-level", "warning"]
        with (out / "server.log").open("wb") as log:
            proc = spawn_child(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            print(f"[loadtest] baedal up (pid {proc.pid}) on {url}, data dir {data_dir}", file=sys.stderr, flush=True)
            try:
                _wait_ready(url, proc)
                yield url, data_dir
            finally:
                _stop(proc)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"[loadtest] baedal up exited with {proc.returncode} (see server.log)")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"[loadtest] baedal up was not ready within {READY_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def locust(url: str, out: Path, smoke: bool, data_dir: Path | None, extra: Sequence[str]) -> int:
    prefix = out / "lunch"
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url]
    command += ["--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary", "--loglevel", "INFO"]
    if smoke:
        command.append("--smoke")
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    command += list(extra)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.call(command, cwd=ROOT, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="an existing deployment (default: start baedal up on 127.0.0.1)")
    parser.add_argument("--smoke", action="store_true", help="the 60-second variant of the lunch shape")
    parser.add_argument("--out", type=Path, help="report directory (default loadtest/reports/<time>)")
    args, extra = parser.parse_known_args(argv)
    out: Path = args.out or REPORTS / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.host:
        code = locust(args.host, out, args.smoke, None, extra)
    else:
        with platform(out) as (url, data_dir):
            code = locust(url, out, args.smoke, data_dir, extra)
    verdict = {0: "the SLO gate passed", 1: "the SLO gate FAILED"}.get(code, f"the run could not go on (exit {code})")
    print(f"[loadtest] {verdict}; reports in {out}/:", file=sys.stderr)
    for name in ("lunch.html", "lunch_stats.csv", "lunch_stats_history.csv", "lunch_gate.json", "lunch_plot.png"):
        if (out / name).exists():
            print(f"  {out / name}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
