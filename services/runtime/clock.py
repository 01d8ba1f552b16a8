"""Time helpers: RFC 3339 UTC timestamps everywhere."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_iso() -> str:
    return iso_at(time.time())


def iso_at(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def epoch() -> float:
    return time.time()
