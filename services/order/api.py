"""HTTP API of the order service: orders, the catalog read store, the owners' order queue."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from services.catalog import projection
from services.deps import CurrentPrincipal, Orders
from services.order.domain import CancelReason, LineRequest, Order, OrderStatus, PlaceOrder
from services.order.handlers import OrderService
from services.runtime.auth import Principal, Role, require_admin, require_role
from services.runtime.errors import ApiError
from services.runtime.web.api import SAFE_ID, Body, Limit, Offset, PathId
from services.runtime.web.openapi import errors, ok
from services.runtime.web.shapes import Menu, RestaurantSummary

router = APIRouter()


class LineIn(Body):
    product_id: str = Field(pattern=SAFE_ID)
    quantity: StrictInt = Field(ge=1, le=100)
    unit_price: StrictInt = Field(ge=0, le=10_000_000)


class DeliveryIn(Body):
    address: str = Field(min_length=1, max_length=300)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    express: StrictBool = False


def _payment_schema(schema: dict[str, Any]) -> None:
    """The rule of :meth:`PaymentIn._token_goes_with_card`, for the OpenAPI document."""
    token = {"type": "string", "minLength": 1, "maxLength": 200}
    schema.pop("properties")
    schema.pop("required")
    schema.pop("additionalProperties")  # each alternative says it
    schema["oneOf"] = [
        {
            "title": "WalletPayment",
            "type": "object",
            "properties": {"method": {"const": "wallet"}, "card_token": {"type": "null"}},
            "required": ["method"],
            "additionalProperties": False,
        },
        {
            "title": "CardPayment",
            "type": "object",
            "properties": {"method": {"const": "card"}, "card_token": token},
            "required": ["method", "card_token"],
            "additionalProperties": False,
        },
    ]


class PaymentIn(Body):
    """``{"method": "wallet"}`` or ``{"method": "card", "card_token": "tok_..."}``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_payment_schema)

    method: Literal["wallet", "card"]
    card_token: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _token_goes_with_card(self) -> PaymentIn:
        if (self.method == "card") != (self.card_token is not None):
            raise ValueError("card_token is required with method card, and only then")
        return self


class PlaceOrderIn(Body):
    restaurant_id: str = Field(pattern=SAFE_ID)
    items: list[LineIn] = Field(min_length=1, max_length=50)
    delivery: DeliveryIn
    payment: PaymentIn
    total_price: StrictInt = Field(ge=0, le=1_000_000_000)


# --------------------------------------------------------------------------- what the API answers
# The documented shapes of the answers (docs/openapi.json); the handlers return plain data.


class OrderLine(BaseModel):
    product_id: str
    name: str
    quantity: int
    unit_price: int


class OrderDelivery(BaseModel):
    address: str
    lat: float
    lon: float
    express: bool


class OrderPayment(BaseModel):
    method: Literal["wallet", "card"]
    status: str = Field(
        description="the order's copy of its payment's state: PENDING until the payment service answered"
    )


class HistoryEntry(BaseModel):
    status: OrderStatus
    at: str


class OrderView(BaseModel):
    """The order view, returned by every order endpoint."""

    id: str
    customer_id: str
    restaurant_id: str
    status: OrderStatus
    cancel_reason: CancelReason | None
    items: list[OrderLine]
    total_price: int
    delivery: OrderDelivery
    payment: OrderPayment
    history: list[HistoryEntry]
    created_at: str
    updated_at: str


class OrderAuditRow(BaseModel):
    id: str
    customer_id: str
    restaurant_id: str
    status: OrderStatus
    total_price: int
    created_at: str
    updated_at: str
    accepted_at: str | None


# What a client can do next with the order a POST /orders answered (operation ids are the handlers' names).
ORDER_OPERATIONS = ("get_order", "cancel_order", "confirm_order", "get_payment")
TICKET_LINKS = {
    op: {"restaurant_id": "$response.body#/restaurant_id", "order_id": "$response.body#/id"}
    for op in ("accept", "reject", "start_cooking", "finish_cooking")
}
RESTAURANT_LINKS = {
    op: {"restaurant_id": "$response.body#/0/id"} for op in ("get_menu", "patch_restaurant", "restaurant_queue")
}


def _not_found(order_id: str) -> ApiError:
    return ApiError(404, "ORDER_NOT_FOUND", f"order {order_id!r} does not exist")


async def _owns(orders: OrderService, principal: Principal, restaurant_id: str) -> bool:
    entry = await orders.menu(restaurant_id)
    return entry is not None and principal.subject in entry["spec"]["owners"]


async def _visible_order(orders: OrderService, principal: Principal, order_id: str) -> Order:
    """The order if the caller may see it; 404 otherwise, so ids of others' orders do not leak."""
    order = await orders.get(order_id)
    if order is None:
        raise _not_found(order_id)
    allowed = (
        principal.is_admin
        or (principal.role is Role.CUSTOMER and order.customer_id == principal.subject)
        or (principal.role is Role.OWNER and await _owns(orders, principal, order.restaurant_id))
    )
    if not allowed:
        raise _not_found(order_id)
    return order


async def _customers_order(orders: OrderService, principal: Principal, order_id: str, verb: str) -> str:
    """The id of an order the caller may see and, being its customer (or admin), act on."""
    order = await _visible_order(orders, principal, order_id)
    if not principal.is_admin and principal.role is not Role.CUSTOMER:
        raise ApiError(403, "FORBIDDEN", f"only the customer may {verb} an order")
    return order.id


@router.post(
    "/orders",
    status_code=202,
    tags=["orders"],
    response_model=None,
    responses=ok(
        OrderView, 202, links={op: {"order_id": "$response.body#/id"} for op in ORDER_OPERATIONS} | TICKET_LINKS
    )
    | errors(403, 404, 409),
)
async def place_order(
    body: PlaceOrderIn,
    principal: CurrentPrincipal,
    orders: Orders,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Place an order. 202 means it is durably stored; payment and acceptance follow."""
    if principal.role is not Role.CUSTOMER:
        raise ApiError(403, "FORBIDDEN", "only customers place orders")
    command = PlaceOrder(
        customer_id=principal.subject,
        restaurant_id=body.restaurant_id,
        items=tuple(LineRequest(i.product_id, i.quantity, i.unit_price) for i in body.items),
        delivery=body.delivery.model_dump(),
        payment_method=body.payment.method,
        card_token=body.payment.card_token,
        total_price=body.total_price,
    )
    order, _created = await orders.place(command, idempotency_key)
    response.headers["Location"] = f"/orders/{order.id}"
    return order.view()


@router.get("/orders/{order_id}", tags=["orders"], response_model=None, responses=ok(OrderView) | errors(404))
async def get_order(order_id: PathId, principal: CurrentPrincipal, orders: Orders) -> dict[str, Any]:
    return (await _visible_order(orders, principal, order_id)).view()


@router.get("/orders", tags=["orders"], response_model=None, responses=ok(list[OrderView]) | errors(403))
async def list_orders(
    principal: CurrentPrincipal,
    orders: Orders,
    status: OrderStatus | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """The caller's orders: a customer's own, an owner's restaurants', or all for admin."""
    state = status.value if status else None
    if principal.is_admin:
        return await orders.views.list(status=state, limit=limit, offset=offset)
    if principal.role is Role.CUSTOMER:
        return await orders.views.list(customer_id=principal.subject, status=state, limit=limit, offset=offset)
    if principal.role is Role.OWNER:
        owned = [e["restaurant_id"] for e in await orders.restaurants() if principal.subject in e["spec"]["owners"]]
        found: list[dict[str, Any]] = []
        for restaurant_id in owned:
            found += await orders.views.list(restaurant_id=restaurant_id, status=state, limit=limit + offset)
        found.sort(key=lambda v: (v["created_at"], v["id"]), reverse=True)
        return found[offset : offset + limit]
    raise ApiError(403, "FORBIDDEN", "riders have no order list")


@router.post(
    "/orders/{order_id}/cancel",
    status_code=202,
    tags=["orders"],
    response_model=None,
    responses=ok(OrderView, 202) | errors(403, 404, 409),
)
async def cancel_order(order_id: PathId, principal: CurrentPrincipal, orders: Orders) -> dict[str, Any]:
    """Cancel in PENDING, PAID or ACCEPTED; the refund (if paid) follows, then CANCELLED."""
    return (await orders.cancel(await _customers_order(orders, principal, order_id, "cancel"))).view()


@router.post(
    "/orders/{order_id}/confirm",
    status_code=202,
    tags=["orders"],
    response_model=None,
    responses=ok(OrderView, 202) | errors(403, 404, 409),
)
async def confirm_order(order_id: PathId, principal: CurrentPrincipal, orders: Orders) -> dict[str, Any]:
    """The customer confirms receipt: DELIVERED → COMPLETED."""
    return (await orders.confirm(await _customers_order(orders, principal, order_id, "confirm"))).view()


@router.get(
    "/restaurants", tags=["catalog"], response_model=None, responses=ok(list[RestaurantSummary], links=RESTAURANT_LINKS)
)
async def list_restaurants(orders: Orders) -> list[dict[str, Any]]:
    entries = [projection.summary(e) for e in await orders.restaurants()]
    return sorted(entries, key=lambda r: (not r["open"], r["id"]))


@router.get(
    "/restaurants/{restaurant_id}/menu", tags=["catalog"], response_model=None, responses=ok(Menu) | errors(404)
)
async def get_menu(restaurant_id: PathId, orders: Orders) -> dict[str, Any]:
    entry = await orders.menu(restaurant_id)
    if entry is None:
        raise ApiError(404, "RESTAURANT_NOT_FOUND", f"restaurant {restaurant_id!r} does not exist")
    return {"restaurant": projection.summary(entry), "items": projection.effective_items(entry)}


@router.get(
    "/restaurants/{restaurant_id}/orders",
    tags=["restaurant owner"],
    response_model=None,
    responses=ok(list[OrderView]) | errors(403),
)
async def restaurant_queue(
    restaurant_id: PathId,
    principal: CurrentPrincipal,
    orders: Orders,
    status: OrderStatus | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """The restaurant's order queue, for its owners."""
    require_role(principal, Role.OWNER)
    if not principal.is_admin and not await _owns(orders, principal, restaurant_id):
        raise ApiError(403, "FORBIDDEN", f"you are not an owner of {restaurant_id!r}")
    return await orders.views.list(
        restaurant_id=restaurant_id, status=status.value if status else None, limit=limit, offset=offset
    )


@router.get("/admin/audit/orders", tags=["operations"], response_model=None, responses=ok(list[OrderAuditRow]))
async def audit_orders(principal: CurrentPrincipal, orders: Orders) -> list[dict[str, Any]]:
    """Every order's audit-relevant fields, read from the aggregates (not the views)."""
    require_admin(principal)
    rows = []
    for record in await orders.store.scan("order:"):
        o = record.value
        accepted = next((h["at"] for h in o["history"] if h["status"] == "ACCEPTED"), None)
        rows.append(
            {
                "id": o["id"],
                "customer_id": o["customer_id"],
                "restaurant_id": o["restaurant_id"],
                "status": o["status"],
                "total_price": o["total_price"],
                "created_at": o["created_at"],
                "updated_at": o["updated_at"],
                "accepted_at": accepted,
            }
        )
    return rows
