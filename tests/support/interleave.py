"""Forcing an interleaving without sleeps: a state store that stops a reader between its read and
the rest of its read–decide–commit step, until the test lets it go on.

On SQLite a step never suspends between its read and its commit, so two concurrent steps never
overlap by themselves; on PostgreSQL they overlap only by chance. Holding the read makes the race
happen every time, on every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from services.runtime.events import OutboundEvent
from services.runtime.ports import Record, StateStore, Write

WAIT_S = 10.0


class Hold:
    """One held read: ``reached`` once the reader has its record, which it returns on ``release``."""

    def __init__(self) -> None:
        self.record: Record | None = None
        self._reached = asyncio.Event()
        self._released = asyncio.Event()

    async def reached(self) -> Record | None:
        """Wait until the reader has read; the record it read."""
        await asyncio.wait_for(self._reached.wait(), WAIT_S)
        return self.record

    def release(self) -> None:
        self._released.set()


class HoldingStore:
    """A :class:`~services.runtime.ports.StateStore` around another that can hold the next read of a
    key (only that one: later reads, the held reader's retries included, go straight through), and
    tell the test about each commit (``after_commit``, called with its writes)."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self._holds: dict[str, Hold] = {}
        self.after_commit: Callable[[Sequence[Write]], None] | None = None

    def hold_next_read(self, key: str) -> Hold:
        hold = self._holds[key] = Hold()
        return hold

    async def get(self, key: str) -> Record | None:
        record = await self.inner.get(key)
        hold = self._holds.pop(key, None)
        if hold is not None:
            hold.record = record
            hold._reached.set()
            await asyncio.wait_for(hold._released.wait(), WAIT_S)
        return record

    async def scan(self, prefix: str) -> list[Record]:
        return await self.inner.scan(prefix)

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        await self.inner.commit(writes, events)
        if self.after_commit is not None:
            self.after_commit(writes)
