"""The second process of ``baedal up``: the engine, which serves HTTP alongside the first process
and runs the event consumers of every service but the order service, so that the platform uses
two cores.

Python runs one thread of code at a time. ``baedal up --processes 2`` keeps the order service's
relay and worker in its own process and starts this one for the other services' relays and
workers and the notification channel's sender; both accept HTTP connections on the one listening
socket, which this process inherits, and serve every route. Both open every service's database: a
request commits where it always did, and a relay still queues its events in the subscribers'
databases. They wake each other through a :class:`~services.runtime.embedded.peer.Peer`;
everything durable is in the databases, so either process may die at any point and lose nothing
(docs/decisions.md, decision 27).

The engine dies with the gateway's process (``PR_SET_PDEATHSIG``, and the peer's end-of-file); if
the engine dies, the gateway's process stops and exits with the engine's status, like one process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

from services.runtime.failures import CouldNotRun
from services.runtime.process import spawn_child
from services.runtime.settings import Settings

log = logging.getLogger("baedal.engine")

# Chosen by measurement (docs/benchmarks.md): the order service's consumers and the gateway's HTTP
# on one core, the other four services' consumers on the other.
GATEWAY_SERVICES = ("order",)
ENGINE_SERVICES = ("payment", "restaurant", "delivery", "notification")
STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 60.0


def engine_env(settings: Settings) -> dict[str, str]:
    """The environment that gives the engine the gateway's settings: ``baedal up`` takes some from
    its flags, which the engine does not see; the rest it reads from the same environment."""
    env = os.environ | {
        "BAEDAL_DATA_DIR": str(settings.data_dir.resolve()),
        "BAEDAL_PAYGATE_URL": settings.paygate_url,
        "BAEDAL_LOAD_DEMO": "false",  # the gateway's process loads it
    }
    if settings.database_url:
        env["BAEDAL_DATABASE_URL"] = settings.database_url
    return env


class EngineProcess:
    """The engine as seen from the gateway's process: started, watched, stopped."""

    def __init__(
        self, peer_socket: socket.socket, http: socket.socket, settings: Settings, paused: Sequence[str] = ()
    ) -> None:
        self._socket = peer_socket
        self._http = http
        self._settings = settings
        self._paused = list(paused)
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.exit_code: int | None = None  # set when it died on its own

    def start(self, died: Callable[[int], None]) -> None:
        fd, http = self._socket.fileno(), self._http.fileno()
        command = [sys.executable, "-m", "services.entrypoints.engine", "--peer-fd", str(fd), "--http-fd", str(http)]
        command += [arg for service in self._paused for arg in ("--pause", service)]
        command += ["--log-level", logging.getLevelName(logging.getLogger().level).lower()]
        self._process = spawn_child(command, env=engine_env(self._settings), pass_fds=(fd, http))
        self._socket.close()  # the engine's end now lives in the engine only: its exit closes it
        self._watcher = asyncio.create_task(self._watch(died), name="engine-watcher")
        log.info("engine process %d runs the consumers of %s", self._process.pid, ", ".join(ENGINE_SERVICES))

    async def wait_ready(self, ready: asyncio.Event) -> None:
        """Until the engine says it runs its loops; an engine that dies first stops the start-up."""
        assert self._watcher is not None
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({waiter, self._watcher}, timeout=READY_TIMEOUT_S, return_when="FIRST_COMPLETED")
        waiter.cancel()
        if waiter not in done:
            code = self._process.poll() if self._process else None
            raise CouldNotRun(f"the engine process did not start (status {code}); see its log above")

    async def _watch(self, died: Callable[[int], None]) -> None:
        assert self._process is not None
        code = await asyncio.to_thread(self._process.wait)
        if not self._stopping:
            # A shell's convention for a death by signal (kill -9: 137); a clean exit here is a failure too.
            self.exit_code = code if code > 0 else 128 - code if code < 0 else 1
            log.error("the engine process exited with status %d; stopping", code)
            died(self.exit_code)

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("the engine did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._watcher is not None:
            await self._watcher


# ----------------------------------------------------------------------------- the engine itself


def run_engine(peer_fd: int, http_fd: int, paused: set[str]) -> None:
    """Serve the inherited socket until SIGTERM or SIGINT (uvicorn's handling), or until the
    gateway's process is gone; the platform starts and stops with the app."""
    from services.entrypoints.bootstrap import Platform
    from services.entrypoints.gateway import create_app
    from services.runtime.embedded.peer import Peer
    from services.runtime.web.server import server

    platform = Platform(Settings(), paused, local=ENGINE_SERVICES, peer=Peer.inherited(peer_fd))
    http = server(create_app(platform))

    def gone() -> None:
        # Stop accepting now, not at uvicorn's next tick: a platform restarted at once must not
        # find this dying engine answering on its port.
        for listener in http.servers:
            listener.close()
        http.should_exit = True

    platform.peer_gone = gone
    http.run(sockets=[socket.socket(fileno=http_fd)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.entrypoints.engine", description=__doc__)
    parser.add_argument("--peer-fd", type=int, required=True, help="the inherited end of the peer socket pair")
    parser.add_argument("--http-fd", type=int, required=True, help="the inherited listening socket")
    parser.add_argument("--pause", action="append", default=[], help="start with this service's consumers paused")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s [engine]: %(message)s")
    run_engine(args.peer_fd, args.http_fd, set(args.pause))


if __name__ == "__main__":
    main()
