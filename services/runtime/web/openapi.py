"""The OpenAPI document the API publishes (``/openapi.json``, ``docs/openapi.json``).

FastAPI derives the operations, parameters, request bodies and (from each route's ``responses``)
the success models; this module adds what FastAPI cannot know:

- every error an operation can answer, as ``application/problem+json`` with the one
  :class:`Problem` schema (the 422 included, instead of FastAPI's own validation shape): 401 and
  403 on every operation that takes a token, 400/413/422 where there is a body, 422 where there are
  parameters, and the 404/409/503 a route declares with :func:`errors`;
- the bearer-JWT security scheme (from :data:`services.deps.CurrentPrincipal`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from services.runtime.web.problems import PROBLEM


class ValidationIssue(BaseModel):
    loc: list[str] = Field(description="the path to the field, as strings: ['body', 'items', '0', 'quantity']")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every 4xx and 5xx answer."""

    model_config = ConfigDict(title="Problem")

    type: str = Field(description="always about:blank")
    title: str = Field(description="the HTTP reason phrase")
    status: int = Field(description="the HTTP status, repeated")
    code: str = Field(description="machine-readable, upper snake case (docs/api.md, Error codes)")
    detail: str = Field(description="for humans")
    errors: list[ValidationIssue] | None = Field(None, description="VALIDATION_ERROR from request validation")
    services: dict[str, bool] | None = Field(None, description="NOT_READY: whether each service is ready")


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_WHY = {
    400: "The body is not valid JSON.",
    401: "No valid bearer token.",
    403: "The token's role or subject may not do this.",
    404: "Not found (or not visible to the caller).",
    409: "Conflicts with the current state.",
    413: "The body is larger than the limit.",
    422: "Invalid parameters or body.",
    503: "Not ready.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's own error answers (``responses=errors(404, 409)``); the others are added here."""
    return {status: {"description": _WHY.get(status, HTTPStatus(status).phrase)} for status in statuses}


def ok(
    model: Any, status: int = 200, description: str = "Success", links: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The success answer of a route whose handler returns plain data: documented as ``model``;
    ``links``: operation id → {parameter: runtime expression} (OpenAPI links, for clients and for
    the fuzzer's stateful mode)."""
    answer: dict[str, Any] = {"model": model, "description": description}
    if links:
        answer["links"] = {
            operation: {"operationId": operation, "parameters": parameters} for operation, parameters in links.items()
        }
    return {status: answer}


def operation_id(route: APIRoute) -> str:
    """An operation's id is its handler's name (``place_order``): what generated clients call it."""
    return route.name


def _problem(status: int, existing: dict[str, Any] | None) -> dict[str, Any]:
    description = (existing or {}).get("description") or _WHY.get(status, HTTPStatus(status).phrase)
    if status == 422 and description == "Validation Error":
        description = _WHY[422]
    answer: dict[str, Any] = {"description": description, "content": {PROBLEM: {"schema": _PROBLEM_REF}}}
    if status == 401:
        answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}
    if status == 405:
        answer["headers"] = {"Allow": {"schema": {"type": "string"}, "description": "the allowed methods"}}
    return answer


def _complete(document: dict[str, Any]) -> dict[str, Any]:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            wanted = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
            if operation.get("security"):
                wanted |= {401, 403}
            if operation.get("parameters"):
                wanted.add(422)
            if "requestBody" in operation:
                wanted |= {400, 413, 422}
            for status in sorted(wanted):
                responses[str(status)] = _problem(status, responses.get(str(status)))
            operation["responses"] = dict(sorted(responses.items()))
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for fastapi_own in ("HTTPValidationError", "ValidationError"):
        schemas.pop(fastapi_own, None)
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))  # ValidationIssue
    schemas["Problem"] = problem_schema
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` returns the completed document (built once, then cached)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = _complete(document)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


ASSETS = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from assets this server serves itself (the
    ``fastapi-offline`` package's copies): they work without internet access. The app is created
    with ``docs_url=None, redoc_url=None``. ReDoc's Google fonts are left out (system fonts)."""
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.docs_url, app.redoc_url = "/docs", "/redoc"


def new_app(title: str, lifespan: Any, description: str | None = None) -> FastAPI:
    """A FastAPI app as every Baedal process serves one: its OpenAPI document completed with the
    problem responses, and /docs and /redoc served offline."""
    app = FastAPI(
        title=title,
        version="1.0",
        lifespan=lifespan,
        description=description or "",
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    install_openapi(app)
    install_docs(app)
    return app
