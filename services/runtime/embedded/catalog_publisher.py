"""The operator's catalog publisher for an embedded platform: ``POST /admin/catalog/events``, which
commits the event through the restaurant service's outbox."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from services.restaurant_operator.publisher import PublishError, PublishRejected
from services.runtime.events import OutboundEvent
from services.runtime.failures import response_detail

EVENTS_PATH = "/admin/catalog/events"
# An admin read with no side effects: answers only a token the platform accepts.
CHECK_PATH = "/admin/backlog"


class EmbeddedCatalogPublisher:
    """Sends catalog events to a running embedded platform over HTTP."""

    def __init__(self, url: str, token: Callable[[], str], timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    async def publish(self, event: OutboundEvent) -> None:
        # A client per event: publishes are rare, and the operator's handlers may run in any loop.
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=self._timeout_s) as client:
                response = await client.post(
                    EVENTS_PATH, json=event.envelope(), headers={"Authorization": f"Bearer {self._token()}"}
                )
        except httpx.HTTPError as exc:
            raise PublishError(f"platform at {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return
        detail = response_detail(response)
        if response.status_code == 422:
            raise PublishRejected(detail)
        raise PublishError(f"platform at {self.url} answered {response.status_code}: {detail}")

    def check(self) -> None:
        """The platform answers an admin read with this token (raises :class:`httpx.HTTPError`)."""
        with httpx.Client(base_url=self.url, timeout=self._timeout_s) as client:
            client.get(CHECK_PATH, headers={"Authorization": f"Bearer {self._token()}"}).raise_for_status()
