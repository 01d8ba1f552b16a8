"""The errors of the public contract, with their machine-readable codes. Pure: the HTTP layer
(``services.runtime.web.problems``) turns them into RFC 9457 problem+json answers."""

from __future__ import annotations

from typing import Any


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
