"""HTTP API of the restaurant service: owners' decisions and availability, and manifest apply."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictBool, ValidationError

from services.catalog import projection
from services.catalog.manifest import RestaurantResource, describe
from services.catalog.reconcile import catalog_event
from services.deps import CurrentPrincipal, Restaurants
from services.restaurant.domain import Ticket, TicketStatus
from services.restaurant.handlers import RestaurantService
from services.runtime.auth import Principal, Role, require_admin, require_role
from services.runtime.errors import ApiError
from services.runtime.web.api import Body, PathId
from services.runtime.web.openapi import errors, ok
from services.runtime.web.shapes import Menu

router = APIRouter()


DEFAULT_REJECT_REASON = "rejected by the restaurant"


class RejectIn(Body):
    reason: str = Field(DEFAULT_REJECT_REASON, max_length=500)


class RestaurantPatch(Body):
    open: StrictBool


class MenuItemPatch(Body):
    available: StrictBool


class TicketView(BaseModel):
    order_id: str
    restaurant_id: str
    ticket_status: TicketStatus


class Applied(BaseModel):
    restaurant_id: str
    generation: int
    changed: bool


class Deleted(BaseModel):
    restaurant_id: str
    deleted: bool


class Published(BaseModel):
    id: str
    topic: str
    restaurant_id: str


class TicketAuditRow(BaseModel):
    order_id: str
    restaurant_id: str
    status: TicketStatus


async def _require_owner(restaurants: RestaurantService, principal: Principal, restaurant_id: str) -> projection.Entry:
    require_role(principal, Role.OWNER)
    entry = await restaurants.restaurant(restaurant_id)
    if entry is None:
        raise ApiError(404, "RESTAURANT_NOT_FOUND", f"restaurant {restaurant_id!r} does not exist")
    if not principal.is_admin and principal.subject not in entry["spec"]["owners"]:
        raise ApiError(403, "FORBIDDEN", f"you are not an owner of {restaurant_id!r}")
    return entry


def _ticket_view(ticket: Ticket) -> dict[str, Any]:
    return {"order_id": ticket.order_id, "restaurant_id": ticket.restaurant_id, "ticket_status": ticket.status.value}


@router.post(
    "/restaurants/{restaurant_id}/orders/{order_id}/accept",
    status_code=202,
    tags=["restaurant owner"],
    response_model=None,
    responses=ok(TicketView, 202) | errors(403, 404, 409),
)
async def accept(
    restaurant_id: PathId, order_id: PathId, principal: CurrentPrincipal, restaurants: Restaurants
) -> dict[str, Any]:
    await _require_owner(restaurants, principal, restaurant_id)
    return _ticket_view(await restaurants.accept(restaurant_id, order_id))


@router.post(
    "/restaurants/{restaurant_id}/orders/{order_id}/reject",
    status_code=202,
    tags=["restaurant owner"],
    response_model=None,
    responses=ok(TicketView, 202) | errors(403, 404, 409),
)
async def reject(
    restaurant_id: PathId,
    order_id: PathId,
    principal: CurrentPrincipal,
    restaurants: Restaurants,
    body: RejectIn | None = None,
) -> dict[str, Any]:
    await _require_owner(restaurants, principal, restaurant_id)
    reason = body.reason if body else DEFAULT_REJECT_REASON
    return _ticket_view(await restaurants.reject(restaurant_id, order_id, reason))


@router.post(
    "/restaurants/{restaurant_id}/orders/{order_id}/start-cooking",
    status_code=202,
    tags=["restaurant owner"],
    response_model=None,
    responses=ok(TicketView, 202) | errors(403, 404, 409),
)
async def start_cooking(
    restaurant_id: PathId, order_id: PathId, principal: CurrentPrincipal, restaurants: Restaurants
) -> dict[str, Any]:
    """ACCEPTED → COOKING; from now on the customer can no longer cancel."""
    await _require_owner(restaurants, principal, restaurant_id)
    return _ticket_view(await restaurants.start_cooking(restaurant_id, order_id))


@router.post(
    "/restaurants/{restaurant_id}/orders/{order_id}/finish-cooking",
    status_code=202,
    tags=["restaurant owner"],
    response_model=None,
    responses=ok(TicketView, 202) | errors(403, 404, 409),
)
async def finish_cooking(
    restaurant_id: PathId, order_id: PathId, principal: CurrentPrincipal, restaurants: Restaurants
) -> dict[str, Any]:
    """COOKING → READY: the delivery becomes visible to riders nearby."""
    await _require_owner(restaurants, principal, restaurant_id)
    return _ticket_view(await restaurants.finish_cooking(restaurant_id, order_id))


def _availability(entry: projection.Entry) -> dict[str, Any]:
    return {"restaurant": projection.summary(entry), "items": projection.effective_items(entry)}


@router.patch(
    "/restaurants/{restaurant_id}",
    tags=["restaurant owner"],
    response_model=None,
    responses=ok(Menu) | errors(403, 404),
)
async def patch_restaurant(
    restaurant_id: PathId, body: RestaurantPatch, principal: CurrentPrincipal, restaurants: Restaurants
) -> dict[str, Any]:
    """Close early or re-open (the manifest's ``open: false`` still wins). Reaches the order read
    store through ``restaurant.availability-changed``."""
    await _require_owner(restaurants, principal, restaurant_id)
    return _availability(await restaurants.change_availability(restaurant_id, open_=body.open))


@router.patch(
    "/restaurants/{restaurant_id}/menu/{product_id}",
    tags=["restaurant owner"],
    response_model=None,
    responses=ok(Menu) | errors(403, 404),
)
async def patch_menu_item(
    restaurant_id: PathId,
    product_id: PathId,
    body: MenuItemPatch,
    principal: CurrentPrincipal,
    restaurants: Restaurants,
) -> dict[str, Any]:
    await _require_owner(restaurants, principal, restaurant_id)
    entry = await restaurants.change_availability(restaurant_id, product=(product_id, body.available))
    return _availability(entry)


@router.post(
    "/admin/restaurants",
    tags=["operations"],
    response_model=None,
    responses=ok(Applied, links={"delete_manifest": {"restaurant_id": "$response.body#/restaurant_id"}}) | errors(409),
)
async def apply_manifest(
    manifest: dict[str, Any], principal: CurrentPrincipal, restaurants: Restaurants
) -> dict[str, Any]:
    """``baedal apply``: a Restaurant manifest goes through the operator's reconcile step."""
    require_admin(principal)
    try:
        resource = RestaurantResource.model_validate(manifest)
    except ValidationError as exc:
        raise ApiError(422, "VALIDATION_ERROR", f"invalid Restaurant manifest: {describe(exc)}") from exc
    result = await restaurants.apply_manifest(resource)
    return {"restaurant_id": resource.name, "generation": result["generation"], "changed": result["changed"]}


@router.delete(
    "/admin/restaurants/{restaurant_id}",
    tags=["operations"],
    response_model=None,
    responses=ok(Deleted) | errors(404, 409),
)
async def delete_manifest(
    restaurant_id: PathId, principal: CurrentPrincipal, restaurants: Restaurants
) -> dict[str, Any]:
    require_admin(principal)
    if not await restaurants.delete_manifest(restaurant_id):
        raise ApiError(404, "RESTAURANT_NOT_FOUND", f"restaurant {restaurant_id!r} does not exist")
    return {"restaurant_id": restaurant_id, "deleted": True}


@router.post(
    "/admin/catalog/events", status_code=202, tags=["operations"], response_model=None, responses=ok(Published, 202)
)
async def publish_catalog_event(
    envelope: dict[str, Any], principal: CurrentPrincipal, restaurants: Restaurants
) -> dict[str, Any]:
    """The embedded publish port of the Kubernetes operator: a ``catalog.restaurant-upserted`` or
    ``catalog.restaurant-deleted`` CloudEvents envelope, checked, then published through this
    service's outbox like a ``baedal apply`` snapshot. The event id is kept, so a retry is a
    duplicate the consumers drop."""
    require_admin(principal)
    try:
        event = catalog_event(envelope)
    except ValueError as exc:
        raise ApiError(422, "VALIDATION_ERROR", f"not a catalog event: {exc}") from exc
    await restaurants.publish_catalog_event(event)
    return {"id": event.id, "topic": event.topic, "restaurant_id": event.subject}


@router.get("/admin/audit/tickets", tags=["operations"], response_model=None, responses=ok(list[TicketAuditRow]))
async def audit_tickets(principal: CurrentPrincipal, restaurants: Restaurants) -> list[dict[str, Any]]:
    require_admin(principal)
    return [
        {"order_id": r.value["order_id"], "restaurant_id": r.value["restaurant_id"], "status": r.value["status"]}
        for r in await restaurants.store.scan("ticket:")
    ]
