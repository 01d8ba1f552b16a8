"""Child processes that never outlive their parent, and signals while a process starts."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _die_with_parent() -> None:
    """Runs in the child: the kernel sends it SIGTERM when the parent dies, even by SIGKILL."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_child(command: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen, tied to this process's life on Linux (elsewhere the callers' cleanup still stops it)."""
    preexec = _die_with_parent if sys.platform == "linux" else None
    return subprocess.Popen(list(command), preexec_fn=preexec, **kwargs)


@contextlib.contextmanager
def stop_requested() -> Iterator[asyncio.Event]:
    """An event set when SIGTERM or SIGINT arrives inside the block, for a wait during start-up:
    uvicorn only notes the signal and lets the application's start-up run to its end. The handlers
    that were installed (uvicorn's) still run, and are back in place afterwards. Signals reach the
    main thread only: elsewhere the event is never set."""
    stop = asyncio.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handle(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)  # a signal handler may interrupt the loop itself
        handler = previous[signal.Signals(sig)]
        if callable(handler):
            handler(sig, frame)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(sig, handler)
