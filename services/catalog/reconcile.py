"""The one reconcile step shared by ``baedal apply`` and the Kubernetes operator.

A Restaurant resource becomes a *full snapshot* catalog event carrying the resource's ``uid`` and
``generation``; a removal becomes a tombstone event. Consumers keep the newest snapshot per
restaurant and ignore stale or repeated ones (see :mod:`services.catalog.projection`).

An event's id is derived from (topic, uid, generation): publishing the same generation again (a
retried or resumed publish) yields the same id, which the consumers' inbox drops as a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from services.catalog.manifest import Id, RestaurantResource, RestaurantSpec, describe
from services.runtime.events import TYPE_PREFIX, Event, OutboundEvent
from services.topics import CATALOG_DELETED as DELETED
from services.topics import CATALOG_UPSERTED as UPSERTED

Publish = Callable[[OutboundEvent], Awaitable[None]]

# A Kubernetes uid (uuid with dashes) or an embedded one (32 hex digits).
Uid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,128}$")]
EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SOURCE = re.compile(r"^/baedal/([a-z0-9][-a-z0-9]{0,62})$")


class SnapshotData(BaseModel):
    """The payload of ``catalog.restaurant-upserted``."""

    model_config = ConfigDict(extra="forbid")
    restaurant_id: Id
    uid: Uid
    generation: int = Field(ge=1, strict=True)
    spec: RestaurantSpec


class RemovalData(BaseModel):
    """The payload of ``catalog.restaurant-deleted``."""

    model_config = ConfigDict(extra="forbid")
    restaurant_id: Id
    uid: Uid
    generation: int = Field(ge=1, strict=True)


CATALOG_DATA: dict[str, type[SnapshotData] | type[RemovalData]] = {UPSERTED: SnapshotData, DELETED: RemovalData}


def event_id(topic: str, uid: str, generation: int) -> str:
    return hashlib.sha256(f"{topic}:{uid}:{generation}".encode()).hexdigest()[:32]


def _event(topic: str, data: SnapshotData | RemovalData, source: str) -> OutboundEvent:
    return OutboundEvent(
        topic=topic,
        source=source,
        subject=data.restaurant_id,
        data=data.model_dump(mode="json"),
        id=event_id(topic, data.uid, data.generation),
    )


def snapshot_event(resource: RestaurantResource, uid: str, generation: int, source: str) -> OutboundEvent:
    data = SnapshotData(restaurant_id=resource.name, uid=uid, generation=generation, spec=resource.spec)
    return _event(UPSERTED, data, source)


def removal_event(restaurant_id: str, uid: str, generation: int, source: str) -> OutboundEvent:
    return _event(DELETED, RemovalData(restaurant_id=restaurant_id, uid=uid, generation=generation), source)


def catalog_event(envelope: dict[str, Any]) -> OutboundEvent:
    """A catalog event received from an outside publisher (the operator), checked like a manifest.

    Keeps the envelope's id, so a retried publish stays one event for the consumers' inbox.
    Raises ``ValueError`` with a readable reason for anything but a well-formed catalog event.
    """
    event = Event.from_envelope(envelope)
    if event.topic not in CATALOG_DATA:
        raise ValueError(f"topic {event.topic!r} is not a catalog topic ({', '.join(CATALOG_DATA)})")
    if event.type != f"{TYPE_PREFIX}{event.topic}.v1":
        raise ValueError(f"type {event.type!r} does not match topic {event.topic!r}")
    if not EVENT_ID.fullmatch(event.id):
        raise ValueError("id must be 1-128 letters, digits or ._:-")
    source = SOURCE.fullmatch(event.source)
    if source is None:
        raise ValueError("source must be /baedal/<publisher> with a DNS-1123 publisher name")
    try:
        data = CATALOG_DATA[event.topic].model_validate(event.data)
    except ValidationError as exc:
        raise ValueError(f"invalid {event.topic} data: {describe(exc)}") from None
    return OutboundEvent(
        topic=event.topic, source=source[1], subject=data.restaurant_id, data=data.model_dump(mode="json"), id=event.id
    )


async def reconcile(resource: RestaurantResource, uid: str, generation: int, publish: Publish, source: str) -> None:
    await publish(snapshot_event(resource, uid, generation, source))


async def reconcile_removal(restaurant_id: str, uid: str, generation: int, publish: Publish, source: str) -> None:
    await publish(removal_event(restaurant_id, uid, generation, source))
