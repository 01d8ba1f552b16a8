"""The order views on the order service's SQL database (:class:`services.order.views.OrderViews`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import dumps, loads

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS order_view (
        order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, restaurant_id TEXT NOT NULL,
        status TEXT NOT NULL, created_at TEXT NOT NULL, version INTEGER NOT NULL, view TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS order_view_customer ON order_view (customer_id, created_at)",
    "CREATE INDEX IF NOT EXISTS order_view_restaurant ON order_view (restaurant_id, created_at)",
    "CREATE INDEX IF NOT EXISTS order_view_status ON order_view (status, created_at)",
]

MAX_PAGE = 1000


class SqlOrderViews:
    def __init__(self, db: ServiceDb) -> None:
        self._db = db

    async def apply(self, versions: Sequence[tuple[dict[str, Any], int]]) -> None:
        """Upsert, keeping the newest version: a late event never rolls the view back."""
        async with self._db.atomic() as tx:
            await tx.executemany(
                "INSERT INTO order_view (order_id, customer_id, restaurant_id, status, created_at, version, view)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
                " version = excluded.version, view = excluded.view WHERE order_view.version < excluded.version",
                [
                    (v["id"], v["customer_id"], v["restaurant_id"], v["status"], v["created_at"], n, dumps(v))
                    for v, n in versions
                ],
            )

    async def list(
        self,
        *,
        customer_id: str | None = None,
        restaurant_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("customer_id", customer_id), ("restaurant_id", restaurant_id), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._db.fetchall(
            f"SELECT view FROM order_view{where} ORDER BY created_at DESC, order_id LIMIT ? OFFSET ?",
            (*params, min(limit, MAX_PAGE), offset),
        )
        return [loads(row[0]) for row in rows]
