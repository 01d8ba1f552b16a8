"""HTTP API of the notification service: the caller's feed, live as Server-Sent Events too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from services.deps import CurrentPrincipal
from services.deps import Notifications as Feed
from services.notification.feed import Feed as FeedPort
from services.runtime.auth import Principal, Role, require_admin
from services.runtime.errors import ApiError
from services.runtime.web.api import MAX_INT, Limit, PlainDecimal, SeqHeader, SeqQuery
from services.runtime.web.openapi import errors, ok

router = APIRouter(tags=["notifications"])
POLL_S = 0.25
HEARTBEAT_S = 15.0


Lat = Annotated[float | None, Query(ge=-90, le=90, description="riders: where you are")]
Lon = Annotated[float | None, Query(ge=-180, le=180, description="riders: where you are")]


class Notification(BaseModel):
    seq: int
    id: str
    order_id: str
    status: str
    message: str
    created_at: str


class OutboundMessage(BaseModel):
    seq: int
    notification: dict[str, Any]
    attempts: int
    sent: bool
    failed: bool
    last_error: str | None


SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One event per notification: `id: <seq>`, `event: notification`, `data: <Notification JSON>`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


async def _page(
    feed: FeedPort, principal: Principal, lat: float | None, lon: float | None, after: int, limit: int
) -> list[dict[str, Any]]:
    if principal.role is Role.RIDER:
        if lat is None or lon is None:
            raise ApiError(422, "VALIDATION_ERROR", "riders pass lat and lon to see the deliveries ready near them")
        return await feed.for_rider({"lat": lat, "lon": lon}, after, limit)
    if principal.role in (Role.CUSTOMER, Role.OWNER):
        return await feed.for_recipient(f"{principal.role.value}:{principal.subject}", after, limit)
    raise ApiError(403, "FORBIDDEN", "admins have no feed of their own")


@router.get("/notifications", response_model=None, responses=ok(list[Notification]) | errors(403))
async def notifications(
    principal: CurrentPrincipal, feed: Feed, lat: Lat = None, lon: Lon = None, after: SeqQuery = 0, limit: Limit = 100
) -> list[dict[str, Any]]:
    """The caller's feed, oldest first: every status change of a customer's orders, new paid orders
    for owners, deliveries ready near a rider."""
    return await _page(feed, principal, lat, lon, after, limit)


@router.get("/notifications/stream", response_class=StreamingResponse, responses=SSE | errors(403))
async def stream(
    request: Request,
    principal: CurrentPrincipal,
    feed: Feed,
    lat: Lat = None,
    lon: Lon = None,
    after: SeqQuery = 0,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_INT, description="close after this many events"), PlainDecimal
    ] = None,
    last_event_id: SeqHeader = None,
) -> StreamingResponse:
    """The same feed as Server-Sent Events; reconnecting with ``Last-Event-ID`` resumes."""
    cursor = after if last_event_id is None else last_event_id
    await _page(feed, principal, lat, lon, cursor, 1)  # fail before streaming, with a proper status

    async def events() -> AsyncIterator[bytes]:
        nonlocal cursor
        sent, quiet_since = 0, time.monotonic()
        while limit is None or sent < limit:
            page = await _page(feed, principal, lat, lon, cursor, 100)
            for item in page[: None if limit is None else limit - sent]:
                cursor = item["seq"]
                sent += 1
                yield b"id: %d\nevent: notification\ndata: %s\n\n" % (cursor, orjson.dumps(item))
            if page:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > HEARTBEAT_S:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get(
    "/admin/notifications/outbound", tags=["operations"], response_model=None, responses=ok(list[OutboundMessage])
)
async def outbound(principal: CurrentPrincipal, feed: Feed) -> list[dict[str, Any]]:
    """The outbound channel's record: every message, whether the webhook took it, attempts."""
    require_admin(principal)
    return await feed.outbound_log()
