"""Bad input never yields a 5xx: every malformed, mistyped or invalid request gets its 4xx with a
problem+json ``code``, and nothing happens — no order is created and no money moves.

Also the ``Idempotency-Key`` contract: a retried request returns the same order and pays once.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from services.entrypoints.gateway import create_app
from services.runtime.web.problems import PROBLEM
from tests.support.manifests import BAD_MANIFESTS
from tests.support.platform import ORDER_BODY, Api, assert_problem, order_body

CUSTOMER = "cust-bad-input"
FUNDS = 100_000

MAX_BODY = 64 * 1024
TOTAL = 39_000  # ORDER_BODY: 2 x fried (18000) + delivery fee 3000


# --------------------------------------------------------------------------- helpers


def with_changes(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """A deep copy of the valid ``ORDER_BODY`` with one thing changed in place by ``change``."""
    body = copy.deepcopy(ORDER_BODY)
    change(body)
    return body


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """``_set("items.0.quantity", "2")``: set a (dotted) field of the body."""

    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return change


async def funded(api: Api, customer: str = CUSTOMER, amount: int = FUNDS) -> int:
    return await api.top_up(customer, amount)


async def assert_nothing_happened(api: Api, customer: str, balance: int) -> None:
    """No order exists for the customer (their list, and the aggregates), no payment was taken,
    and the wallet balance is what it was."""
    await api.settle()
    listed = await api.request("GET", "/orders", "customer", customer)
    assert listed.status_code == 200, listed.text
    assert listed.json() == []
    aggregates = (await api.request("GET", "/admin/audit/orders")).json()
    assert [o for o in aggregates if o["customer_id"] == customer] == []
    payments = (await api.request("GET", "/admin/audit/payments")).json()
    assert [p for p in payments if p["customer_id"] == customer] == []
    assert await api.balance(customer) == balance


async def wait_until(probe: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def post_raw(
    api: Api,
    path: str,
    content: bytes | AsyncIterator[bytes],
    customer: str = CUSTOMER,
    role: str = "customer",
    content_type: str = "application/json",
) -> httpx.Response:
    return await api.request("POST", path, role, customer, content=content, headers={"content-type": content_type})


# --------------------------------------------------------------------------- POST /orders: shape


BAD_ORDER_BODIES: list[Any] = [
    # missing fields
    pytest.param(_drop("restaurant_id"), 422, "VALIDATION_ERROR", id="missing-restaurant_id"),
    pytest.param(_drop("items"), 422, "VALIDATION_ERROR", id="missing-items"),
    pytest.param(_drop("delivery"), 422, "VALIDATION_ERROR", id="missing-delivery"),
    pytest.param(_drop("payment"), 422, "VALIDATION_ERROR", id="missing-payment"),
    pytest.param(_drop("total_price"), 422, "VALIDATION_ERROR", id="missing-total_price"),
    pytest.param(_drop("items.0.product_id"), 422, "VALIDATION_ERROR", id="missing-product_id"),
    pytest.param(_drop("items.0.quantity"), 422, "VALIDATION_ERROR", id="missing-quantity"),
    pytest.param(_drop("items.0.unit_price"), 422, "VALIDATION_ERROR", id="missing-unit_price"),
    pytest.param(_drop("delivery.address"), 422, "VALIDATION_ERROR", id="missing-address"),
    pytest.param(_drop("payment.method"), 422, "VALIDATION_ERROR", id="missing-payment-method"),
    # unknown extra fields (a typo must not be silently ignored)
    pytest.param(_set("tip", 1000), 422, "VALIDATION_ERROR", id="extra-top-level"),
    pytest.param(_set("items.0.discount", 1000), 422, "VALIDATION_ERROR", id="extra-in-item"),
    pytest.param(_set("delivery.expres", True), 422, "VALIDATION_ERROR", id="extra-in-delivery"),
    pytest.param(_set("customer_id", "someone-else"), 422, "VALIDATION_ERROR", id="extra-customer_id"),
    # wrong types
    pytest.param(_set("items.0.quantity", "2"), 422, "VALIDATION_ERROR", id="quantity-string"),
    pytest.param(_set("items.0.quantity", 2.5), 422, "VALIDATION_ERROR", id="quantity-fractional"),
    pytest.param(_set("items.0.quantity", True), 422, "VALIDATION_ERROR", id="quantity-bool"),
    pytest.param(_set("items.0.quantity", None), 422, "VALIDATION_ERROR", id="quantity-null"),
    pytest.param(_set("items.0.unit_price", 1.5), 422, "VALIDATION_ERROR", id="unit_price-fractional"),
    pytest.param(_set("items.0.unit_price", "18000"), 422, "VALIDATION_ERROR", id="unit_price-string"),
    pytest.param(_set("total_price", "39000"), 422, "VALIDATION_ERROR", id="total-string"),
    pytest.param(_set("total_price", 39000.5), 422, "VALIDATION_ERROR", id="total-fractional"),
    pytest.param(_set("delivery.express", "yes"), 422, "VALIDATION_ERROR", id="express-string"),
    pytest.param(_set("delivery.express", 1), 422, "VALIDATION_ERROR", id="express-int"),
    pytest.param(_set("restaurant_id", 7), 422, "VALIDATION_ERROR", id="restaurant_id-int"),
    pytest.param(_set("restaurant_id", ""), 422, "VALIDATION_ERROR", id="restaurant_id-empty"),
    pytest.param(_set("items", {"product_id": "fried"}), 422, "VALIDATION_ERROR", id="items-object"),
    pytest.param(_set("delivery", "서울"), 422, "VALIDATION_ERROR", id="delivery-string"),
    pytest.param(_set("payment", "wallet"), 422, "VALIDATION_ERROR", id="payment-string"),
    # empty and out of range
    pytest.param(_set("items", []), 422, "VALIDATION_ERROR", id="items-empty"),
    pytest.param(_set("items.0.quantity", 0), 422, "VALIDATION_ERROR", id="quantity-zero"),
    pytest.param(_set("items.0.quantity", -1), 422, "VALIDATION_ERROR", id="quantity-negative"),
    pytest.param(_set("items.0.quantity", 1_000_000), 422, "VALIDATION_ERROR", id="quantity-absurd"),
    pytest.param(_set("items.0.quantity", 10**30), 422, "VALIDATION_ERROR", id="quantity-beyond-int64"),
    pytest.param(_set("items.0.unit_price", -18000), 422, "VALIDATION_ERROR", id="unit_price-negative"),
    pytest.param(_set("total_price", -39000), 422, "VALIDATION_ERROR", id="total-negative"),
    pytest.param(_set("total_price", 10**30), 422, "VALIDATION_ERROR", id="total-beyond-int64"),
    pytest.param(_set("delivery.lat", 91.0), 422, "VALIDATION_ERROR", id="lat-out-of-range"),
    pytest.param(_set("delivery.address", ""), 422, "VALIDATION_ERROR", id="address-empty"),
    pytest.param(
        _set("items", [{"product_id": "fried", "quantity": 1, "unit_price": 18000}] * 51),
        422,
        "VALIDATION_ERROR",
        id="too-many-lines",
    ),
    # a card needs its token, and a wallet takes none
    pytest.param(_set("payment", {"method": "card"}), 422, "VALIDATION_ERROR", id="card-without-token"),
    pytest.param(
        _set("payment", {"method": "wallet", "card_token": "tok_visa"}),
        422,
        "VALIDATION_ERROR",
        id="wallet-with-card-token",
    ),
    pytest.param(_set("payment", {"method": "card", "card_token": ""}), 422, "VALIDATION_ERROR", id="empty-token"),
    pytest.param(_set("payment", {"method": "cash"}), 422, "VALIDATION_ERROR", id="method-cash"),
]


@pytest.mark.parametrize(("change", "status", "code"), BAD_ORDER_BODIES)
async def test_malformed_order_body_is_rejected(
    api: Api, change: Callable[[dict[str, Any]], Any], status: int, code: str
) -> None:
    balance = await funded(api)
    response = await api.place(CUSTOMER, with_changes(change))
    body = assert_problem(response, status, code)
    assert body.get("errors"), "a validation error says which field is wrong"
    assert "Location" not in response.headers
    await assert_nothing_happened(api, CUSTOMER, balance)


RAW_ORDER_BODIES = [
    pytest.param(b'{"restaurant_id": "seoul-chicken", "items": [', 400, id="truncated-json"),
    pytest.param(b"{not json}", 400, id="not-json"),
    pytest.param(b"{'restaurant_id': 'seoul-chicken'}", 400, id="single-quotes"),
    pytest.param(json.dumps(ORDER_BODY).encode()[:-1] + b",}", 400, id="trailing-comma"),
    pytest.param(b"\xff\xfe\x00garbage", 400, id="binary"),
    pytest.param(b"[]", 422, id="json-array"),
    pytest.param(json.dumps([ORDER_BODY]).encode(), 422, id="json-array-of-order"),
    pytest.param(b'"seoul-chicken"', 422, id="json-string"),
    pytest.param(b"42", 422, id="json-number"),
    pytest.param(b"null", 422, id="json-null"),
    pytest.param(b"", 422, id="empty-body"),
]


@pytest.mark.parametrize(("content", "status"), RAW_ORDER_BODIES)
async def test_unparseable_or_non_object_order_body_is_rejected(api: Api, content: bytes, status: int) -> None:
    balance = await funded(api)
    response = await post_raw(api, "/orders", content)
    assert_problem(response, status, "VALIDATION_ERROR")
    await assert_nothing_happened(api, CUSTOMER, balance)


UNDECODABLE = [
    pytest.param(b'{"restaurant_id": "caf\xe9"}', id="invalid-utf8"),
    pytest.param(b"[" * 20_000 + b"]" * 20_000, id="nested-too-deep"),
]


@pytest.mark.parametrize("content", UNDECODABLE)
async def test_undecodable_json_body_is_400_without_a_5xx(api: Api, content: bytes) -> None:
    balance = await funded(api)
    response = await post_raw(api, "/orders", content)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    await assert_nothing_happened(api, CUSTOMER, balance)


@pytest.mark.parametrize("content", UNDECODABLE)
async def test_undecodable_json_body_has_code_validation_error(api: Api, content: bytes) -> None:
    assert_problem(await post_raw(api, "/orders", content), 400, "VALIDATION_ERROR")


async def test_order_body_that_is_not_json_content_is_rejected(api: Api) -> None:
    balance = await funded(api)
    response = await post_raw(api, "/orders", json.dumps(ORDER_BODY).encode(), content_type="text/plain")
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code, "VALIDATION_ERROR")
    await assert_nothing_happened(api, CUSTOMER, balance)


async def test_oversized_body_is_413(api: Api) -> None:
    balance = await funded(api)
    huge = with_changes(_set("delivery.address", "가" * MAX_BODY))
    response = await api.place(CUSTOMER, huge)
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    # A body just under the limit is read (and then judged on its content, not its size).
    under = with_changes(_set("delivery.address", "a" * (MAX_BODY - 1000)))
    assert_problem(await api.place(CUSTOMER, under), 422, "VALIDATION_ERROR")
    await assert_nothing_happened(api, CUSTOMER, balance)


async def _chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    yield b'{"restaurant_id": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


async def test_oversized_streamed_body_without_content_length_is_413(api: Api) -> None:
    balance = await funded(api)
    response = await post_raw(api, "/orders", _chunks(2 * MAX_BODY))
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_happened(api, CUSTOMER, balance)


async def test_oversized_streamed_body_is_never_accepted_nor_5xx(api: Api) -> None:
    """Whatever the exact 4xx, a streamed body over the limit is refused and changes nothing."""
    balance = await funded(api)
    response = await post_raw(api, "/orders", _chunks(2 * MAX_BODY))
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    await assert_nothing_happened(api, CUSTOMER, balance)


# --------------------------------------------------------------------------- POST /orders: business rules


REJECTED_ORDERS = [
    pytest.param(order_body("no-such-restaurant"), 404, "RESTAURANT_NOT_FOUND", id="unknown-restaurant"),
    pytest.param(order_body("Seoul-Chicken"), 404, "RESTAURANT_NOT_FOUND", id="restaurant-wrong-case"),
    pytest.param(order_body(lines=(("no-such-dish", 1, 18000),)), 422, "PRODUCT_NOT_FOUND", id="unknown-product"),
    pytest.param(
        order_body(lines=(("bibimbap", 1, 9000),)), 422, "PRODUCT_NOT_FOUND", id="product-of-another-restaurant"
    ),
    pytest.param(
        order_body(lines=(("fried", 1, 18000), ("fried", 1, 18000))), 422, "VALIDATION_ERROR", id="same-product-twice"
    ),
    pytest.param(order_body(lines=(("fried", 2, 17000),)), 409, "PRICE_MISMATCH", id="price-too-low"),
    pytest.param(order_body(lines=(("fried", 2, 19000),)), 409, "PRICE_MISMATCH", id="price-too-high"),
    pytest.param(order_body(lines=(("fried", 1, 0),)), 409, "PRICE_MISMATCH", id="price-zero"),
    pytest.param(order_body(lines=(("cola", 1, 2500), ("fried", 1, 1))), 409, "PRICE_MISMATCH", id="second-line-price"),
    pytest.param(with_changes(_set("total_price", 39001)), 422, "TOTAL_MISMATCH", id="total-off-by-one"),
    pytest.param(with_changes(_set("total_price", 36000)), 422, "TOTAL_MISMATCH", id="total-without-fee"),
    pytest.param(with_changes(_set("total_price", 0)), 422, "TOTAL_MISMATCH", id="total-zero"),
    pytest.param(with_changes(_set("total_price", 41000)), 422, "TOTAL_MISMATCH", id="express-fee-not-express"),
    # express: the express fee (5000) is charged instead of the delivery fee (3000)
    pytest.param(order_body(fee=3000, express=True), 422, "TOTAL_MISMATCH", id="express-with-delivery-fee"),
    pytest.param(order_body(fee=3000 + 5000, express=True), 422, "TOTAL_MISMATCH", id="express-both-fees"),
    pytest.param(order_body(fee=0, express=True), 422, "TOTAL_MISMATCH", id="express-no-fee"),
]


@pytest.mark.parametrize(("body", "status", "code"), REJECTED_ORDERS)
async def test_order_breaking_a_business_rule_is_rejected(
    api: Api, body: dict[str, Any], status: int, code: str
) -> None:
    balance = await funded(api)
    response = await api.place(CUSTOMER, body)
    assert_problem(response, status, code)
    await assert_nothing_happened(api, CUSTOMER, balance)


async def test_express_order_with_express_fee_is_accepted(api: Api) -> None:
    """The counterpart of the express TOTAL_MISMATCH cases: expressFee instead of deliveryFee."""
    balance = await funded(api)
    body = order_body(fee=5000, express=True)
    order_id = await api.place_ok(CUSTOMER, body)
    view = await api.wait_status(order_id, "ACCEPTED")
    assert view["total_price"] == 36000 + 5000
    assert view["delivery"]["express"] is True
    assert await api.balance(CUSTOMER) == balance - 41000


async def test_sold_out_product_cannot_be_ordered(api: Api) -> None:
    balance = await funded(api)
    response = await api.request(
        "PATCH", "/restaurants/seoul-chicken/menu/fried", "owner", "owner-kim", json={"available": False}
    )
    assert response.status_code == 200, response.text

    async def sold_out() -> bool:
        menu = (await api.client.get("/restaurants/seoul-chicken/menu")).json()
        return any(item["id"] == "fried" and not item["available"] for item in menu["items"])

    await wait_until(sold_out, "the menu shows 'fried' sold out")
    assert_problem(await api.place(CUSTOMER, ORDER_BODY), 409, "PRODUCT_UNAVAILABLE")
    # Sold out also wins when another line of the same order is fine.
    mixed = order_body(lines=(("cola", 1, 2500), ("fried", 1, 18000)))
    assert_problem(await api.place(CUSTOMER, mixed), 409, "PRODUCT_UNAVAILABLE")
    await assert_nothing_happened(api, CUSTOMER, balance)
    # Other dishes of the restaurant can still be ordered.
    await api.place_ok("cust-other", order_body(lines=(("cola", 1, 2500),)))

    # Back in stock, it can be ordered again.
    response = await api.request(
        "PATCH", "/restaurants/seoul-chicken/menu/fried", "owner", "owner-kim", json={"available": True}
    )
    assert response.status_code == 200, response.text

    async def in_stock() -> bool:
        menu = (await api.client.get("/restaurants/seoul-chicken/menu")).json()
        return any(item["id"] == "fried" and item["available"] for item in menu["items"])

    await wait_until(in_stock, "the menu shows 'fried' available")
    await api.place_ok(CUSTOMER, ORDER_BODY)


async def test_closed_restaurant_takes_no_orders(api: Api) -> None:
    balance = await funded(api)
    response = await api.request("PATCH", "/restaurants/seoul-chicken", "owner", "owner-kim", json={"open": False})
    assert response.status_code == 200, response.text

    async def closed() -> bool:
        listed = (await api.client.get("/restaurants")).json()
        return any(r["id"] == "seoul-chicken" and r["open"] is False for r in listed)

    await wait_until(closed, "/restaurants shows seoul-chicken closed")
    listed = (await api.client.get("/restaurants")).json()
    assert [r["open"] for r in listed] == sorted((r["open"] for r in listed), reverse=True), "open ones first"
    assert_problem(await api.place(CUSTOMER, ORDER_BODY), 409, "RESTAURANT_CLOSED")
    express = order_body(fee=5000, express=True)
    assert_problem(await api.place(CUSTOMER, express), 409, "RESTAURANT_CLOSED")
    await assert_nothing_happened(api, CUSTOMER, balance)

    # Re-opened, it takes orders again.
    response = await api.request("PATCH", "/restaurants/seoul-chicken", "owner", "owner-kim", json={"open": True})
    assert response.status_code == 200, response.text

    async def reopened() -> bool:
        listed = (await api.client.get("/restaurants")).json()
        return any(r["id"] == "seoul-chicken" and r["open"] is True for r in listed)

    await wait_until(reopened, "/restaurants shows seoul-chicken open")
    await api.place_ok(CUSTOMER, ORDER_BODY)


# --------------------------------------------------------------------------- other bodies


BAD_TOP_UPS = [
    pytest.param({"amount": 0}, id="zero"),
    pytest.param({"amount": -5000}, id="negative"),
    pytest.param({"amount": "5000"}, id="string"),
    pytest.param({"amount": 5000.5}, id="fractional"),
    pytest.param({"amount": True}, id="bool"),
    pytest.param({"amount": None}, id="null"),
    pytest.param({}, id="missing"),
    pytest.param({"amount": 5000, "currency": "USD"}, id="extra-field"),
    pytest.param({"amount": 10**30}, id="beyond-int64"),
    pytest.param({"amount": 10_000_001}, id="over-max-top-up"),
    pytest.param([5000], id="array"),
]


@pytest.mark.parametrize("payload", BAD_TOP_UPS)
async def test_bad_top_up_is_rejected_and_moves_no_money(api: Api, payload: Any) -> None:
    balance = await funded(api)
    response = await api.request("POST", f"/wallets/{CUSTOMER}/top-ups", "customer", CUSTOMER, json=payload)
    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await api.balance(CUSTOMER) == balance


async def test_malformed_top_up_json_is_400(api: Api) -> None:
    balance = await funded(api)
    response = await post_raw(api, f"/wallets/{CUSTOMER}/top-ups", b'{"amount": ')
    assert_problem(response, 400, "VALIDATION_ERROR")
    assert await api.balance(CUSTOMER) == balance


@pytest.mark.parametrize("document", BAD_MANIFESTS)
async def test_bad_manifest_is_rejected_and_changes_no_catalog(api: Api, document: Any) -> None:
    before = (await api.client.get("/restaurants")).json()
    response = await api.request("POST", "/admin/restaurants", json=document)
    assert_problem(response, 422, "VALIDATION_ERROR")
    await api.settle()
    assert (await api.client.get("/restaurants")).json() == before
    assert_problem(await api.client.get("/restaurants/new-place/menu"), 404, "RESTAURANT_NOT_FOUND")


async def test_malformed_manifest_json_is_400(api: Api) -> None:
    response = await post_raw(
        api, "/admin/restaurants", b"apiVersion: baedal.io/v1\nkind: Restaurant\n", role="admin", customer="test-admin"
    )
    assert_problem(response, 400, "VALIDATION_ERROR")


OWNER_BAD_BODIES = [
    pytest.param("PATCH", "/restaurants/seoul-chicken", {"open": "no"}, id="open-string"),
    pytest.param("PATCH", "/restaurants/seoul-chicken", {"open": 0}, id="open-int"),
    pytest.param("PATCH", "/restaurants/seoul-chicken", {}, id="open-missing"),
    pytest.param("PATCH", "/restaurants/seoul-chicken", {"open": False, "closed": True}, id="open-extra-field"),
    pytest.param("PATCH", "/restaurants/seoul-chicken/menu/fried", {"available": "false"}, id="available-string"),
    pytest.param("PATCH", "/restaurants/seoul-chicken/menu/fried", {}, id="available-missing"),
    pytest.param("PATCH", "/restaurants/seoul-chicken/menu/fried", {"available": None}, id="available-null"),
    pytest.param(
        "PATCH", "/restaurants/seoul-chicken/menu/fried", {"available": False, "price": 1}, id="available-extra-field"
    ),
    pytest.param("POST", "/restaurants/seoul-chicken/orders/some-order/reject", {"reason": 5}, id="reject-reason-int"),
    pytest.param(
        "POST",
        "/restaurants/seoul-chicken/orders/some-order/reject",
        {"reason": "x" * 501},
        id="reject-reason-too-long",
    ),
]


@pytest.mark.parametrize(("method", "path", "payload"), OWNER_BAD_BODIES)
async def test_bad_owner_body_is_rejected_and_changes_nothing(
    api: Api, method: str, path: str, payload: dict[str, Any]
) -> None:
    before = (await api.client.get("/restaurants/seoul-chicken/menu")).json()
    response = await api.request(method, path, "owner", "owner-kim", json=payload)
    assert_problem(response, 422, "VALIDATION_ERROR")
    await api.settle()
    assert (await api.client.get("/restaurants/seoul-chicken/menu")).json() == before


BAD_QUERIES = [
    pytest.param("/orders?status=DONE", id="unknown-status"),
    pytest.param("/orders?status=paid", id="status-wrong-case"),
    pytest.param("/orders?limit=0", id="limit-zero"),
    pytest.param("/orders?limit=100000", id="limit-huge"),
    pytest.param("/orders?limit=ten", id="limit-string"),
    pytest.param("/orders?offset=-1", id="offset-negative"),
]


@pytest.mark.parametrize("path", BAD_QUERIES)
async def test_bad_query_parameters_are_422(api: Api, path: str) -> None:
    response = await api.request("GET", path, "customer", CUSTOMER)
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_overlong_idempotency_key_is_rejected(api: Api) -> None:
    balance = await funded(api)
    response = await api.place(CUSTOMER, ORDER_BODY, **{"Idempotency-Key": "k" * 1000})
    assert_problem(response, 422, "VALIDATION_ERROR")
    await assert_nothing_happened(api, CUSTOMER, balance)


# --------------------------------------------------------------------------- ids the database cannot store

NUL_ID = "a%00b"  # a NUL character in a path segment
# 8000 characters that do not compress (PostgreSQL btree entries max out near 2.7 kB)
LONG_ID = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(125))

IDS_IN_REQUESTS = [
    # (method, path, json, role, subject, must be a client error) — with "False" anything but a 5xx will do
    pytest.param("GET", f"/orders/{NUL_ID}", None, "customer", CUSTOMER, True, id="get-order-nul"),
    pytest.param("POST", f"/orders/{NUL_ID}/cancel", None, "customer", CUSTOMER, True, id="cancel-nul"),
    pytest.param("GET", f"/payments/{NUL_ID}", None, "customer", CUSTOMER, True, id="get-payment-nul"),
    pytest.param("GET", f"/restaurants/{NUL_ID}/menu", None, "customer", CUSTOMER, True, id="menu-nul"),
    pytest.param("GET", f"/restaurants/{NUL_ID}/orders", None, "admin", "test-admin", False, id="queue-nul"),
    pytest.param("PATCH", f"/restaurants/{NUL_ID}", {"open": False}, "admin", "test-admin", True, id="patch-nul"),
    pytest.param(
        "POST", f"/restaurants/seoul-chicken/orders/{NUL_ID}/accept", None, "owner", "owner-kim", True, id="accept-nul"
    ),
    pytest.param(
        "POST",
        "/orders",
        {**ORDER_BODY, "restaurant_id": "seoul\x00chicken"},
        "customer",
        CUSTOMER,
        True,
        id="place-restaurant-nul",
    ),
    pytest.param("GET", f"/wallets/{NUL_ID}", None, "admin", "test-admin", False, id="wallet-nul"),
    pytest.param("POST", f"/wallets/{NUL_ID}/top-ups", {"amount": 1000}, "admin", "test-admin", False, id="top-up-nul"),
    pytest.param(
        "POST", f"/wallets/{LONG_ID}/top-ups", {"amount": 1000}, "admin", "test-admin", False, id="top-up-long-id"
    ),
]


@pytest.mark.parametrize(("method", "path", "payload", "role", "subject", "client_error"), IDS_IN_REQUESTS)
async def test_ids_the_database_cannot_store_are_not_a_server_error(
    api: Api,
    backend: str,
    request: pytest.FixtureRequest,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
    role: str,
    subject: str,
    client_error: bool,
) -> None:
    balance = await funded(api)
    # A client that reports a server error as the 500 a user would see instead of raising it here.
    transport = httpx.ASGITransport(app=create_app(api.platform, manage_lifecycle=False), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://baedal") as client:
        kwargs: dict[str, Any] = {"json": payload} if payload is not None else {}
        response = await client.request(method, path, headers=api.headers(role, subject), **kwargs)
    assert response.status_code < 500, response.text
    if client_error:
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
    await assert_nothing_happened(api, CUSTOMER, balance)


# --------------------------------------------------------------------------- routes and methods


UNKNOWN_ROUTES = [
    pytest.param("GET", "/no-such-thing", id="unknown-path"),
    pytest.param("GET", "/orders/some-id/items", id="unknown-sub-path"),
    pytest.param("POST", "/orders/some-id/refund", id="unknown-action"),
    pytest.param("GET", "/restaurants/seoul-chicken/menu/fried/extra", id="too-deep"),
    pytest.param("GET", "/v2/orders", id="unknown-version-prefix"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
async def test_unknown_route_is_404_problem(api: Api, method: str, path: str) -> None:
    response = await api.request(method, path)
    assert_problem(response, 404, "NOT_FOUND")
    # Without a token too: an unknown route is not hidden behind auth.
    assert_problem(await api.client.request(method, path), 404, "NOT_FOUND")


WRONG_METHODS = [
    pytest.param("DELETE", "/orders", id="delete-orders"),
    pytest.param("PUT", "/orders", id="put-orders"),
    pytest.param("PUT", "/restaurants/seoul-chicken", id="put-restaurant"),
    pytest.param("POST", "/restaurants", id="post-restaurants"),
    pytest.param("GET", f"/wallets/{CUSTOMER}/top-ups", id="get-top-ups"),
    pytest.param("DELETE", f"/wallets/{CUSTOMER}", id="delete-wallet"),
    pytest.param("GET", "/orders/some-id/cancel", id="get-cancel"),
    pytest.param("POST", "/healthz", id="post-healthz"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
async def test_wrong_method_is_405_problem(api: Api, method: str, path: str) -> None:
    balance = await funded(api)
    response = await api.request(method, path, "customer", CUSTOMER, json=ORDER_BODY)
    assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    await assert_nothing_happened(api, CUSTOMER, balance)


async def test_wrong_method_says_which_methods_are_allowed(api: Api) -> None:
    response = await api.request("DELETE", "/orders")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


# --------------------------------------------------------------------------- Idempotency-Key


async def _payments_of(api: Api, customer: str) -> list[dict[str, Any]]:
    payments: list[dict[str, Any]] = (await api.request("GET", "/admin/audit/payments")).json()
    return [p for p in payments if p["customer_id"] == customer]


async def test_same_idempotency_key_and_body_returns_the_same_order_and_pays_once(api: Api) -> None:
    balance = await funded(api)
    key = {"Idempotency-Key": "order-2026-11-21-0001"}
    assert ORDER_BODY["total_price"] == TOTAL
    first = await api.place(CUSTOMER, ORDER_BODY, **key)
    assert first.status_code == 202, first.text
    order_id = first.json()["id"]
    assert first.headers["location"] == f"/orders/{order_id}"

    # A retry before the saga finished, and the same body with its keys in another order.
    second = await api.place(CUSTOMER, ORDER_BODY, **key)
    reordered = dict(reversed(list(copy.deepcopy(ORDER_BODY).items())))
    third = await api.place(CUSTOMER, reordered, **key)
    for again in (second, third):
        assert again.status_code == 202, again.text
        assert again.json()["id"] == order_id
        assert again.headers["location"] == f"/orders/{order_id}"

    await api.wait_status(order_id, "ACCEPTED")
    # And a retry after the order went through: still the same order, in its current state.
    late = await api.place(CUSTOMER, ORDER_BODY, **key)
    assert late.status_code == 202, late.text
    assert late.json()["id"] == order_id
    assert late.json()["status"] == "ACCEPTED"

    await api.settle()
    payment = await api.payment(order_id)
    assert payment is not None
    assert payment["status"] == "COMPLETED"
    assert payment["amount"] == TOTAL
    assert [p["order_id"] for p in await _payments_of(api, CUSTOMER)] == [order_id]
    assert await api.balance(CUSTOMER) == balance - TOTAL
    listed = (await api.request("GET", "/orders", "customer", CUSTOMER)).json()
    assert [o["id"] for o in listed] == [order_id]


async def test_concurrent_retries_with_one_idempotency_key_create_one_order(api: Api) -> None:
    balance = await funded(api)
    key = {"Idempotency-Key": "double-tap"}
    responses = await asyncio.gather(*(api.place(CUSTOMER, ORDER_BODY, **key) for _ in range(8)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    (order_id,) = ids
    await api.wait_status(order_id, "ACCEPTED")
    await api.settle()
    assert len(await _payments_of(api, CUSTOMER)) == 1
    assert await api.balance(CUSTOMER) == balance - TOTAL


async def test_same_idempotency_key_with_a_different_body_is_409(api: Api) -> None:
    balance = await funded(api)
    key = {"Idempotency-Key": "reused-key"}
    order_id = (await api.place(CUSTOMER, ORDER_BODY, **key)).json()["id"]
    different = order_body(lines=(("fried", 3, 18000),))
    assert_problem(await api.place(CUSTOMER, different, **key), 409, "IDEMPOTENCY_KEY_REUSED")
    express = order_body(fee=5000, express=True)
    assert_problem(await api.place(CUSTOMER, express, **key), 409, "IDEMPOTENCY_KEY_REUSED")

    await api.wait_status(order_id, "ACCEPTED")
    await api.settle()
    assert [p["order_id"] for p in await _payments_of(api, CUSTOMER)] == [order_id]
    assert await api.balance(CUSTOMER) == balance - TOTAL
    listed = (await api.request("GET", "/orders", "customer", CUSTOMER)).json()
    assert [o["id"] for o in listed] == [order_id]


async def test_idempotency_keys_are_per_customer(api: Api) -> None:
    """Two customers who happen to pick the same key get their own orders; neither sees the other's."""
    await funded(api, "cust-a")
    await funded(api, "cust-b")
    key = {"Idempotency-Key": "1"}
    a = await api.place("cust-a", ORDER_BODY, **key)
    b = await api.place("cust-b", order_body(lines=(("cola", 1, 2500),)), **key)
    assert a.status_code == 202, a.text
    assert b.status_code == 202, b.text
    assert a.json()["id"] != b.json()["id"]
    assert a.json()["customer_id"] == "cust-a"
    assert b.json()["customer_id"] == "cust-b"


async def test_rejected_request_does_not_use_up_its_idempotency_key(api: Api) -> None:
    balance = await funded(api)
    key = {"Idempotency-Key": "fix-and-retry"}
    wrong = order_body(lines=(("fried", 2, 17000),), fee=3000)
    assert_problem(await api.place(CUSTOMER, wrong, **key), 409, "PRICE_MISMATCH")
    order_id = (await api.place(CUSTOMER, ORDER_BODY, **key)).json()["id"]
    await api.wait_status(order_id, "ACCEPTED")
    assert await api.balance(CUSTOMER) == balance - TOTAL
