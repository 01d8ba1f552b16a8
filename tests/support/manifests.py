"""Restaurant manifests for the tests: a valid one to vary, and bad ones every validator must refuse
(the platform's ``POST /admin/restaurants`` and the CRD's schema alike)."""

from __future__ import annotations

from typing import Any

import pytest


def manifest(name: str = "new-place", **spec_changes: Any) -> dict[str, Any]:
    """A valid Restaurant manifest for a new restaurant, with spec fields replaced/removed (None)."""
    spec: dict[str, Any] = {
        "displayName": "새가게",
        "open": True,
        "autoAccept": True,
        "location": {"lat": 37.5, "lon": 127.0},
        "deliveryFee": 3000,
        "expressFee": 5000,
        "owners": ["owner-new"],
        "menu": [{"id": "noodles", "name": "국수", "price": 7000, "available": True}],
    }
    for key, value in spec_changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return {"apiVersion": "baedal.io/v1", "kind": "Restaurant", "metadata": {"name": name}, "spec": spec}


BAD_MANIFESTS = [
    pytest.param(manifest(menu=[{"id": "noodles", "name": "국수", "price": -1}]), id="negative-price"),
    pytest.param(manifest(menu=[{"id": "noodles", "name": "국수", "price": 7000.5}]), id="fractional-price"),
    pytest.param(manifest(menu=[{"id": "noodles", "name": "국수", "price": "7000"}]), id="string-price"),
    pytest.param(manifest(menu=[{"id": "Noodles!", "name": "국수", "price": 7000}]), id="bad-menu-item-id"),
    pytest.param(manifest(menu=None), id="missing-menu"),
    pytest.param(manifest(menu=[]), id="empty-menu"),
    pytest.param(
        manifest(menu=[{"id": "a", "name": "x", "price": 1}, {"id": "a", "name": "y", "price": 2}]),
        id="duplicate-menu-ids",
    ),
    pytest.param(manifest(menu=[{"id": "noodles", "name": "국수"}]), id="menu-item-without-price"),
    pytest.param(manifest(deliveryFee=-3000), id="negative-delivery-fee"),
    pytest.param(manifest(expressFee=-1), id="negative-express-fee"),
    pytest.param(manifest(location={"lat": 95, "lon": 127}), id="bad-location"),
    pytest.param(manifest(location={"lat": 37.5, "lon": 181}), id="longitude-out-of-range"),
    pytest.param(manifest(location={"lat": 37.5}), id="location-without-longitude"),
    pytest.param(manifest(acceptTimeoutSeconds=0), id="zero-accept-timeout"),
    pytest.param(manifest(displayName="가" * 101), id="display-name-too-long"),
    pytest.param(manifest(owners=[f"owner-{i}" for i in range(21)]), id="too-many-owners"),
    pytest.param(manifest(displayName=None), id="missing-display-name"),
    pytest.param(manifest(menuu=[]), id="unknown-spec-field"),
    pytest.param(manifest("New_Place"), id="bad-id-uppercase-underscore"),
    pytest.param(manifest(""), id="bad-id-empty"),
    pytest.param(manifest("x" * 64), id="bad-id-too-long"),
    pytest.param({**manifest(), "kind": "Pizzeria"}, id="wrong-kind"),
    pytest.param({**manifest(), "apiVersion": "baedal.io/v2"}, id="wrong-api-version"),
    pytest.param(
        {"apiVersion": "baedal.io/v1", "kind": "Restaurant", "metadata": {"name": "new-place"}}, id="missing-spec"
    ),
    pytest.param({}, id="empty-object"),
    pytest.param([manifest()], id="array"),
]
