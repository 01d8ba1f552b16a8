"""The one reconcile step shared by ``baedal apply`` and the Kubernetes operator.

A Restaurant resource becomes a *full snapshot* catalog event carrying the resource's ``uid`` and
``generation``; a removal becomes a tombstone event. Consumers keep the newest snapshot per
restaurant and ignore stale or repeated ones (see :mod:`services.catalog.projection`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.catalog.manifest import RestaurantResource
from services.runtime.events import OutboundEvent

UPSERTED = "catalog.restaurant-upserted"
DELETED = "catalog.restaurant-deleted"
AVAILABILITY = "restaurant.availability-changed"

Publish = Callable[[OutboundEvent], Awaitable[None]]


def snapshot_event(resource: RestaurantResource, uid: str, generation: int, source: str) -> OutboundEvent:
    return OutboundEvent(
        topic=UPSERTED,
        source=source,
        subject=resource.name,
        data={
            "restaurant_id": resource.name,
            "uid": uid,
            "generation": generation,
            "spec": resource.spec_snapshot(),
        },
    )


def removal_event(restaurant_id: str, uid: str, generation: int, source: str) -> OutboundEvent:
    return OutboundEvent(
        topic=DELETED,
        source=source,
        subject=restaurant_id,
        data={"restaurant_id": restaurant_id, "uid": uid, "generation": generation},
    )


async def reconcile(resource: RestaurantResource, uid: str, generation: int, publish: Publish, source: str) -> None:
    await publish(snapshot_event(resource, uid, generation, source))


async def reconcile_removal(restaurant_id: str, uid: str, generation: int, publish: Publish, source: str) -> None:
    await publish(removal_event(restaurant_id, uid, generation, source))
