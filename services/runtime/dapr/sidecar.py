"""The process's connection to its Dapr sidecar, and the output bindings on it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import httpx
from dapr.clients import BulkPublishEntry
from dapr.clients.http.conf import DAPR_API_TOKEN_HEADER
from dapr.clients.http.helpers import get_api_url
from dapr.conf import settings as dapr_settings

from services.runtime.dapr.client import GuardedDaprClient
from services.runtime.events import OutboundEvent, dumps
from services.runtime.failures import CouldNotRun, transport_failure
from services.runtime.settings import DaprSettings
from services.topics import publisher_of, stream_of

CLOUDEVENTS_JSON = "application/cloudevents+json"
# A probe of a sidecar that accepts connections but does not answer ends after this long.
HEALTH_PROBE_S = 1.0
HEALTH_POLL_S = 0.25


class SidecarUnavailable(CouldNotRun):
    """daprd did not answer in time, or the process was told to stop while it waited."""


async def wait_for_sidecar(timeout_s: float, stop: asyncio.Event | None = None) -> None:
    """Return once daprd answers its outbound health endpoint (its components are ready; the full
    ``/healthz`` would also wait for this app). Unlike the SDK's wait, which blocks a thread,
    prints a line per try and cannot be interrupted, this one is bounded by ``timeout_s``, gives up
    as soon as ``stop`` is set, and fails with one line naming the address it tried."""
    url = f"{get_api_url()}/healthz/outbound"
    token = dapr_settings.DAPR_API_TOKEN
    stop = stop or asyncio.Event()
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with httpx.AsyncClient(headers={DAPR_API_TOKEN_HEADER: token} if token else {}) as client:
        while (left := deadline - time.monotonic()) > 0:
            try:
                response = await client.get(url, timeout=min(left, HEALTH_PROBE_S))
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = transport_failure(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(min(HEALTH_POLL_S, deadline - time.monotonic()), 0))
            if stop.is_set():
                raise SidecarUnavailable(f"stopped while waiting for the Dapr sidecar at {url}")
    raise SidecarUnavailable(
        f"no Dapr sidecar answered at {url} within {timeout_s:g} s ({last}); "
        "BAEDAL_DAPR_SIDECAR_TIMEOUT_S sets how long to wait"
    )


class Sidecar:
    """One async Dapr client per process, created in the app's lifespan once daprd answers."""

    def __init__(self, timeout_s: float | None = None) -> None:
        # None: BAEDAL_DAPR_SIDECAR_TIMEOUT_S, for users without Settings of their own (the operator).
        self._timeout_s = DaprSettings().sidecar_timeout_s if timeout_s is None else timeout_s
        self._client: GuardedDaprClient | None = None

    @property
    def client(self) -> GuardedDaprClient:
        if self._client is None:
            raise RuntimeError("the Dapr sidecar is not connected yet")
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self, stop: asyncio.Event | None = None) -> None:
        """Wait for daprd (see :func:`wait_for_sidecar`), then connect."""
        await wait_for_sidecar(self._timeout_s, stop)
        self._client = GuardedDaprClient()  # the SDK checks health once more: answered by now

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None


class DaprOutputBinding:
    """:class:`services.runtime.ports.OutputBinding` on a Dapr output binding component."""

    def __init__(self, sidecar: Sidecar, name: str) -> None:
        self._sidecar = sidecar
        self.name = name

    async def invoke(self, operation: str, data: dict[str, Any]) -> None:
        await self._sidecar.client.invoke_binding(
            self.name, operation, dumps(data), binding_metadata={"Content-Type": "application/json"}
        )


class DaprPublisher:
    """Baedal events straight onto pub/sub, for publishers with no state store (and so no outbox)
    of their own, such as the Restaurant operator. Each event goes to the stream of the service
    that owns its kind, as a CloudEvent of ours (daprd does not wrap it again)."""

    def __init__(self, sidecar: Sidecar, pubsub: str) -> None:
        self._sidecar = sidecar
        self._pubsub = pubsub

    async def publish(self, event: OutboundEvent) -> None:
        await self._sidecar.client.publish_event(
            self._pubsub,
            stream_of(publisher_of(event.topic)),
            dumps(event.envelope()),
            data_content_type=CLOUDEVENTS_JSON,
        )

    async def publish_all(self, events: Sequence[OutboundEvent]) -> None:
        """One bulk request per stream; raises if any entry failed (publishing again is safe:
        consumers deduplicate on the event id)."""
        by_stream: dict[str, list[OutboundEvent]] = defaultdict(list)
        for event in events:
            by_stream[stream_of(publisher_of(event.topic))].append(event)
        for stream, batch in by_stream.items():
            response = await self._sidecar.client.publish_events(
                self._pubsub,
                stream,
                [
                    BulkPublishEntry(entry_id=e.id, event=dumps(e.envelope()), content_type=CLOUDEVENTS_JSON)
                    for e in batch
                ],
            )
            if response.failed_entries:
                failed = ", ".join(f"{f.entry_id}: {f.error}" for f in response.failed_entries)
                raise RuntimeError(f"bulk publish to {stream} failed for {failed}")
