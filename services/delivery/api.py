"""HTTP API of the delivery service (riders); the delivery id is the order id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.delivery.domain import MAX_RADIUS_KM, Delivery, DeliveryStatus
from services.deps import CurrentPrincipal, Deliveries
from services.runtime.auth import Principal, Role, require_role
from services.runtime.web.api import PathId
from services.runtime.web.openapi import errors, ok

router = APIRouter(tags=["deliveries"])


class Point(BaseModel):
    lat: float
    lon: float


class Dropoff(Point):
    address: str


class AvailableDelivery(BaseModel):
    id: str = Field(description="the delivery id, which is the order id")
    order_id: str
    restaurant_id: str
    express: bool
    distance_km: float
    pickup: Point
    dropoff: Dropoff


class DeliveryView(BaseModel):
    id: str = Field(description="the delivery id, which is the order id")
    order_id: str
    restaurant_id: str
    customer_id: str
    status: DeliveryStatus
    express: bool
    pickup: Point
    dropoff: Dropoff
    rider_id: str | None
    created_at: str
    updated_at: str


def _rider(principal: Principal) -> str:
    require_role(principal, Role.RIDER)
    return principal.subject


def _view(delivery: Delivery) -> dict[str, Any]:
    view = delivery.to_dict()
    view.pop("version")
    view["id"] = delivery.order_id
    return view


@router.get(
    "/deliveries/available",
    response_model=None,
    responses=ok(
        list[AvailableDelivery],
        links={op: {"delivery_id": "$response.body#/0/id"} for op in ("claim", "pick_up", "deliver")},
    )
    | errors(403),
)
async def available(
    principal: CurrentPrincipal,
    deliveries: Deliveries,
    lat: Annotated[float, Query(ge=-90, le=90)],
    lon: Annotated[float, Query(ge=-180, le=180)],
    radius_km: Annotated[float, Query(gt=0, le=MAX_RADIUS_KM)] = 3.0,
) -> list[dict[str, Any]]:
    """READY, unclaimed deliveries whose pickup is within the radius: express first, then nearest."""
    _rider(principal)
    found = await deliveries.available({"lat": lat, "lon": lon}, radius_km)
    return [
        {
            "id": v["order_id"],
            "order_id": v["order_id"],
            "restaurant_id": v["restaurant_id"],
            "express": v["express"],
            "distance_km": v["distance_km"],
            "pickup": v["pickup"],
            "dropoff": v["dropoff"],
        }
        for v in found
    ]


@router.post("/deliveries/{delivery_id}/claim", response_model=None, responses=ok(DeliveryView) | errors(403, 404, 409))
async def claim(delivery_id: PathId, principal: CurrentPrincipal, deliveries: Deliveries) -> dict[str, Any]:
    """First claim wins; a later claim by another rider gets 409 DELIVERY_ALREADY_CLAIMED."""
    return _view(await deliveries.claim(delivery_id, _rider(principal)))


@router.post(
    "/deliveries/{delivery_id}/pick-up", response_model=None, responses=ok(DeliveryView) | errors(403, 404, 409)
)
async def pick_up(delivery_id: PathId, principal: CurrentPrincipal, deliveries: Deliveries) -> dict[str, Any]:
    """The claiming rider has the food: the order becomes PICKED_UP."""
    return _view(await deliveries.pick_up(delivery_id, _rider(principal)))


@router.post(
    "/deliveries/{delivery_id}/deliver", response_model=None, responses=ok(DeliveryView) | errors(403, 404, 409)
)
async def deliver(delivery_id: PathId, principal: CurrentPrincipal, deliveries: Deliveries) -> dict[str, Any]:
    """The claiming rider handed it over: the order becomes DELIVERED."""
    return _view(await deliveries.deliver(delivery_id, _rider(principal)))
