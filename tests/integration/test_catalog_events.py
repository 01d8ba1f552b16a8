"""``POST /admin/catalog/events``: the embedded publish port of the Kubernetes operator.

Its events reach every catalog consumer like a ``baedal apply`` snapshot; a repeated event is a
duplicate; anything but a well-formed catalog event is refused; and ``baedal apply`` does not fight
the operator over a restaurant the operator manages."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.catalog.manifest import RestaurantResource, load_manifests
from services.catalog.reconcile import removal_event, snapshot_event
from services.runtime.events import OutboundEvent
from tests.support import EXAMPLES
from tests.support.manifests import manifest
from tests.support.platform import Api, assert_problem, eventually

SOURCE = "restaurant-operator"


def handled(consumer: str, outcome: str) -> float:
    labels = {"service": "order", "consumer": consumer, "outcome": outcome}
    return REGISTRY.get_sample_value("baedal_events_handled_total", labels) or 0.0


async def publish(api: Api, event: OutboundEvent | dict[str, Any], role: str = "admin") -> Any:
    envelope = event.envelope() if isinstance(event, OutboundEvent) else event
    return await api.request("POST", "/admin/catalog/events", role, "someone", json=envelope)


async def menu_status(api: Api, restaurant: str) -> int:
    return (await api.client.get(f"/restaurants/{restaurant}/menu")).status_code


async def test_an_operator_snapshot_reaches_the_menu_and_a_repeat_is_a_duplicate(api: Api) -> None:
    resource = RestaurantResource.model_validate(manifest())
    event = snapshot_event(resource, str(uuid.uuid4()), 1, SOURCE)
    response = await publish(api, event)
    assert response.status_code == 202, response.text
    assert response.json() == {"id": event.id, "topic": "catalog.restaurant-upserted", "restaurant_id": "new-place"}

    async def served() -> bool:
        return await menu_status(api, "new-place") == 200

    await eventually(served, what="the operator's restaurant on the menu")
    await api.settle()
    duplicates = handled("order-menu-upserted", "duplicate")
    assert (await publish(api, event)).status_code == 202  # a retried publish: same id
    await api.settle()
    assert handled("order-menu-upserted", "duplicate") == duplicates + 1
    menu = (await api.client.get("/restaurants/new-place/menu")).json()
    assert menu["items"] == [{"id": "noodles", "name": "국수", "price": 7000, "available": True}]


def _envelope(**changes: Any) -> dict[str, Any]:
    event = snapshot_event(RestaurantResource.model_validate(manifest()), str(uuid.uuid4()), 1, SOURCE)
    envelope = event.envelope()
    for key, value in changes.items():
        envelope[key] = value
    return envelope


def _data(**changes: Any) -> dict[str, Any]:
    envelope = _envelope()
    envelope["data"] = {**envelope["data"], **changes}
    return envelope


BAD_EVENTS = [
    pytest.param(_envelope(topic="order.placed", type="io.baedal.order.placed.v1"), id="not-a-catalog-topic"),
    pytest.param(_envelope(type="io.baedal.catalog.restaurant-deleted.v1"), id="type-and-topic-disagree"),
    pytest.param(_envelope(source="https://example.com"), id="foreign-source"),
    pytest.param(_envelope(id="a b"), id="bad-id"),
    pytest.param(_envelope(specversion="0.3"), id="old-specversion"),
    pytest.param({"data": {}}, id="not-an-envelope"),
    pytest.param(_data(generation=0), id="generation-zero"),
    pytest.param(_data(uid=""), id="empty-uid"),
    pytest.param(_data(restaurant_id="Bad_Id"), id="bad-restaurant-id"),
    pytest.param(_data(spec={**_envelope()["data"]["spec"], "delivery_fee": -1}), id="negative-fee"),
    pytest.param(_data(spec=None), id="no-spec"),
    pytest.param(_data(extra=1), id="unknown-field"),
]


@pytest.mark.parametrize("envelope", BAD_EVENTS)
async def test_anything_but_a_catalog_event_is_refused(api: Api, envelope: dict[str, Any]) -> None:
    assert_problem(await publish(api, envelope), 422, "VALIDATION_ERROR")
    await api.settle()
    assert await menu_status(api, "new-place") == 404


async def test_only_admin_publishes_catalog_events(api: Api) -> None:
    assert_problem(await publish(api, _envelope(), role="owner"), 403, "FORBIDDEN")


async def test_baedal_apply_leaves_an_operator_managed_restaurant_alone(api: Api) -> None:
    """The operator takes seoul-chicken over (a new uid); ``baedal apply`` refuses to touch it until
    the operator removes it, then starts a fresh incarnation of its own."""
    document = next(m for m in load_manifests(EXAMPLES) if m["metadata"]["name"] == "seoul-chicken")
    document["spec"]["menu"][0]["price"] = 17000
    uid = str(uuid.uuid4())
    assert (await publish(api, snapshot_event(RestaurantResource.model_validate(document), uid, 7, SOURCE))).is_success

    async def operator_price() -> bool:
        response = await api.client.get("/restaurants/seoul-chicken/menu")
        return response.status_code == 200 and response.json()["items"][0]["price"] == 17000

    await eventually(operator_price, what="the operator's price")
    await api.settle()
    assert_problem(await api.request("POST", "/admin/restaurants", json=document), 409, "MANAGED_BY_OPERATOR")
    assert_problem(await api.request("DELETE", "/admin/restaurants/seoul-chicken"), 409, "MANAGED_BY_OPERATOR")

    assert (await publish(api, removal_event("seoul-chicken", uid, 7, SOURCE))).is_success

    async def gone() -> bool:
        return await menu_status(api, "seoul-chicken") == 404

    await eventually(gone, what="the removal")
    await api.settle()
    applied = await api.request("POST", "/admin/restaurants", json=document)
    assert applied.json() == {"restaurant_id": "seoul-chicken", "generation": 1, "changed": True}
    await eventually(operator_price, what="baedal apply's fresh incarnation")
    await api.assert_consistent()
