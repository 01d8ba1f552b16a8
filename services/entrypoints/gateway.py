"""The embedded gateway: one HTTP entry point, every service's router in one FastAPI app, plus
the platform's operations endpoints (backlog, dead letters, pausing a service)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from services.deps import CurrentPrincipal
from services.entrypoints.bootstrap import Platform
from services.entrypoints.routes import SERVICE_ROUTERS
from services.runtime.auth import require_admin
from services.runtime.embedded.dispatcher import DeadLetter
from services.runtime.errors import ApiError
from services.runtime.settings import Settings
from services.runtime.web.api import BodySizeLimit, probes
from services.runtime.web.openapi import errors, new_app, ok
from services.runtime.web.problems import install_error_handlers

ops = APIRouter(tags=["operations"])


class ServiceBacklog(BaseModel):
    due: int
    scheduled: int


class Backlog(BaseModel):
    settled: bool
    backlog: dict[str, ServiceBacklog]
    paused: list[str]


class Replayed(BaseModel):
    id: str
    replayed: bool


class Paused(BaseModel):
    service: str
    paused: bool


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@ops.get("/admin/backlog", response_model=None, responses=ok(Backlog))
async def backlog(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """Events not yet handled per service: 0 everywhere means the platform has settled."""
    require_admin(principal)
    platform = _platform(request)
    backlog = await platform.dispatcher.backlog()
    settled = all(c["due"] == 0 for c in backlog.values())
    return {"settled": settled, "backlog": backlog, "paused": sorted(platform.dispatcher.paused)}


@ops.get(
    "/admin/dlq",
    response_model=None,
    responses=ok(list[DeadLetter], links={"replay": {"letter_id": "$response.body#/0/id"}}),
)
async def dead_letters(request: Request, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    require_admin(principal)
    return [letter.__dict__ for letter in await _platform(request).dispatcher.dead_letters()]


@ops.post(
    "/admin/dlq/{letter_id}/replay", status_code=202, response_model=None, responses=ok(Replayed, 202) | errors(404)
)
async def replay(letter_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    require_admin(principal)
    if not await _platform(request).dispatcher.replay(letter_id):
        raise ApiError(404, "DEAD_LETTER_NOT_FOUND", f"no dead letter {letter_id!r}")
    return {"id": letter_id, "replayed": True}


@ops.post(
    "/admin/services/{service}/{action}", status_code=202, response_model=None, responses=ok(Paused, 202) | errors(404)
)
async def pause_or_resume(service: str, action: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """Stop or restart one service's event consumers (fault-isolation drills). Its HTTP API and
    everything else keep running; its events wait in its queue."""
    require_admin(principal)
    dispatcher = _platform(request).dispatcher
    if service not in dispatcher.services:
        raise ApiError(404, "SERVICE_NOT_FOUND", f"no service {service!r}")
    if action not in ("pause", "resume"):
        raise ApiError(404, "NOT_FOUND", "action must be pause or resume")
    (dispatcher.pause if action == "pause" else dispatcher.resume)(service)
    return {"service": service, "paused": service in dispatcher.paused}


def create_app(platform: Platform, manage_lifecycle: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await platform.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await platform.stop()

    app = new_app(
        "Baedal",
        lifespan,
        "Food-delivery ordering: order, pay, accept — an order and its payment never disagree.",
    )
    app.state.platform = platform
    app.state.services = platform.services
    app.state.tokens = platform.tokens
    install_error_handlers(
        app, [route for router in (*SERVICE_ROUTERS.values(), probes, ops) for route in router.routes]
    )
    for router in SERVICE_ROUTERS.values():
        app.include_router(router)
    app.include_router(probes)
    app.include_router(ops)
    app.add_middleware(BodySizeLimit, max_bytes=platform.settings.max_body_bytes)
    return app


def openapi_text() -> str:
    """The embedded gateway's OpenAPI document as published in ``docs/openapi.json``
    (``baedal openapi > docs/openapi.json``): built without starting anything."""
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Platform(Settings(data_dir=Path(data_dir))), manage_lifecycle=False)
        return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
