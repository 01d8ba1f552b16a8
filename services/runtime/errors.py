"""Errors as RFC 9457 problem+json, with the machine-readable codes of the public contract."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

PROBLEM = "application/problem+json"
log = logging.getLogger("baedal.http")


class ApiError(Exception):
    """An error a client can act on; ``code`` is one of the contract's upper-snake-case codes."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


class DomainError(ValueError):
    """A business rule said no. Pure domain code raises it; the API maps ``code`` to a status."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


DOMAIN_STATUS = {
    "RESTAURANT_NOT_FOUND": 404,
    "RESTAURANT_CLOSED": 409,
    "PRODUCT_NOT_FOUND": 422,
    "PRODUCT_UNAVAILABLE": 409,
    "PRICE_MISMATCH": 409,
    "TOTAL_MISMATCH": 422,
    "ORDER_NOT_FOUND": 404,
    "INVALID_STATE": 409,
    "DELIVERY_ALREADY_CLAIMED": 409,
    "DELIVERY_NOT_FOUND": 404,
    "FORBIDDEN": 403,
    "IDEMPOTENCY_KEY_REUSED": 409,
    "MANAGED_BY_OPERATOR": 409,
}


def from_domain(error: DomainError) -> ApiError:
    return ApiError(DOMAIN_STATUS.get(error.code, 422), error.code, error.detail)


def not_found(code: str, detail: str) -> ApiError:
    return ApiError(404, code, detail)


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


_HTTP_CODES = {
    400: "VALIDATION_ERROR",  # FastAPI's 400s are bodies it could not decode
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
}


def _validation_detail(exc: RequestValidationError) -> tuple[int, str, list[dict[str, Any]]]:
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return 400, "request body is not valid JSON", errors
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(part for part in first["loc"] if part != "body") or "request"
    return 422, f"{where}: {first['msg']}", errors


def _allowed_methods(request: Request, routes: Sequence[BaseRoute]) -> list[str]:
    """Every method some route serves on this path (Starlette names only the first route's)."""
    allowed: set[str] = set()
    for route in routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        methods = getattr(route, "methods", None)
        if match is not Match.NONE and methods:
            allowed |= set(methods)
    return sorted(allowed)


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute] = ()) -> None:
    """``routes``: the app's endpoints, flat, to name them in a 405's ``Allow`` header."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return problem(exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> Response:
        error = from_domain(exc)
        return problem(error.status, error.code, error.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        status, detail, errors = _validation_detail(exc)
        return problem(status, "VALIDATION_ERROR", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        detail = "request body is not valid JSON" if exc.status_code == 400 else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request, routes))
        return problem(exc.status_code, code, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "INTERNAL_ERROR", "an unexpected error occurred; it has been logged")
