"""The order views port (CQRS read side): one row per order, fed by ``order.status-changed`` events.

Listing queries (a customer's orders, a restaurant's queue, all orders by status) read it;
``GET /orders/{id}`` reads the aggregate itself, so it is always current. The SQL adapter is
``services.runtime.sql.order_views``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class OrderViews(Protocol):
    async def apply(self, versions: Sequence[tuple[dict[str, Any], int]]) -> None:
        """Upsert (view, version) pairs; an older version never overwrites a newer one."""

    async def list(
        self,
        *,
        customer_id: str | None = None,
        restaurant_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]: ...
