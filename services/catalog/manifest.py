"""The Restaurant custom resource (``baedal.io/v1``), as ``kubectl apply`` and ``baedal apply`` take it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

DNS_1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Id = Annotated[str, StringConstraints(pattern=DNS_1123, min_length=1, max_length=63)]
Money = Annotated[int, Field(ge=0, le=10_000_000, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Location(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class MenuItem(_Strict):
    id: Id
    name: str = Field(min_length=1, max_length=100)
    price: Money
    available: bool = True


class RestaurantSpec(_Strict):
    display_name: str = Field(alias="displayName", min_length=1, max_length=100)
    open: bool = True
    auto_accept: bool = Field(True, alias="autoAccept")
    accept_timeout_seconds: int = Field(300, alias="acceptTimeoutSeconds", ge=1, le=86_400)
    location: Location
    delivery_fee: Money = Field(alias="deliveryFee")
    express_fee: Money = Field(alias="expressFee")
    owners: list[Annotated[str, StringConstraints(min_length=1, max_length=63)]] = Field(max_length=20)
    menu: list[MenuItem] = Field(min_length=1, max_length=500)

    @field_validator("menu")
    @classmethod
    def _unique_ids(cls, menu: list[MenuItem]) -> list[MenuItem]:
        seen: set[str] = set()
        duplicates = sorted({item.id for item in menu if item.id in seen or seen.add(item.id)})  # type: ignore[func-returns-value]
        if duplicates:
            raise ValueError(f"duplicate menu ids: {', '.join(duplicates)}")
        return menu


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Id
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None


class RestaurantResource(BaseModel):
    model_config = ConfigDict(extra="allow")
    api_version: Literal["baedal.io/v1"] = Field(alias="apiVersion")
    kind: Literal["Restaurant"]
    metadata: Metadata
    spec: RestaurantSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def spec_snapshot(self) -> dict[str, Any]:
        """The spec in the snake_case shape carried by catalog events."""
        return self.spec.model_dump(mode="json")


def describe(error: ValidationError, limit: int = 3) -> str:
    """The first few problems of a rejected manifest or event, one line each ``where: what``."""
    problems = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()[:limit]]
    more = error.error_count() - limit
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def load_manifests(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file, or in the ``*.yaml``/``*.yml`` files of a directory (sorted)."""
    files = sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"}) if path.is_dir() else [path]
    documents: list[dict[str, Any]] = []
    for file in files:
        with file.open(encoding="utf-8") as handle:
            documents += [doc for doc in yaml.safe_load_all(handle) if doc]
    return documents
