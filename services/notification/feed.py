"""The notification feeds and the outbound channel's queue, in the notification service's database.

The outbound channel (the seeds' KakaoTalk message) is an output binding: the embedded adapter
records every message in ``outbound`` (same transaction as the feed) and, when a webhook is
configured, a sender task POSTs it with retries and backoff, outside any transaction, so a slow or
dead webhook delays nothing but its own messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

import httpx

from services.delivery.domain import bounding_box, distance_km
from services.notification.domain import Notification
from services.runtime.clock import epoch
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import dumps, loads

log = logging.getLogger("baedal.notify")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, recipient TEXT NOT NULL,
        order_id TEXT NOT NULL, status TEXT NOT NULL, message TEXT NOT NULL, created_at TEXT NOT NULL,
        lat REAL, lon REAL)""",
    "CREATE INDEX IF NOT EXISTS notifications_recipient ON notifications (recipient, seq)",
    "CREATE INDEX IF NOT EXISTS notifications_riders ON notifications (recipient, lat, lon)",
    """CREATE TABLE IF NOT EXISTS outbound (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, notification_id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, sent_at REAL, failed INTEGER NOT NULL DEFAULT 0,
        last_error TEXT)""",
    "CREATE INDEX IF NOT EXISTS outbound_due ON outbound (sent_at, failed, next_at)",
]

PAGE = 100
RIDER_ALERT_RADIUS_KM = 3.0


class SqlFeed:
    def __init__(self, db: ServiceDb) -> None:
        self._db = db

    async def add(self, notifications: Sequence[Notification]) -> None:
        """Store, idempotently: the id is derived from the event and the recipient."""
        if not notifications:
            return
        async with self._db.atomic() as tx:
            await tx.executemany(
                "INSERT INTO notifications (id, recipient, order_id, status, message, created_at, lat, lon)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [
                    (n.id, n.recipient, n.order_id, n.status, n.message, n.created_at, n.lat, n.lon)
                    for n in notifications
                ],
            )

    async def for_recipient(self, recipient: str, after: int = 0, limit: int = PAGE) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT seq, id, order_id, status, message, created_at FROM notifications"
            " WHERE recipient = ? AND seq > ? ORDER BY seq LIMIT ?",
            (recipient, after, limit),
        )
        return [_view(row) for row in rows]

    async def for_rider(self, where: dict[str, float], after: int = 0, limit: int = PAGE) -> list[dict[str, Any]]:
        """READY-delivery alerts near the rider's position."""
        lat_min, lat_max, lon_min, lon_max = bounding_box(where, RIDER_ALERT_RADIUS_KM)
        rows = await self._db.fetchall(
            "SELECT seq, id, order_id, status, message, created_at, lat, lon FROM notifications"
            " WHERE recipient = 'riders' AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (lat_min, lat_max, lon_min, lon_max, after, limit),
        )
        return [_view(r) for r in rows if distance_km(where, {"lat": r[6], "lon": r[7]}) <= RIDER_ALERT_RADIUS_KM]

    async def outbound_log(self, limit: int = PAGE) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT seq, payload, attempts, sent_at, failed, last_error FROM outbound ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [
            {
                "seq": r[0],
                "notification": loads(r[1]),
                "attempts": r[2],
                "sent": r[3] is not None,
                "failed": bool(r[4]),
                "last_error": r[5],
            }
            for r in rows
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


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"seq": row[0], "id": row[1], "order_id": row[2], "status": row[3], "message": row[4], "created_at": row[5]}


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
