"""HTTP API of the payment service: wallets and payments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field, StrictInt

from services.deps import CurrentPrincipal, Payments
from services.payment.domain import MAX_TOP_UP
from services.runtime.auth import Role, require_admin, require_self
from services.runtime.errors import ApiError
from services.runtime.web.api import Body, PathId

router = APIRouter(tags=["payments"])


class TopUpIn(Body):
    amount: StrictInt = Field(ge=1, le=MAX_TOP_UP)


@router.post("/wallets/{customer_id}/top-ups")
async def top_up(customer_id: PathId, body: TopUpIn, principal: CurrentPrincipal, payments: Payments) -> dict[str, Any]:
    require_self(principal, customer_id)
    wallet = await payments.top_up(customer_id, body.amount)
    return {"customer_id": wallet.customer_id, "balance": wallet.balance}


@router.get("/wallets/{customer_id}")
async def get_wallet(customer_id: PathId, principal: CurrentPrincipal, payments: Payments) -> dict[str, Any]:
    require_self(principal, customer_id)
    wallet = await payments.wallet(customer_id)
    return {"customer_id": wallet.customer_id, "balance": wallet.balance}


@router.get("/payments/{order_id}")
async def get_payment(order_id: PathId, principal: CurrentPrincipal, payments: Payments) -> dict[str, Any]:
    payment = await payments.payment(order_id)
    visible = payment is not None and (
        principal.is_admin or (principal.role is Role.CUSTOMER and payment.customer_id == principal.subject)
    )
    if payment is None or not visible:
        raise ApiError(404, "PAYMENT_NOT_FOUND", f"no payment for order {order_id!r}")
    return payment.to_dict()


@router.get("/admin/audit/payments", tags=["operations"])
async def audit_payments(principal: CurrentPrincipal, payments: Payments) -> list[dict[str, Any]]:
    require_admin(principal)
    return [r.value for r in await payments.store.scan("payment:")]


@router.get("/admin/audit/wallets", tags=["operations"])
async def audit_wallets(principal: CurrentPrincipal, payments: Payments) -> list[dict[str, Any]]:
    require_admin(principal)
    return [r.value for r in await payments.store.scan("wallet:")]
