"""Who is told what, for which event. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CUSTOMER_MESSAGES = {
    "PENDING": "주문이 접수되었습니다. Your order was placed; paying now.",
    "PAID": "결제가 완료되었습니다. Paid; waiting for the restaurant.",
    "ACCEPTED": "가게에서 주문을 수락했습니다. The restaurant accepted your order.",
    "COOKING": "조리를 시작했습니다. Cooking has started.",
    "READY": "조리가 끝났습니다. Ready; a rider will pick it up.",
    "PICKED_UP": "배달을 시작했습니다. On its way.",
    "DELIVERED": "배달이 완료되었습니다. Delivered; please confirm receipt.",
    "COMPLETED": "주문이 완료되었습니다. Completed. Enjoy your meal!",
    "CANCELLING": "주문을 취소하고 있습니다. Cancelling; any payment is being refunded.",
    "CANCELLED": "주문이 취소되었습니다. Cancelled.",
}


@dataclass(frozen=True)
class Notification:
    id: str
    recipient: str  # "<role>:<subject>", e.g. "customer:mina", "owner:owner-kim", "riders"
    order_id: str
    status: str
    message: str
    created_at: str
    lat: float | None = None  # where, for riders' alerts
    lon: float | None = None


def for_order_status(event_id: str, order: dict[str, Any], now: str) -> Notification:
    """Every status change of an order tells its customer."""
    status = order["status"]
    message = CUSTOMER_MESSAGES[status]
    if status == "CANCELLED" and order.get("cancel_reason") == "PAYMENT_UNAVAILABLE":
        message = (
            "결제 시스템이 혼잡합니다. 잠시 후 다시 시도해 주세요. Payments are unavailable; please try again later."
        )
    elif status == "CANCELLED" and order.get("cancel_reason"):
        message = f"{message} ({order['cancel_reason']})"
    return Notification(f"{event_id}:customer", f"customer:{order['customer_id']}", order["id"], status, message, now)


def for_paid_order(event_id: str, order: dict[str, Any], owners: list[str], now: str) -> list[Notification]:
    """A newly paid order tells its restaurant's owners."""
    total = order["total_price"]
    return [
        Notification(
            f"{event_id}:owner:{owner}",
            f"owner:{owner}",
            order["order_id"],
            "PAID",
            f"새 주문이 들어왔습니다. New paid order, {total:,} KRW.",
            now,
        )
        for owner in owners
    ]


def for_ready_delivery(event_id: str, delivery: dict[str, Any], now: str) -> Notification | None:
    """A delivery ready for pickup alerts the riders near it (they ask with their position)."""
    if delivery["status"] != "AVAILABLE":
        return None
    pickup = delivery["pickup"]
    kind = "급송 " if delivery["express"] else ""
    return Notification(
        f"{event_id}:riders",
        "riders",
        delivery["order_id"],
        "READY",
        f"{kind}픽업 대기 중인 배달이 있습니다. A delivery is ready for pickup.",
        now,
        pickup["lat"],
        pickup["lon"],
    )
