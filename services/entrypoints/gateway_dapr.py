"""The gateway on the Dapr runtime: ``BAEDAL_RUNTIME=dapr uvicorn services.entrypoints.gateway_dapr:app``.

One HTTP entry point (the Ingress sends everything here) that forwards each request, by the same
routing table as the embedded gateway, to the service that owns it through Dapr service invocation
(its sidecar's ``/v1.0/invoke/<app-id>/method/<path>``): mTLS, retries and tracing come from Dapr.
Responses are streamed, so the notification SSE stream passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from dapr.conf import settings as dapr_settings
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from services.entrypoints.routes import service_for
from services.runtime.settings import Settings
from services.runtime.web.api import BodySizeLimit, probes
from services.runtime.web.openapi import new_app
from services.runtime.web.problems import problem

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the server sets again.
SKIPPED = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length"})


class SidecarGateway:
    def __init__(self, sidecar_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=sidecar_url, timeout=httpx.Timeout(30.0, read=None))

    async def ready(self) -> dict[str, bool]:
        try:
            response = await self.client.get("/v1.0/healthz/outbound", timeout=2.0)
        except httpx.HTTPError:
            return {"sidecar": False}
        return {"sidecar": response.is_success}

    async def forward(self, request: Request) -> Response:
        service = service_for(request.method, request.url.path)
        if service is None:
            return problem(404, "NOT_FOUND", f"no route for {request.method} {request.url.path}")
        upstream = self.client.build_request(
            request.method,
            f"/v1.0/invoke/{service}/method{request.url.path}",
            params=str(request.query_params),
            headers=[(k, v) for k, v in request.headers.items() if k.lower() not in SKIPPED],
            content=await request.body(),
        )
        try:
            response = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            return problem(503, "SERVICE_UNAVAILABLE", f"{service} did not answer: {type(exc).__name__}")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in SKIPPED}
        return StreamingResponse(
            response.aiter_raw(), response.status_code, headers, background=BackgroundTask(response.aclose)
        )


def create_gateway_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    sidecar_url = f"http://{dapr_settings.DAPR_RUNTIME_HOST}:{dapr_settings.DAPR_HTTP_PORT}"
    gateway = SidecarGateway(sidecar_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.client.aclose()

    app = new_app("Baedal gateway", lifespan)
    app.state.platform = gateway
    app.include_router(probes)
    app.add_api_route(
        "/{path:path}",
        gateway.forward,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


app = create_gateway_app()
