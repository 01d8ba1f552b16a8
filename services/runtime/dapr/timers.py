"""Durable timers of one service on the Dapr runtime, kept in the service's own SQL database.

A timer is an event with ``deliverat`` in the future (the accept deadline). Dapr's outbox cannot
hold a message back, and answering RETRY until it is due is a poor fit for daprd with Redis
Streams (docs/dapr.md, "Timers"): daprd retries a RETRY in its own loop without end
(``maxRetries: -1``) while the message stays pending, the broker hands the same message out again
every ``processingTimeout``, and each copy holds one of the component's few delivery workers until
it is due. A single 300 s deadline then ties up every worker of the sidecar within minutes.

So a timer that arrives early is written here and acknowledged at once, and the service's
:class:`TimerLoop` runs it when it is due, through the same path as any delivery (the consumers'
inbox keeps a second run harmless). Replicas share the table: a replica claims a due row by moving
its due time forward (a lease) before running it, so normally one replica runs it; a replica that
dies mid-way leaves the row to come due again when the lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from services.runtime.clock import epoch
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import dumps, loads

log = logging.getLogger("baedal.dapr")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS dapr_timers (
        event_id TEXT PRIMARY KEY, due_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        envelope TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dapr_timers_due ON dapr_timers (due_at)",
]
LEASE_S = 60.0  # a claimed timer comes due again after this long if its run never finished
MAX_ATTEMPTS = 10
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
POLL_S = 1.0


class TimerTable:
    def __init__(self, db: ServiceDb) -> None:
        self._db = db

    async def schedule(self, event_id: str, due_at: float, envelope: dict[str, Any]) -> None:
        """Keep the timer (once: a redelivered message changes nothing)."""
        async with self._db.atomic() as tx:
            await tx.execute(
                "INSERT INTO dapr_timers (event_id, due_at, envelope) VALUES (?, ?, ?)"
                " ON CONFLICT (event_id) DO NOTHING",
                (event_id, due_at, dumps(envelope)),
            )

    async def claim_due(self, now: float, limit: int = 50) -> list[tuple[str, int, dict[str, Any]]]:
        """Due timers, each claimed for this replica (its due time moved by the lease)."""
        rows = await self._db.fetchall(
            "SELECT event_id, due_at, attempts, envelope FROM dapr_timers WHERE due_at <= ? ORDER BY due_at LIMIT ?",
            (now, limit),
        )
        claimed = []
        for event_id, due_at, attempts, envelope in rows:
            async with self._db.atomic() as tx:
                won = await tx.execute(
                    "UPDATE dapr_timers SET due_at = ? WHERE event_id = ? AND due_at = ?",
                    (now + LEASE_S, event_id, due_at),
                )
            if won == 1:
                claimed.append((str(event_id), int(attempts), loads(envelope)))
        return claimed

    async def done(self, event_id: str) -> None:
        async with self._db.atomic() as tx:
            await tx.execute("DELETE FROM dapr_timers WHERE event_id = ?", (event_id,))

    async def retry_at(self, event_id: str, due_at: float) -> None:
        async with self._db.atomic() as tx:
            await tx.execute(
                "UPDATE dapr_timers SET due_at = ?, attempts = attempts + 1 WHERE event_id = ?", (due_at, event_id)
            )

    async def next_due(self) -> float | None:
        row = await self._db.fetchone("SELECT MIN(due_at) FROM dapr_timers")
        return float(row[0]) if row and row[0] is not None else None

    async def pending(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM dapr_timers")
        return int(row[0]) if row else 0


Run = Callable[[dict[str, Any]], Awaitable[str]]  # the delivery's outcome: SUCCESS, RETRY or DROP
DeadLetter = Callable[[dict[str, Any], str], Awaitable[None]]


class TimerLoop:
    """Runs due timers: success deletes the row, RETRY comes back with backoff, DROP or
    ``MAX_ATTEMPTS`` failures hand the event to ``dead_letter``."""

    def __init__(self, table: TimerTable, run: Run, dead_letter: DeadLetter, service: str) -> None:
        self.table = table
        self._run = run
        self._dead_letter = dead_letter
        self._service = service
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"{self._service}-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def kick(self) -> None:
        """A timer was scheduled: look again now (it may be due sooner than the one waited for)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
                wait = POLL_S
                next_due = await self.table.next_due()
                if next_due is not None:
                    wait = min(POLL_S, max(next_due - epoch(), 0.0))
            except Exception as exc:  # the database is down, say: try again in a moment
                log.warning("%s: timers: %r", self._service, exc)
                wait = POLL_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def run_due(self) -> int:
        """Run every due timer once; how many ran."""
        due = await self.table.claim_due(epoch())
        for event_id, attempts, envelope in due:
            outcome = await self._run(envelope)
            if outcome == "SUCCESS":
                await self.table.done(event_id)
            elif outcome == "DROP" or attempts + 1 >= MAX_ATTEMPTS:
                await self._dead_letter(envelope, f"timer {outcome} after {attempts + 1} attempts")
                await self.table.done(event_id)
            else:
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempts) * random.uniform(0.5, 1.0)
                await self.table.retry_at(event_id, epoch() + delay)
        return len(due)
