"""Deliveries: one per accepted order, visible to riders once the food is READY. Pure: no I/O.

Every change returns the event it causes, ``delivery.status-changed`` (none when nothing changed)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services import topics
from services.runtime.errors import DomainError
from services.topics import DomainEvent

EARTH_RADIUS_KM = 6371.0088
MAX_RADIUS_KM = 50.0


class DeliveryStatus(StrEnum):
    WAITING = "WAITING"  # accepted, being cooked: not visible to riders yet
    AVAILABLE = "AVAILABLE"  # READY and unclaimed
    CLAIMED = "CLAIMED"
    PICKED_UP = "PICKED_UP"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


CANCELLABLE = frozenset({DeliveryStatus.WAITING, DeliveryStatus.AVAILABLE, DeliveryStatus.CLAIMED})


@dataclass
class Delivery:
    order_id: str
    restaurant_id: str
    customer_id: str
    status: DeliveryStatus
    express: bool
    pickup: dict[str, float]
    dropoff: dict[str, Any]
    created_at: str
    updated_at: str
    rider_id: str | None = None
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # shallow: serialised at once

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        return cls(**{**data, "status": DeliveryStatus(data["status"])})

    def status_event(self) -> DomainEvent:
        """``delivery.status-changed``: the whole delivery, with the version the board keeps."""
        return DomainEvent(topics.DELIVERY_STATUS_CHANGED, {"delivery": self.to_dict(), "version": self.version})

    def _move(self, status: DeliveryStatus, now: str) -> list[DomainEvent]:
        self.status = status
        self.updated_at = now
        self.version += 1
        return [self.status_event()]

    def make_available(self, now: str) -> list[DomainEvent]:
        if self.status is not DeliveryStatus.WAITING:
            return []
        return self._move(DeliveryStatus.AVAILABLE, now)

    def claim(self, rider_id: str, now: str) -> list[DomainEvent]:
        """First claim wins; the same rider claiming again changes nothing."""
        if self.status is DeliveryStatus.CLAIMED and self.rider_id == rider_id:
            return []
        if self.rider_id is not None and self.rider_id != rider_id:
            raise DomainError("DELIVERY_ALREADY_CLAIMED", f"delivery {self.order_id!r} was claimed by another rider")
        if self.status is not DeliveryStatus.AVAILABLE:
            raise DomainError("INVALID_STATE", f"delivery {self.order_id!r} is {self.status.value}, not AVAILABLE")
        self.rider_id = rider_id
        return self._move(DeliveryStatus.CLAIMED, now)

    def _require_rider(self, rider_id: str) -> None:
        if self.rider_id != rider_id:
            raise DomainError("FORBIDDEN", "only the rider who claimed this delivery may do that")

    def pick_up(self, rider_id: str, now: str) -> list[DomainEvent]:
        self._require_rider(rider_id)
        if self.status is not DeliveryStatus.CLAIMED:
            raise DomainError("INVALID_STATE", f"delivery is {self.status.value}, not CLAIMED")
        return self._move(DeliveryStatus.PICKED_UP, now)

    def deliver(self, rider_id: str, now: str) -> list[DomainEvent]:
        self._require_rider(rider_id)
        if self.status is not DeliveryStatus.PICKED_UP:
            raise DomainError("INVALID_STATE", f"delivery is {self.status.value}, not PICKED_UP")
        return self._move(DeliveryStatus.DELIVERED, now)

    def cancel(self, now: str) -> list[DomainEvent]:
        if self.status not in CANCELLABLE:
            return []
        return self._move(DeliveryStatus.CANCELLED, now)


def open_delivery(
    order: dict[str, Any], pickup: dict[str, float], ready: bool, now: str
) -> tuple[Delivery, list[DomainEvent]]:
    """The delivery of an accepted order (``order``: the order's view), picked up at the
    restaurant's ``pickup`` location: WAITING while the food is cooked, AVAILABLE once READY."""
    delivery = Delivery(
        order_id=order["id"],
        restaurant_id=order["restaurant_id"],
        customer_id=order["customer_id"],
        status=DeliveryStatus.AVAILABLE if ready else DeliveryStatus.WAITING,
        express=bool(order["delivery"].get("express")),
        pickup=dict(pickup),
        dropoff={k: order["delivery"][k] for k in ("address", "lat", "lon")},
        created_at=now,
        updated_at=now,
    )
    return delivery, [delivery.status_event()]


def distance_km(a: dict[str, float], b: dict[str, float]) -> float:
    """Great-circle (haversine) distance."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a["lat"], a["lon"], b["lat"], b["lon"]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def bounding_box(origin: dict[str, float], radius_km: float) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) enclosing the circle: what the index can range-scan."""
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    dlon = dlat / max(math.cos(math.radians(origin["lat"])), 1e-6)
    return origin["lat"] - dlat, origin["lat"] + dlat, origin["lon"] - dlon, origin["lon"] + dlon


def rank(candidates: list[dict[str, Any]], origin: dict[str, float], radius_km: float) -> list[dict[str, Any]]:
    """Deliveries whose pickup is within the radius: express first, then nearest."""
    found = []
    for view in candidates:
        distance = distance_km(origin, view["pickup"])
        if distance <= radius_km:
            found.append({**view, "distance_km": round(distance, 3)})
    return sorted(found, key=lambda v: (not v["express"], v["distance_km"]))
