"""Auth: who may do what (contract section "Auth").

Missing or invalid tokens get 401 UNAUTHORIZED; a valid token that is not allowed gets 403
FORBIDDEN, or 404 where the existence of someone else's order must not leak. Nothing a refused
request asked for happens.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from services.catalog.manifest import RestaurantResource
from services.catalog.reconcile import snapshot_event
from services.runtime.auth import Role, TokenIssuer, load_or_create_secret
from tests.support.platform import ORDER_BODY, Api, assert_problem, order_body

ALICE, BOB, CAROL = "cust-alice", "cust-bob", "cust-carol"
FUNDS = 200_000
# hanok-bibimbap has autoAccept: false, so its paid orders wait for an owner (owner-lee, owner-park).
HANOK_BODY = order_body("hanok-bibimbap", (("bibimbap", 2, 9000),), fee=2500)
BUSAN_BODY = order_body("busan-tteokbokki", (("tteokbokki", 1, 5000),), fee=2000)
# A 64-byte secret: long enough that PyJWT does not warn about a short HMAC key.
OTHER_SECRET = "other-secret-" + "z" * 51


def _secret(api: Api) -> str:
    return load_or_create_secret(api.platform.settings.data_dir)


def _claims(role: str = "admin", sub: str = "mallory", ttl: int = 3600) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "role": role, "iat": now, "exp": now + ttl}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _tampered(secret: str) -> str:
    """A genuine customer token whose payload was edited to say admin (the signature no longer fits)."""
    header, _payload, signature = TokenIssuer(secret).issue(Role.CUSTOMER, "mallory").split(".")
    return f"{header}.{_b64(_claims('admin'))}.{signature}"


def _unsigned() -> str:
    """``alg: none``: an unsigned admin token."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims('admin'))}."


def _without(claim: str) -> Callable[[str], str]:
    def make(secret: str) -> str:
        claims = _claims()
        del claims[claim]
        return jwt.encode(claims, secret, algorithm="HS256")

    return make


def _expired(secret: str, role: str, subject: str, seconds_ago: int) -> str:
    now = int(time.time())
    claims = {"sub": subject, "role": role, "iat": now - 3600, "exp": now - seconds_ago}
    return jwt.encode(claims, secret, algorithm="HS256")


def _bearer(make: Callable[[str], str]) -> Callable[[str], dict[str, str]]:
    return lambda secret: {"Authorization": f"Bearer {make(secret)}"}


# Each builds the request headers from the platform's signing secret.
BAD_CREDENTIALS = [
    pytest.param(lambda secret: {}, id="no-authorization-header"),
    pytest.param(lambda secret: {"Authorization": ""}, id="empty-header"),
    pytest.param(lambda secret: {"Authorization": "Bearer"}, id="bearer-without-token"),
    pytest.param(lambda secret: {"Authorization": "Bearer    "}, id="bearer-blank-token"),
    pytest.param(lambda secret: {"Authorization": "Basic YWRtaW46YWRtaW4="}, id="basic-auth"),
    pytest.param(lambda secret: {"Authorization": TokenIssuer(secret).issue(Role.ADMIN, "x")}, id="no-scheme"),
    pytest.param(
        lambda secret: {"Authorization": "Token " + TokenIssuer(secret).issue(Role.ADMIN, "x")}, id="wrong-scheme"
    ),
    pytest.param(_bearer(lambda secret: "garbage"), id="garbage"),
    pytest.param(_bearer(lambda secret: "a.b.c"), id="three-garbage-parts"),
    pytest.param(
        _bearer(lambda secret: TokenIssuer(OTHER_SECRET).issue(Role.ADMIN, "test-admin")),
        id="signed-with-another-secret",
    ),
    pytest.param(_bearer(lambda secret: _expired(secret, "admin", "test-admin", 60)), id="expired"),
    pytest.param(_bearer(lambda secret: _expired(secret, "customer", ALICE, 1)), id="expired-customer"),
    pytest.param(_bearer(_tampered), id="tampered-payload"),
    pytest.param(_bearer(lambda secret: _unsigned()), id="alg-none"),
    pytest.param(_bearer(lambda secret: jwt.encode(_claims(), secret, algorithm="HS512")), id="other-algorithm"),
    pytest.param(_bearer(_without("exp")), id="no-exp"),
    pytest.param(_bearer(_without("sub")), id="no-sub"),
    pytest.param(_bearer(_without("role")), id="no-role"),
    pytest.param(
        _bearer(lambda secret: jwt.encode(_claims(role="superuser"), secret, algorithm="HS256")), id="unknown-role"
    ),
    pytest.param(
        _bearer(lambda secret: jwt.encode(_claims(role="ADMIN"), secret, algorithm="HS256")), id="role-wrong-case"
    ),
]

MANIFEST = {
    "apiVersion": "baedal.io/v1",
    "kind": "Restaurant",
    "metadata": {"name": "intruder-pizza"},
    "spec": {
        "displayName": "침입자피자",
        "location": {"lat": 37.5, "lon": 127.0},
        "deliveryFee": 1,
        "expressFee": 1,
        "owners": ["mallory"],
        "menu": [{"id": "pizza", "name": "피자", "price": 1}],
    },
}
CATALOG_EVENT = snapshot_event(RestaurantResource.model_validate(MANIFEST), "intruder-uid", 1, "intruder").envelope()

# Owner and admin operations that answer 200, with a body each would accept.
OPERATIONS: list[tuple[str, str, Any]] = [
    ("PATCH", "/restaurants/seoul-chicken/menu/fried", {"available": False}),
    ("PATCH", "/restaurants/seoul-chicken", {"open": False}),
    ("POST", "/admin/restaurants", MANIFEST),
    ("DELETE", "/admin/restaurants/busan-tteokbokki", None),
    ("GET", "/admin/audit/orders", None),
    ("GET", "/admin/audit/payments", None),
    ("GET", "/admin/audit/wallets", None),
    ("GET", "/admin/audit/tickets", None),
    ("GET", "/admin/backlog", None),
    ("GET", "/admin/dlq", None),
]

# Every endpoint that needs a token, with a body it would accept.
PROTECTED: list[tuple[str, str, Any]] = [
    ("GET", "/orders", None),
    ("POST", "/orders", ORDER_BODY),
    ("GET", "/orders/{order}", None),
    ("POST", "/orders/{order}/cancel", None),
    ("GET", f"/wallets/{ALICE}", None),
    ("POST", f"/wallets/{ALICE}/top-ups", {"amount": 1_000_000}),
    ("GET", "/payments/{order}", None),
    ("GET", "/restaurants/hanok-bibimbap/orders", None),
    ("POST", "/restaurants/hanok-bibimbap/orders/{order}/accept", None),
    ("POST", "/restaurants/hanok-bibimbap/orders/{order}/reject", {"reason": "no"}),
    *OPERATIONS,
    ("POST", "/admin/catalog/events", CATALOG_EVENT),
]


async def _paid_hanok_order(api: Api, customer: str = ALICE) -> str:
    """An order at hanok-bibimbap, paid and waiting for its owner to accept it."""
    await api.top_up(customer, FUNDS)
    order_id = await api.place_ok(customer, HANOK_BODY)
    await api.wait_status(order_id, "PAID")
    await api.settle()  # the restaurant service has opened its ticket
    return order_id


async def _snapshot(api: Api, customer: str) -> dict[str, Any]:
    """What a refused request must not have changed."""
    await api.settle()
    return {
        "orders": sorted((o["id"], o["status"]) for o in (await api.request("GET", "/admin/audit/orders")).json()),
        "balance": await api.balance(customer),
        "restaurants": (await api.client.get("/restaurants")).json(),
        "menu": (await api.client.get("/restaurants/seoul-chicken/menu")).json(),
    }


async def _list(api: Api, role: str, subject: str, query: str = "") -> list[str]:
    response = await api.request("GET", f"/orders{query}", role, subject)
    assert response.status_code == 200, response.text
    return [o["id"] for o in response.json()]


# --------------------------------------------------------------------------- 401


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
async def test_missing_or_invalid_token_is_401_everywhere(
    api: Api, credentials: Callable[[str], dict[str, str]]
) -> None:
    order_id = await _paid_hanok_order(api)
    before = await _snapshot(api, ALICE)
    headers = credentials(_secret(api))
    for method, path, payload in PROTECTED:
        kwargs: dict[str, Any] = {"json": payload} if payload is not None else {}
        response = await api.client.request(method, path.format(order=order_id), headers=headers, **kwargs)
        assert_problem(response, 401, "UNAUTHORIZED")
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), (method, path)
    assert await _snapshot(api, ALICE) == before


async def test_a_fresh_token_from_the_same_secret_is_accepted(api: Api) -> None:
    """The counterpart of the 401 cases: a token made like the CLI makes it works."""
    token = TokenIssuer(_secret(api)).issue(Role.CUSTOMER, ALICE)
    response = await api.client.get(f"/wallets/{ALICE}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"customer_id": ALICE, "balance": 0}
    lower = await api.client.get(f"/wallets/{ALICE}", headers={"authorization": f"bearer {token}"})
    assert lower.status_code == 200, "the auth scheme is case-insensitive"


# --------------------------------------------------------------------------- customers


async def test_customer_cannot_read_or_cancel_another_customers_order(api: Api) -> None:
    await api.top_up(ALICE, FUNDS)
    order_id = await api.place_ok(ALICE, ORDER_BODY)
    await api.wait_status(order_id, "ACCEPTED")
    before = await _snapshot(api, ALICE)

    foreign = assert_problem(await api.request("GET", f"/orders/{order_id}", "customer", BOB), 404, "ORDER_NOT_FOUND")
    missing = assert_problem(await api.request("GET", "/orders/no-such-order", "customer", BOB), 404, "ORDER_NOT_FOUND")
    # Existence does not leak: someone else's order looks exactly like one that does not exist.
    assert foreign["detail"].replace(order_id, "ID") == missing["detail"].replace("no-such-order", "ID")
    assert {k: v for k, v in foreign.items() if k != "detail"} == {k: v for k, v in missing.items() if k != "detail"}
    assert ALICE not in foreign["detail"]

    cancel = await api.request("POST", f"/orders/{order_id}/cancel", "customer", BOB)
    assert_problem(cancel, 404, "ORDER_NOT_FOUND")
    assert_problem(await api.request("GET", f"/payments/{order_id}", "customer", BOB), 404, "PAYMENT_NOT_FOUND")

    assert (await api.order(order_id))["status"] == "ACCEPTED"
    assert await _snapshot(api, ALICE) == before
    assert await _list(api, "customer", BOB) == []
    assert await _list(api, "customer", ALICE) == [order_id]


async def test_customer_cannot_read_or_top_up_another_customers_wallet(api: Api) -> None:
    await api.top_up(ALICE, FUNDS)
    await api.top_up(BOB, 1000)
    assert_problem(await api.request("GET", f"/wallets/{ALICE}", "customer", BOB), 403, "FORBIDDEN")
    top_up = await api.request("POST", f"/wallets/{ALICE}/top-ups", "customer", BOB, json={"amount": 5000})
    assert_problem(top_up, 403, "FORBIDDEN")
    assert await api.balance(ALICE) == FUNDS
    assert await api.balance(BOB) == 1000


async def test_customer_cannot_act_as_owner_or_admin(api: Api) -> None:
    order_id = await _paid_hanok_order(api)
    before = await _snapshot(api, ALICE)
    refused = [
        ("POST", f"/restaurants/hanok-bibimbap/orders/{order_id}/accept", None),
        ("POST", f"/restaurants/hanok-bibimbap/orders/{order_id}/reject", {"reason": "changed my mind"}),
        ("GET", "/restaurants/hanok-bibimbap/orders", None),
        ("PATCH", "/restaurants/seoul-chicken", {"open": False}),
        ("PATCH", "/restaurants/seoul-chicken/menu/fried", {"available": False}),
        ("POST", "/admin/restaurants", MANIFEST),
        ("DELETE", "/admin/restaurants/busan-tteokbokki", None),
        ("POST", "/admin/catalog/events", CATALOG_EVENT),
        ("GET", "/admin/audit/orders", None),
        ("GET", "/admin/audit/wallets", None),
        ("GET", "/admin/backlog", None),
        ("GET", "/admin/dlq", None),
    ]
    for method, path, payload in refused:
        kwargs: dict[str, Any] = {"json": payload} if payload is not None else {}
        assert_problem(await api.request(method, path, "customer", ALICE, **kwargs), 403, "FORBIDDEN")
    assert await _snapshot(api, ALICE) == before
    assert (await api.order(order_id))["status"] == "PAID"


# --------------------------------------------------------------------------- owners


async def test_owner_not_listed_in_spec_owners_cannot_accept_reject_or_read_the_queue(api: Api) -> None:
    order_id = await _paid_hanok_order(api)
    before = await _snapshot(api, ALICE)
    # owner-kim owns seoul-chicken, not hanok-bibimbap.
    for action, payload in (("accept", None), ("reject", {"reason": "not mine"})):
        kwargs: dict[str, Any] = {"json": payload} if payload is not None else {}
        path = f"/restaurants/hanok-bibimbap/orders/{order_id}/{action}"
        assert_problem(await api.request("POST", path, "owner", "owner-kim", **kwargs), 403, "FORBIDDEN")
    queue = await api.request("GET", "/restaurants/hanok-bibimbap/orders", "owner", "owner-kim")
    assert_problem(queue, 403, "FORBIDDEN")
    closing = await api.request("PATCH", "/restaurants/hanok-bibimbap", "owner", "owner-kim", json={"open": False})
    assert_problem(closing, 403, "FORBIDDEN")
    sold_out = await api.request(
        "PATCH", "/restaurants/hanok-bibimbap/menu/bibimbap", "owner", "owner-kim", json={"available": False}
    )
    assert_problem(sold_out, 403, "FORBIDDEN")
    # Nor through a restaurant they do own: the order is not one of seoul-chicken's.
    sneaky = await api.request("POST", f"/restaurants/seoul-chicken/orders/{order_id}/accept", "owner", "owner-kim")
    assert_problem(sneaky, 404, "ORDER_NOT_FOUND")
    # And they cannot see it (404, not 403: its existence does not leak).
    assert_problem(await api.request("GET", f"/orders/{order_id}", "owner", "owner-kim"), 404, "ORDER_NOT_FOUND")
    assert order_id not in await _list(api, "owner", "owner-kim")

    await api.settle()
    assert (await api.order(order_id))["status"] == "PAID"
    after = await _snapshot(api, ALICE)
    assert after == before
    hanok = next(r for r in after["restaurants"] if r["id"] == "hanok-bibimbap")
    assert hanok["open"] is True
    menu = (await api.client.get("/restaurants/hanok-bibimbap/menu")).json()
    assert all(item["available"] for item in menu["items"])

    # A listed owner can do what owner-kim could not.
    queue = await api.request("GET", "/restaurants/hanok-bibimbap/orders", "owner", "owner-lee")
    assert queue.status_code == 200, queue.text
    assert [o["id"] for o in queue.json()] == [order_id]
    seen = await api.request("GET", f"/orders/{order_id}", "owner", "owner-lee")
    assert seen.status_code == 200, seen.text
    accept = await api.request("POST", f"/restaurants/hanok-bibimbap/orders/{order_id}/accept", "owner", "owner-lee")
    assert accept.status_code == 202, accept.text
    await api.wait_status(order_id, "ACCEPTED")


async def test_owner_cannot_cancel_or_pay_for_customers(api: Api) -> None:
    order_id = await _paid_hanok_order(api)
    cancel = await api.request("POST", f"/orders/{order_id}/cancel", "owner", "owner-lee")
    assert_problem(cancel, 403, "FORBIDDEN")
    assert_problem(await api.request("GET", f"/wallets/{ALICE}", "owner", "owner-lee"), 403, "FORBIDDEN")
    assert_problem(await api.request("GET", f"/payments/{order_id}", "owner", "owner-lee"), 404, "PAYMENT_NOT_FOUND")
    assert_problem(await api.request("POST", "/orders", "owner", "owner-lee", json=HANOK_BODY), 403, "FORBIDDEN")
    await api.settle()
    assert (await api.order(order_id))["status"] == "PAID"
    assert await _list(api, "customer", ALICE) == [order_id]


# --------------------------------------------------------------------------- riders


async def test_rider_cannot_place_orders_nor_see_or_touch_them(api: Api) -> None:
    order_id = await _paid_hanok_order(api)
    before = await _snapshot(api, ALICE)
    assert_problem(await api.request("POST", "/orders", "rider", "rider-jung", json=ORDER_BODY), 403, "FORBIDDEN")
    assert_problem(await api.request("GET", "/orders", "rider", "rider-jung"), 403, "FORBIDDEN")
    assert_problem(await api.request("GET", f"/orders/{order_id}", "rider", "rider-jung"), 404, "ORDER_NOT_FOUND")
    cancel = await api.request("POST", f"/orders/{order_id}/cancel", "rider", "rider-jung")
    assert_problem(cancel, 404, "ORDER_NOT_FOUND")
    accept = await api.request("POST", f"/restaurants/hanok-bibimbap/orders/{order_id}/accept", "rider", "rider-jung")
    assert_problem(accept, 403, "FORBIDDEN")
    assert_problem(await api.request("GET", f"/wallets/{ALICE}", "rider", "rider-jung"), 403, "FORBIDDEN")
    assert_problem(
        await api.request("GET", "/restaurants/hanok-bibimbap/orders", "rider", "rider-jung"), 403, "FORBIDDEN"
    )
    assert await _snapshot(api, ALICE) == before
    assert [o["customer_id"] for o in (await api.request("GET", "/admin/audit/orders")).json()] == [ALICE]


# --------------------------------------------------------------------------- admin


async def test_admin_can_do_everything(api: Api) -> None:
    waiting = await _paid_hanok_order(api)
    rejected = await api.place_ok(ALICE, HANOK_BODY)
    cancelled = await api.place_ok(ALICE, ORDER_BODY)
    await api.wait_status(rejected, "PAID")
    await api.wait_status(cancelled, "ACCEPTED")
    await api.settle()

    assert (await api.request("GET", f"/orders/{waiting}")).status_code == 200
    payment = await api.request("GET", f"/payments/{waiting}")
    assert payment.status_code == 200, payment.text
    assert payment.json()["status"] == "COMPLETED"
    balance = (await api.request("GET", f"/wallets/{ALICE}")).json()["balance"]
    top_up = await api.request("POST", f"/wallets/{ALICE}/top-ups", json={"amount": 1000})
    assert top_up.status_code == 200, top_up.text
    assert top_up.json()["balance"] == balance + 1000
    assert set(await _list(api, "admin", "test-admin")) == {waiting, rejected, cancelled}
    queue = await api.request("GET", "/restaurants/hanok-bibimbap/orders")
    assert queue.status_code == 200, queue.text
    assert {o["id"] for o in queue.json()} == {waiting, rejected}

    accept = await api.request("POST", f"/restaurants/hanok-bibimbap/orders/{waiting}/accept")
    assert accept.status_code == 202, accept.text
    reject = await api.request("POST", f"/restaurants/hanok-bibimbap/orders/{rejected}/reject", json={"reason": "x"})
    assert reject.status_code == 202, reject.text
    cancel = await api.request("POST", f"/orders/{cancelled}/cancel")
    assert cancel.status_code == 202, cancel.text
    await api.wait_status(waiting, "ACCEPTED")
    assert (await api.wait_status(rejected, "CANCELLED"))["cancel_reason"] == "REJECTED"
    assert (await api.wait_status(cancelled, "CANCELLED"))["cancel_reason"] == "CUSTOMER_CANCELLED"

    for method, path, payload in OPERATIONS:
        kwargs: dict[str, Any] = {"json": payload} if payload is not None else {}
        response = await api.request(method, path, **kwargs)
        assert response.status_code == 200, (method, path, response.text)
    await api.settle()
    catalog = {r["id"]: r for r in (await api.client.get("/restaurants")).json()}
    assert "intruder-pizza" in catalog
    assert "busan-tteokbokki" not in catalog
    assert catalog["seoul-chicken"]["open"] is False
    await api.assert_consistent()


# --------------------------------------------------------------------------- catalog and lists


async def test_catalog_reads_need_no_token(api: Api) -> None:
    listed = await api.client.get("/restaurants")
    assert listed.status_code == 200, listed.text
    assert {r["id"] for r in listed.json()} == {"seoul-chicken", "hanok-bibimbap", "busan-tteokbokki"}
    menu = await api.client.get("/restaurants/seoul-chicken/menu")
    assert menu.status_code == 200, menu.text
    assert menu.json()["restaurant"]["id"] == "seoul-chicken"
    assert {"id": "fried", "name": "후라이드치킨", "price": 18000, "available": True} in menu.json()["items"]
    assert_problem(await api.client.get("/restaurants/nowhere/menu"), 404, "RESTAURANT_NOT_FOUND")


async def test_order_lists_show_only_the_callers_orders(api: Api) -> None:
    for customer in (ALICE, BOB, CAROL):
        await api.top_up(customer, FUNDS)
    alice = await api.place_ok(ALICE, ORDER_BODY)  # seoul-chicken (owner-kim), auto-accepted
    bob = await api.place_ok(BOB, HANOK_BODY)  # hanok-bibimbap (owner-lee, owner-park), waits in PAID
    carol = await api.place_ok(CAROL, BUSAN_BODY)  # busan-tteokbokki (owner-choi)
    await api.wait_status(alice, "ACCEPTED")
    await api.wait_status(bob, "PAID")
    await api.wait_status(carol, "ACCEPTED")
    await api.settle()

    assert await _list(api, "customer", ALICE) == [alice]
    assert await _list(api, "customer", BOB) == [bob]
    assert await _list(api, "customer", CAROL) == [carol]
    assert await _list(api, "customer", "cust-nobody") == []
    assert await _list(api, "owner", "owner-kim") == [alice]
    assert await _list(api, "owner", "owner-lee") == [bob]
    assert await _list(api, "owner", "owner-park") == [bob]
    assert await _list(api, "owner", "owner-choi") == [carol]
    assert await _list(api, "owner", "owner-nobody") == []
    assert set(await _list(api, "admin", "test-admin")) == {alice, bob, carol}
    # The status filter narrows the caller's own list; it never widens it.
    assert await _list(api, "owner", "owner-lee", "?status=PAID") == [bob]
    assert await _list(api, "owner", "owner-kim", "?status=PAID") == []
    assert await _list(api, "customer", ALICE, "?status=ACCEPTED") == [alice]
    assert await _list(api, "customer", ALICE, "?status=PAID") == []
    assert set(await _list(api, "admin", "test-admin", "?status=ACCEPTED")) == {alice, carol}
    # Every view in a customer's list is theirs.
    views = (await api.request("GET", "/orders", "customer", BOB)).json()
    assert {v["customer_id"] for v in views} == {BOB}
