"""Answer shapes that more than one service's API returns (for the OpenAPI document): the
catalog's restaurant summary and menu (``services/catalog/projection.py`` builds them)."""

from __future__ import annotations

from pydantic import BaseModel


class Location(BaseModel):
    lat: float
    lon: float


class RestaurantSummary(BaseModel):
    id: str
    display_name: str
    open: bool
    location: Location
    delivery_fee: int
    express_fee: int


class MenuItem(BaseModel):
    id: str
    name: str
    price: int
    available: bool


class Menu(BaseModel):
    restaurant: RestaurantSummary
    items: list[MenuItem]
