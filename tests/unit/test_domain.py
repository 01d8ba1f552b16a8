"""Pure unit tests of the domain: state machines, price and total validation. No I/O."""

from __future__ import annotations

import pytest

from services.catalog import projection
from services.order.domain import CancelReason, LineRequest, Order, OrderStatus, PlaceOrder, place
from services.payment.domain import FailureReason, PaymentStatus, Wallet, pay_from_wallet, refund, void
from services.restaurant.domain import RejectReason, Ticket, TicketStatus
from services.runtime.errors import DomainError
from services.topics import DomainEvent

NOW = "2026-11-21T05:00:00.000000Z"
SPEC = {
    "display_name": "서울치킨",
    "open": True,
    "auto_accept": True,
    "accept_timeout_seconds": 300,
    "location": {"lat": 37.5, "lon": 127.0},
    "delivery_fee": 3000,
    "express_fee": 5000,
    "owners": ["kim"],
    "menu": [
        {"id": "fried", "name": "후라이드", "price": 18000, "available": True},
        {"id": "wings", "name": "윙", "price": 17000, "available": False},
    ],
}


def entry(**changes: object) -> projection.Entry:
    base = projection.apply_snapshot(None, {"restaurant_id": "r", "uid": "u1", "generation": 1, "spec": SPEC})
    assert base is not None
    return {**base, **changes}


def command(*lines: tuple[str, int, int], total: int, express: bool = False) -> PlaceOrder:
    return PlaceOrder(
        "c",
        "r",
        tuple(LineRequest(*line) for line in lines),
        {"address": "a", "lat": 1.0, "lon": 1.0, "express": express},
        "wallet",
        total,
    )


def new_order() -> Order:
    order, _ = place("o1", command(("fried", 2, 18000), total=39000), entry(), NOW)
    return order


# ------------------------------------------------------------------ placement


def test_place_computes_total_with_delivery_fee() -> None:
    order = new_order()
    assert order.status is OrderStatus.PENDING
    assert order.total_price == 39000
    assert order.history == [{"status": "PENDING", "at": NOW}]


def test_express_uses_the_express_fee() -> None:
    order, _ = place("o", command(("fried", 1, 18000), total=23000, express=True), entry(), NOW)
    assert order.total_price == 23000
    with pytest.raises(DomainError) as error:
        place("o", command(("fried", 1, 18000), total=21000, express=True), entry(), NOW)
    assert error.value.code == "TOTAL_MISMATCH"


@pytest.mark.parametrize(
    ("lines", "total", "the_entry", "code"),
    [
        ((("fried", 1, 18000),), 21000, None, "RESTAURANT_NOT_FOUND"),
        ((("fried", 1, 18000),), 21000, {"deleted": True, "spec": None}, "RESTAURANT_NOT_FOUND"),
        ((("fried", 1, 18000),), 21000, {"closed": True}, "RESTAURANT_CLOSED"),
        ((("pizza", 1, 18000),), 21000, {}, "PRODUCT_NOT_FOUND"),
        ((("wings", 1, 17000),), 20000, {}, "PRODUCT_UNAVAILABLE"),
        ((("fried", 1, 18000),), 21000, {"sold_out": ["fried"]}, "PRODUCT_UNAVAILABLE"),
        ((("fried", 1, 15000),), 18000, {}, "PRICE_MISMATCH"),
        ((("fried", 1, 18000),), 18000, {}, "TOTAL_MISMATCH"),
        ((("fried", 1, 18000), ("fried", 1, 18000)), 39000, {}, "VALIDATION_ERROR"),
    ],
)
def test_place_rejects(lines, total, the_entry, code) -> None:
    with pytest.raises(DomainError) as error:
        place("o", command(*lines, total=total), None if the_entry is None else entry(**the_entry), NOW)
    assert error.value.code == code


def test_manifest_closed_wins_over_owner_open() -> None:
    closed_spec = {**SPEC, "open": False}
    assert not projection.effective_open({**entry(), "spec": closed_spec, "closed": False})


# ------------------------------------------------------------------ order state machine


def test_happy_transitions_and_idempotence() -> None:
    order = new_order()
    assert order.payment_completed("t1") and order.status is OrderStatus.PAID
    assert not order.payment_completed("t2"), "a repeated payment event changes nothing"
    assert order.restaurant_accepted("t3")
    assert order.view()["status"] == OrderStatus.ACCEPTED
    assert not order.restaurant_rejected(CancelReason.REJECTED, "t4")
    assert [h["status"] for h in order.history] == ["PENDING", "PAID", "ACCEPTED"]
    assert order.version == 3


def test_payment_failure_cancels_pending() -> None:
    order = new_order()
    assert order.payment_failed(CancelReason.PAYMENT_FAILED, "t")
    assert (order.status, order.cancel_reason) == (OrderStatus.CANCELLED, CancelReason.PAYMENT_FAILED)
    assert not order.payment_completed("t"), "a late success cannot revive a cancelled order"


def test_rejection_waits_for_the_refund() -> None:
    order = new_order()
    order.payment_completed("t")
    assert order.restaurant_rejected(CancelReason.ACCEPT_TIMEOUT, "t")
    assert order.status is OrderStatus.CANCELLING
    assert not order.restaurant_accepted("t")
    assert order.payment_refunded("t")
    assert order.view()["status"] == OrderStatus.CANCELLED
    assert order.cancel_reason is CancelReason.ACCEPT_TIMEOUT


@pytest.mark.parametrize("steps", [[], ["pay"], ["pay", "accept"]])
def test_customer_may_cancel_until_cooking(steps: list[str]) -> None:
    order = new_order()
    for step in steps:
        (order.payment_completed if step == "pay" else order.restaurant_accepted)("t")
    order.request_cancel("t")
    assert (order.status, order.cancel_reason) == (OrderStatus.CANCELLING, CancelReason.CUSTOMER_CANCELLED)
    with pytest.raises(DomainError) as error:
        order.request_cancel("t")
    assert error.value.code == "INVALID_STATE"


def test_cancelling_order_ignores_a_late_payment_and_settles_on_void() -> None:
    order = new_order()
    order.request_cancel("t")
    assert not order.payment_completed("t")
    assert order.payment_failed(CancelReason.PAYMENT_FAILED, "t")
    assert (order.status, order.cancel_reason) == (OrderStatus.CANCELLED, CancelReason.CUSTOMER_CANCELLED)


def test_order_round_trips_through_dict() -> None:
    order = new_order()
    order.request_cancel("t")
    assert Order.from_dict(order.to_dict()) == order


# ------------------------------------------------------------------ payments


def test_wallet_pays_only_what_it_holds() -> None:
    wallet = Wallet("c", balance=50_000, topped_up=50_000)
    assert pay_from_wallet(wallet, "o1", 39_000)[0].status is PaymentStatus.COMPLETED
    failed, _ = pay_from_wallet(wallet, "o2", 39_000)
    assert (failed.status, failed.failure_reason) == (PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS)
    assert wallet.balance == 11_000


def test_a_wallet_pays_its_exact_balance_but_not_one_won_more() -> None:
    exact = Wallet("c", balance=39_000, topped_up=39_000)
    assert pay_from_wallet(exact, "o1", 39_000)[0].status is PaymentStatus.COMPLETED
    assert exact.balance == 0
    short = Wallet("d", balance=38_999, topped_up=38_999)
    assert pay_from_wallet(short, "o2", 39_000)[0].failure_reason is FailureReason.INSUFFICIENT_FUNDS
    assert short.balance == 38_999


def test_refund_once() -> None:
    wallet = Wallet("c", balance=39_000, topped_up=39_000)
    payment, _ = pay_from_wallet(wallet, "o", 39_000)
    assert refund(wallet, payment) and wallet.balance == 39_000
    assert not refund(wallet, payment) and wallet.balance == 39_000
    assert not refund(wallet, void("o2", "c", 100, "wallet")[0])


@pytest.mark.parametrize("amount", [0, -1, 10_000_001])
def test_top_up_bounds(amount: int) -> None:
    with pytest.raises(DomainError):
        Wallet("c").top_up(amount)


# ------------------------------------------------------------------ tickets


def ticket() -> Ticket:
    return Ticket("o", "r", "c", TicketStatus.PENDING, 100, [], NOW, NOW)


def test_ticket_decisions_are_final() -> None:
    accepted = ticket()
    accepted.accept("t")
    with pytest.raises(DomainError):
        accepted.reject(RejectReason.REJECTED, "no", "t")
    assert not accepted.time_out("t"), "a deadline after acceptance does nothing"
    assert accepted.cancel("t") and accepted.status is TicketStatus.CANCELLED
    timed_out = ticket()
    assert timed_out.time_out("t") and timed_out.reason == "ACCEPT_TIMEOUT"
    assert not timed_out.cancel("t")


# ------------------------------------------------------------------ the events changes cause


def topics_of(events: list[DomainEvent]) -> list[str]:
    return [e.topic for e in events]


def test_order_changes_return_the_events_they_cause() -> None:
    order, events = place("o1", command(("fried", 2, 18000), total=39000), entry(), NOW)
    assert topics_of(events) == ["order.placed", "order.status-changed"]
    assert topics_of(order.payment_completed("t")) == ["order.status-changed", "order.paid"]
    assert order.payment_completed("t") == [], "a repeated event changes nothing and causes nothing"
    rejected = order.restaurant_rejected(CancelReason.REJECTED, "t")
    assert topics_of(rejected) == ["order.status-changed", "order.cancel-requested"]
    assert rejected[1].data["reason"] == "REJECTED"
    (refunded,) = order.payment_refunded("t")
    assert refunded.data == {"order": order.view(), "version": 4}


def test_a_payment_announces_each_status_once() -> None:
    wallet = Wallet("c", balance=39_000, topped_up=39_000)
    payment, events = pay_from_wallet(wallet, "o", 39_000)
    assert topics_of(events) == ["payment.completed"]
    assert topics_of(refund(wallet, payment)) == ["payment.refunded"]
    (voided,) = void("o2", "c", 100, "card")[1]
    assert (voided.topic, voided.data["reason"], voided.data["failure_reason"]) == (
        "payment.failed",
        "PAYMENT_FAILED",
        FailureReason.CANCELLED_BEFORE_PAYMENT,
    )


def test_a_new_ticket_is_accepted_rejected_or_given_a_deadline_by_its_restaurant() -> None:
    assert topics_of(ticket().open(entry(), NOW, 1000.0)) == ["ticket.accepted"]
    gone = ticket()
    assert topics_of(gone.open(entry(deleted=True), NOW, 1000.0)) == ["ticket.rejected"]
    waiting = ticket()
    (timer,) = waiting.open(entry(spec={**SPEC, "auto_accept": False}), NOW, 1000.0)
    assert (timer.topic, timer.data, timer.deliver_at) == ("ticket.accept-deadline", {"order_id": "o"}, 1300.0)
    assert waiting.status is TicketStatus.PENDING and waiting.accept_deadline == "1970-01-01T00:21:40.000000Z"


# ------------------------------------------------------------------ catalog projection


def snapshot(uid: str, generation: int, price: int = 18000) -> dict[str, object]:
    menu = [{**SPEC["menu"][0], "price": price}]  # type: ignore[index]
    return {"restaurant_id": "r", "uid": uid, "generation": generation, "spec": {**SPEC, "menu": menu}}


def test_newest_generation_wins_and_stale_is_ignored() -> None:
    e = projection.apply_snapshot(None, snapshot("u1", 2, 20000))
    assert e is not None
    assert projection.apply_snapshot(e, snapshot("u1", 1, 10000)) is None
    assert projection.apply_snapshot(e, snapshot("u1", 2, 20000)) is None
    newer = projection.apply_snapshot(e, snapshot("u1", 3, 21000))
    assert newer is not None and newer["spec"]["menu"][0]["price"] == 21000


def test_deleted_incarnation_cannot_come_back_but_a_new_one_can() -> None:
    e = projection.apply_snapshot(None, snapshot("u1", 1))
    gone = projection.apply_removal(e, {"restaurant_id": "r", "uid": "u1", "generation": 1})
    assert gone is not None and not projection.is_live(gone)
    assert projection.apply_snapshot(gone, snapshot("u1", 5)) is None, "late event of the deleted one"
    reborn = projection.apply_snapshot(gone, snapshot("u2", 1))
    assert reborn is not None and projection.is_live(reborn)
    assert projection.apply_removal(reborn, {"restaurant_id": "r", "uid": "u1", "generation": 1}) is None


def test_owner_overrides_survive_a_new_generation() -> None:
    e = projection.apply_snapshot(None, snapshot("u1", 1))
    e = projection.apply_overrides(
        e, {"restaurant_id": "r", "uid": "u1", "seq": 2, "closed": False, "sold_out": ["fried"]}
    )
    assert e is not None
    assert (
        projection.apply_overrides(e, {"restaurant_id": "r", "uid": "u1", "seq": 1, "closed": True, "sold_out": []})
        is None
    )
    e = projection.apply_snapshot(e, snapshot("u1", 2, 19000))
    assert e is not None
    assert projection.effective_items(e)[0] == {"id": "fried", "name": "후라이드", "price": 19000, "available": False}


def test_a_late_snapshot_of_a_replaced_incarnation_cannot_take_over() -> None:
    e = projection.apply_snapshot(None, snapshot("u1", 1))
    e = projection.apply_snapshot(e, snapshot("u2", 1, 25000))  # re-created before u1's removal arrived
    assert e is not None and "u1" in e["tombstones"]
    assert projection.apply_snapshot(e, snapshot("u1", 2)) is None
    assert projection.apply_removal(e, {"restaurant_id": "r", "uid": "u1", "generation": 2}) is None
    assert projection.is_live(e) and e["spec"]["menu"][0]["price"] == 25000


def test_overrides_belong_to_one_incarnation() -> None:
    e = projection.apply_snapshot(None, snapshot("u1", 1))
    e = projection.apply_overrides(e, {"restaurant_id": "r", "uid": "u1", "seq": 1, "closed": True, "sold_out": []})
    assert e is not None and not projection.effective_open(e)
    e = projection.apply_snapshot(e, snapshot("u2", 1))
    assert e is not None and projection.effective_open(e), "a re-created restaurant starts without overrides"
    stale = {"restaurant_id": "r", "uid": "u1", "seq": 7, "closed": True, "sold_out": []}
    assert projection.apply_overrides(e, stale) is None
