"""The riders' board on the delivery service's SQL database, searched through the index
``deliveries_board_geo (status, lat, lon)``: a range scan of the latitude band of the search box
within AVAILABLE rows, never a table scan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.delivery.domain import bounding_box
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import dumps, loads

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS deliveries_board (
        order_id TEXT PRIMARY KEY, status TEXT NOT NULL, express INTEGER NOT NULL,
        lat REAL NOT NULL, lon REAL NOT NULL, version INTEGER NOT NULL, view TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS deliveries_board_geo ON deliveries_board (status, lat, lon)",
]

SEARCH = "SELECT view FROM deliveries_board WHERE status = 'AVAILABLE' AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?"


class SqlDeliveryBoard:
    def __init__(self, db: ServiceDb) -> None:
        self._db = db

    async def apply(self, versions: Sequence[tuple[dict[str, Any], int]]) -> None:
        """Version-guarded upsert: a late event never brings a claimed delivery back."""
        async with self._db.atomic() as tx:
            await tx.executemany(
                "INSERT INTO deliveries_board (order_id, status, express, lat, lon, version, view)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
                " version = excluded.version, view = excluded.view WHERE deliveries_board.version < excluded.version",
                [
                    (v["order_id"], v["status"], int(v["express"]), v["pickup"]["lat"], v["pickup"]["lon"], n, dumps(v))
                    for v, n in versions
                ],
            )

    async def near(self, origin: dict[str, float], radius_km: float) -> list[dict[str, Any]]:
        return [loads(row[0]) for row in await self._db.fetchall(SEARCH, bounding_box(origin, radius_km))]
