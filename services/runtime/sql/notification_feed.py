"""The notification feeds on the notification service's SQL database
(:class:`services.notification.feed.Feed`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.delivery.domain import bounding_box, distance_km
from services.notification.domain import Notification
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import loads

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, recipient TEXT NOT NULL,
        order_id TEXT NOT NULL, status TEXT NOT NULL, message TEXT NOT NULL, created_at TEXT NOT NULL,
        lat REAL, lon REAL)""",
    "CREATE INDEX IF NOT EXISTS notifications_recipient ON notifications (recipient, seq)",
    "CREATE INDEX IF NOT EXISTS notifications_riders ON notifications (recipient, lat, lon)",
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


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"seq": row[0], "id": row[1], "order_id": row[2], "status": row[3], "message": row[4], "created_at": row[5]}
