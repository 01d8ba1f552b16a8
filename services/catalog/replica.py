"""A service's own copy of the catalog, kept from catalog and availability events.

The order service (its menu read store) and the restaurant service (owners, auto-accept, timeouts)
both keep one, with the same rules (:mod:`services.catalog.projection`), each in its own store.
"""

from __future__ import annotations

from collections.abc import Callable

from services.catalog import projection
from services.runtime.events import Event
from services.runtime.ports import Record, StateStore
from services.runtime.unit_of_work import UnitOfWork, run_step

Apply = Callable[[projection.Entry | None, dict[str, object]], projection.Entry | None]


class CatalogReplica:
    def __init__(self, store: StateStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def key(self, restaurant_id: str) -> str:
        return f"{self.prefix}{restaurant_id}"

    async def record(self, restaurant_id: str) -> Record | None:
        return await self.store.get(self.key(restaurant_id))

    async def live(self, restaurant_id: str) -> projection.Entry | None:
        record = await self.record(restaurant_id)
        return record.value if record and projection.is_live(record.value) else None

    async def all_live(self) -> list[projection.Entry]:
        return [r.value for r in await self.store.scan(self.prefix) if projection.is_live(r.value)]

    async def _apply(self, event: Event, apply: Apply) -> None:
        key = self.key(event.data["restaurant_id"])

        async def step(uow: UnitOfWork) -> None:
            record = await uow.get(key)
            updated = apply(record.value if record else None, event.data)
            if updated is not None:  # None: stale or already applied
                uow.put(key, updated)

        await run_step(self.store, step)

    async def on_upserted(self, event: Event) -> None:
        await self._apply(event, projection.apply_snapshot)

    async def on_deleted(self, event: Event) -> None:
        await self._apply(event, projection.apply_removal)

    async def on_availability(self, event: Event) -> None:
        await self._apply(event, projection.apply_overrides)
