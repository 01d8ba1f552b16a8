"""The publish port of the operator.

A :class:`CatalogPublisher` takes one catalog event and returns once the platform has it durably,
or raises :class:`PublishError`. Its adapters: ``services.runtime.embedded.catalog_publisher``
posts it to a running ``baedal up``, ``services.runtime.dapr.catalog_publisher`` publishes it on
Dapr pub/sub through the operator's sidecar; ``services.entrypoints.bootstrap.catalog_publisher``
picks one by the runtime. The handlers never know which one runs.
"""

from __future__ import annotations

from typing import Protocol

from services.runtime.events import OutboundEvent


class PublishError(Exception):
    """The platform did not take the event (yet): retry later."""


class PublishRejected(PublishError):
    """The platform refused the event: sending it again cannot help."""


class CatalogPublisher(Protocol):
    def check(self) -> None:
        """Fail at start, not at the first resource, when the platform cannot be reached or
        refuses this publisher; later outages are retried instead (they show as ``Synced=False``)."""

    async def publish(self, event: OutboundEvent) -> None: ...
