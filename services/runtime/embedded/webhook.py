"""The outbound channel of the embedded runtime (the customer's chat message), an output binding.

The adapter records every message in ``outbound`` (same transaction as the feed) and, when a
webhook is configured, a sender task POSTs it with retries and backoff, outside any transaction, so
a slow or dead webhook delays nothing but its own messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import httpx

from services.runtime.clock import epoch
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import dumps

log = logging.getLogger("baedal.notify")

OUTBOUND_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS outbound (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, notification_id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, sent_at REAL, failed INTEGER NOT NULL DEFAULT 0,
        last_error TEXT)""",
    "CREATE INDEX IF NOT EXISTS outbound_due ON outbound (sent_at, failed, next_at)",
]


class RecordingWebhookBinding:
    """The embedded outbound channel (an :class:`~services.runtime.ports.OutputBinding`): records
    each message in ``outbound``, in the caller's transaction, for :class:`WebhookSender` to deliver."""

    OPERATIONS = frozenset({"create"})

    def __init__(self, db: ServiceDb) -> None:
        self._db = db

    async def invoke(self, operation: str, data: dict[str, Any]) -> None:
        if operation not in self.OPERATIONS:
            raise ValueError(f"unsupported operation {operation!r}")
        async with self._db.atomic() as tx:
            await tx.execute(
                "INSERT INTO outbound (notification_id, payload, next_at) VALUES (?, ?, ?)"
                " ON CONFLICT (notification_id) DO NOTHING",
                (data["id"], dumps(data), epoch()),
            )


class WebhookSender:
    """POSTs queued messages to ``url``; retries with exponential backoff, gives up (``failed``) after
    ``max_attempts``. Runs on its own, never inside a saga step."""

    def __init__(self, db: ServiceDb, url: str | None, max_attempts: int = 8, timeout_s: float = 2.0) -> None:
        self._db = db
        self.url = url
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.url:
            self._task = asyncio.create_task(self._loop(), name="notify-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout_s) as client:
            while True:
                try:
                    sent = await self.send_due(client)
                except Exception:
                    log.exception("webhook sender failed; retrying")
                    sent = 0
                await asyncio.sleep(0 if sent else 0.2)

    async def send_due(self, client: httpx.AsyncClient) -> int:
        rows = await self._db.database.fetchall(
            "SELECT seq, payload, attempts FROM outbound WHERE sent_at IS NULL AND failed = 0 AND next_at <= ?"
            " ORDER BY seq LIMIT 20",
            (epoch(),),
        )
        for seq, payload, attempts in rows:
            await self._send_one(client, seq, payload, attempts)
        return len(rows)

    async def _send_one(self, client: httpx.AsyncClient, seq: int, payload: str, attempts: int) -> None:
        assert self.url is not None
        try:
            response = await client.post(self.url, content=payload, headers={"Content-Type": "application/json"})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            attempts += 1
            delay = min(60.0, 0.2 * 2 ** (attempts - 1)) * (0.5 + random.random() / 2)
            async with self._db.database.transaction() as tx:
                await tx.execute(
                    "UPDATE outbound SET attempts = ?, next_at = ?, failed = ?, last_error = ? WHERE seq = ?",
                    (attempts, epoch() + delay, int(attempts >= self._max_attempts), str(exc)[:500], seq),
                )
            return
        async with self._db.database.transaction() as tx:
            await tx.execute(
                "UPDATE outbound SET attempts = ?, sent_at = ? WHERE seq = ?", (attempts + 1, epoch(), seq)
            )
