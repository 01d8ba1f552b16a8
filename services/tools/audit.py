"""``baedal audit``: the consistency invariants of the contract, checked across all services.

Reads across services are not one snapshot (an event may be in flight between two reads), so a
suspected violation is re-checked from fresh reads before it is reported: only a violation seen in
every round counts.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from services.order.domain import PAID_STATES, OrderStatus

Rows = list[dict[str, Any]]

# Invariant 6: which ticket states agree with each order state (None: no ticket yet).
TICKET_STATES_FOR: dict[str, set[str | None]] = {
    OrderStatus.PENDING: {None},
    OrderStatus.PAID: {"PENDING"},
    OrderStatus.ACCEPTED: {"ACCEPTED"},
    OrderStatus.COOKING: {"COOKING"},
    OrderStatus.READY: {"READY"},
    OrderStatus.PICKED_UP: {"READY"},
    OrderStatus.DELIVERED: {"READY"},
    OrderStatus.COMPLETED: {"READY"},
    OrderStatus.CANCELLING: {None, "REJECTED", "CANCELLED"},
    OrderStatus.CANCELLED: {None, "REJECTED", "CANCELLED"},
}


@dataclass(frozen=True)
class Violation:
    invariant: int
    subject: str
    detail: str


@dataclass(frozen=True)
class Snapshot:
    orders: Rows
    payments: Rows
    wallets: Rows
    tickets: Rows


def _age_s(timestamp: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds()


def check(snapshot: Snapshot, now: datetime | None = None, stuck_after_s: float = 30.0) -> list[Violation]:
    """Every violation of invariants 1–6 in one snapshot. Pure."""
    now = now or datetime.now(UTC)
    payments = {p["order_id"]: p for p in snapshot.payments}
    tickets = {t["order_id"]: t for t in snapshot.tickets}
    orders = {o["id"]: o for o in snapshot.orders}
    found: list[Violation] = []
    for order in snapshot.orders:
        oid, status = order["id"], order["status"]
        payment = payments.get(oid)
        pay_status = payment["status"] if payment else None
        if status == OrderStatus.CANCELLED and pay_status not in (None, "FAILED", "REFUNDED"):
            found.append(Violation(1, oid, f"CANCELLED order has a {pay_status} payment"))
        if status in PAID_STATES and (
            pay_status != "COMPLETED" or payment is None or payment["amount"] != order["total_price"]
        ):
            amount = payment["amount"] if payment else None
            found.append(
                Violation(2, oid, f"{status} order (total {order['total_price']}) has payment {pay_status} of {amount}")
            )
        if status in (OrderStatus.PENDING, OrderStatus.CANCELLING) and _age_s(order["updated_at"], now) > stuck_after_s:
            found.append(Violation(5, oid, f"order stuck in {status} for over {stuck_after_s:.0f}s"))
        ticket_status = tickets[oid]["status"] if oid in tickets else None
        if ticket_status not in TICKET_STATES_FOR[status]:
            found.append(Violation(6, oid, f"order is {status} but its restaurant ticket is {ticket_status}"))
    for oid, payment in payments.items():
        owner = orders.get(oid)
        owner_status = owner["status"] if owner else "missing"
        if payment["status"] == "COMPLETED" and owner_status in (OrderStatus.CANCELLED, "missing"):
            found.append(Violation(3, oid, f"COMPLETED payment belongs to a {owner_status} order"))
    for oid in tickets.keys() - orders.keys():
        found.append(Violation(6, oid, "restaurant ticket without an order"))
    found += _wallet_violations(snapshot)
    return found


def _wallet_violations(snapshot: Snapshot) -> list[Violation]:
    charged: dict[str, int] = defaultdict(int)
    for payment in snapshot.payments:
        if payment["method"] == "wallet" and payment["status"] == "COMPLETED":
            charged[payment["customer_id"]] += payment["amount"]
    wallets = {w["customer_id"]: w for w in snapshot.wallets}
    found = []
    for customer in wallets.keys() | charged.keys():
        wallet: dict[str, Any] = wallets.get(customer) or {"balance": 0, "topped_up": 0}
        expected = wallet["topped_up"] - charged[customer]
        if wallet["balance"] != expected or wallet["balance"] < 0:
            found.append(
                Violation(
                    4, customer, f"balance {wallet['balance']} but top-ups − completed payments + refunds = {expected}"
                )
            )
    return found


async def fetch_snapshot(client: httpx.AsyncClient) -> Snapshot:
    async def get(path: str) -> Rows:
        response = await client.get(path)
        response.raise_for_status()
        rows: Rows = response.json()
        return rows

    orders, payments, wallets, tickets = await asyncio.gather(
        get("/admin/audit/orders"),
        get("/admin/audit/payments"),
        get("/admin/audit/wallets"),
        get("/admin/audit/tickets"),
    )
    return Snapshot(orders, payments, wallets, tickets)


async def audit(
    client: httpx.AsyncClient, rounds: int = 3, delay_s: float = 1.0, stuck_after_s: float = 30.0
) -> dict[str, Any]:
    """Check, then re-check suspects from fresh reads; report only what persists."""
    snapshot = await fetch_snapshot(client)
    suspects = check(snapshot, stuck_after_s=stuck_after_s)
    for _ in range(rounds - 1):
        if not suspects:
            break
        await asyncio.sleep(delay_s)
        snapshot = await fetch_snapshot(client)
        again = {(v.invariant, v.subject) for v in check(snapshot, stuck_after_s=stuck_after_s)}
        suspects = [v for v in suspects if (v.invariant, v.subject) in again]
    in_flight = sum(1 for o in snapshot.orders if o["status"] in (OrderStatus.PENDING, OrderStatus.CANCELLING))
    by_status: dict[str, int] = defaultdict(int)
    for order in snapshot.orders:
        by_status[order["status"]] += 1
    return {
        "ok": not suspects,
        "checked": {
            "orders": len(snapshot.orders),
            "payments": len(snapshot.payments),
            "wallets": len(snapshot.wallets),
            "tickets": len(snapshot.tickets),
        },
        "orders_by_status": dict(sorted(by_status.items())),
        "in_flight": in_flight,
        "violations": [asdict(v) for v in suspects],
    }
