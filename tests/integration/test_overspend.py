"""Concurrent orders whose sum exceeds the wallet: exactly the affordable ones are paid, and the
balance never goes negative (ETag-guarded wallet writes, retried on conflict)."""

from __future__ import annotations

from tests.support.platform import Api, gather_limited


async def test_concurrent_orders_cannot_overspend(api: Api) -> None:
    await api.top_up("saver", 100_000)  # 2 × 39,000 fit, a third does not
    ids = await gather_limited((api.place_ok("saver") for _ in range(25)), limit=25)
    await api.settle()
    statuses = [(await api.order(order_id))["status"] for order_id in ids]
    assert statuses.count("ACCEPTED") == 2
    assert statuses.count("CANCELLED") == 23
    assert await api.balance("saver") == 100_000 - 2 * 39_000
    await api.assert_consistent()


async def test_many_customers_in_parallel_each_pay_exactly_their_orders(api: Api) -> None:
    customers = [f"cust-{n}" for n in range(10)]
    for customer in customers:
        await api.top_up(customer, 39_000 * 3 + 1_000)
    ids = await gather_limited((api.place_ok(c) for c in customers for _ in range(5)), limit=50)
    await api.settle()
    accepted = [o for o in ids if (await api.order(o))["status"] == "ACCEPTED"]
    assert len(accepted) == 30
    for customer in customers:
        assert await api.balance(customer) == 1_000
    await api.assert_consistent()
