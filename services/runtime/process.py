"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Runs in the child: the kernel sends it SIGTERM when the parent dies, even by SIGKILL."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_child(command: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen, tied to this process's life on Linux (elsewhere the callers' cleanup still stops it)."""
    preexec = _die_with_parent if sys.platform == "linux" else None
    return subprocess.Popen(list(command), preexec_fn=preexec, **kwargs)
