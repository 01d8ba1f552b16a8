"""The riders' board port: a read model fed by ``delivery.status-changed``, telling where the
ready, unclaimed deliveries are. The SQL adapter is ``services.runtime.sql.delivery_board``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class DeliveryBoard(Protocol):
    async def apply(self, versions: Sequence[tuple[dict[str, Any], int]]) -> None: ...

    async def near(self, origin: dict[str, float], radius_km: float) -> list[dict[str, Any]]:
        """AVAILABLE deliveries in the bounding box of the circle (the caller filters exactly)."""
