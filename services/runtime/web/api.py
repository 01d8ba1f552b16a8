"""Shared pieces of the HTTP layer: request models' base, paging, the body-size guard, and
readable start-up failures."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime.failures import CouldNotRun
from services.runtime.web.openapi import errors, ok
from services.runtime.web.problems import problem


class Body(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


# Ids from paths and tokens: printable, bounded (a NUL or a huge key would break the database).
SAFE_ID = r"^[^\x00-\x1f\x7f/]{1,128}$"
PathId = Annotated[str, Path(pattern=SAFE_ID)]

# THE rule for every integer in a query string or a header: plain ASCII decimal digits (no sign,
# no spaces, no underscores, no other scripts' digits such as "²"), at most MAX_INT, so that no
# database (SQLite and PostgreSQL take signed 64-bit) and no JSON client (JavaScript reads 2**53 - 1
# exactly) ever sees a number it cannot hold; anything else is 422 VALIDATION_ERROR. Even
# ``offset + limit`` stays far below 64 bits. Use these types (or ``Annotated[int, Query(...), PlainDecimal]``
# with bounds), never a bare ``int`` parameter. The validator comes after ``Query``/``Header``, so that
# the bounds reach the OpenAPI document as minimum and maximum.
MAX_INT = 2**53 - 1
_DIGITS = 16  # len(str(MAX_INT)); longer strings are refused before being converted


def _plain_decimal(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= _DIGITS):
        raise ValueError(f"must be a plain decimal integer from 0 to {MAX_INT}")
    return value


PlainDecimal = BeforeValidator(_plain_decimal)
Limit = Annotated[int, Query(ge=1, le=1000), PlainDecimal]
Offset = Annotated[int, Query(ge=0, le=MAX_INT), PlainDecimal]
# A feed sequence number: ``after`` in the query, ``Last-Event-ID`` as a header.
SeqQuery = Annotated[int, Query(ge=0, le=MAX_INT, description="only notifications after this seq"), PlainDecimal]
SeqHeader = Annotated[
    int | None,
    Header(ge=0, le=MAX_INT, description="resume after this seq (the last `id` received); wins over `after`"),
    PlainDecimal,
]


class BodySizeLimit:
    """Answer 413 PAYLOAD_TOO_LARGE for bodies over ``max_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(scope, receive, send)
            return
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "PAYLOAD_TOO_LARGE", f"request bodies are limited to {self.max_bytes} bytes")
        await response(scope, receive, send)


class OneLineStartupFailure:
    """When start-up fails for a reason outside the program (:class:`CouldNotRun`, such as no
    sidecar), the server logs its one-line message instead of the traceback Starlette sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            # Starlette sends "startup.failed" from the ``except`` block that caught the error.
            failure = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(failure, CouldNotRun):
                message = {**message, "message": str(failure)}
            await send(message)

        await self.app(scope, receive, send_one_line)


class _TooLarge(StarletteHTTPException):
    """An HTTPException, so that FastAPI's body parsing re-raises it instead of answering 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request bodies are limited to {max_bytes} bytes")


# Liveness, readiness and metrics, the same for the embedded platform and a service on Dapr:
# ``app.state.platform.ready()`` says per service whether its storage (and sidecar) answer.
probes = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    services: dict[str, bool] = Field(description="per service: its storage (and sidecar) answer")


@probes.get("/healthz")
async def healthz() -> Health:
    return Health(status="ok")


@probes.get("/readyz", response_model=None, responses=ok(Ready) | errors(503))
async def readyz(request: Request) -> Response:
    services: dict[str, bool] = await request.app.state.platform.ready()
    if all(services.values()):
        return Response(orjson.dumps({"status": "ready", "services": services}), media_type="application/json")
    return problem(503, "NOT_READY", "some services are not ready", services=services)


METRICS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    }
}


@probes.get("/metrics", response_class=PlainTextResponse, responses=METRICS)
async def metrics() -> Response:
    # With PROMETHEUS_MULTIPROC_DIR set (baedal up in two processes, which serve one port): every
    # process's metrics, summed, whichever answers the scrape.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
