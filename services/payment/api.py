"""HTTP API of the payment service: wallets and payments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictInt

from services.deps import CurrentPrincipal, Payments
from services.payment.domain import MAX_TOP_UP, FailureReason, PaymentStatus
from services.runtime.auth import Role, require_admin, require_self
from services.runtime.errors import ApiError
from services.runtime.web.api import Body, PathId
from services.runtime.web.openapi import errors, ok

router = APIRouter(tags=["payments"])


class TopUpIn(Body):
    amount: StrictInt = Field(ge=1, le=MAX_TOP_UP)


class WalletView(BaseModel):
    customer_id: str
    balance: int


class WalletAuditRow(WalletView):
    topped_up: int


class PaymentView(BaseModel):
    order_id: str
    customer_id: str
    amount: int
    method: str
    status: PaymentStatus
    failure_reason: FailureReason | None


@router.post("/wallets/{customer_id}/top-ups", response_model=None, responses=ok(WalletView))
async def top_up(customer_id: PathId, body: TopUpIn, principal: CurrentPrincipal, payments: Payments) -> dict[str, Any]:
    require_self(principal, customer_id)
    wallet = await payments.top_up(customer_id, body.amount)
    return {"customer_id": wallet.customer_id, "balance": wallet.balance}


@router.get("/wallets/{customer_id}", response_model=None, responses=ok(WalletView))
async def get_wallet(customer_id: PathId, principal: CurrentPrincipal, payments: Payments) -> dict[str, Any]:
    require_self(principal, customer_id)
    wallet = await payments.wallet(customer_id)
    return {"customer_id": wallet.customer_id, "balance": wallet.balance}


@router.get("/payments/{order_id}", response_model=None, responses=ok(PaymentView) | errors(404))
async def get_payment(order_id: PathId, principal: CurrentPrincipal, payments: Payments) -> dict[str, Any]:
    payment = await payments.payment(order_id)
    visible = payment is not None and (
        principal.is_admin or (principal.role is Role.CUSTOMER and payment.customer_id == principal.subject)
    )
    if payment is None or not visible:
        raise ApiError(404, "PAYMENT_NOT_FOUND", f"no payment for order {order_id!r}")
    return payment.to_dict()


@router.get("/admin/audit/payments", tags=["operations"], response_model=None, responses=ok(list[PaymentView]))
async def audit_payments(principal: CurrentPrincipal, payments: Payments) -> list[dict[str, Any]]:
    require_admin(principal)
    return [r.value for r in await payments.store.scan("payment:")]


@router.get("/admin/audit/wallets", tags=["operations"], response_model=None, responses=ok(list[WalletAuditRow]))
async def audit_wallets(principal: CurrentPrincipal, payments: Payments) -> list[dict[str, Any]]:
    require_admin(principal)
    return [r.value for r in await payments.store.scan("wallet:")]
