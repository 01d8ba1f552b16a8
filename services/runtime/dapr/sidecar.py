"""The process's connection to its Dapr sidecar, and the output bindings on it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import grpc
from dapr.clients import BulkPublishEntry
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.health import DaprHealth

from services.payment.gateway import GatewayUnavailable, GuardedGateway
from services.runtime.dapr.client import GuardedDaprClient
from services.runtime.events import OutboundEvent, dumps, loads
from services.topics import publisher_of, stream_of

CLOUDEVENTS_JSON = "application/cloudevents+json"


class Sidecar:
    """One async Dapr client per process, created in the app's lifespan once daprd answers its
    health endpoint (the SDK's own wait, run off the event loop: it blocks)."""

    def __init__(self) -> None:
        self._client: GuardedDaprClient | None = None

    @property
    def client(self) -> GuardedDaprClient:
        if self._client is None:
            raise RuntimeError("the Dapr sidecar is not connected yet")
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self) -> None:
        await asyncio.to_thread(DaprHealth.wait_for_sidecar)
        self._client = GuardedDaprClient()

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


class DaprPaymentGateway(GuardedGateway):
    """The card gateway through the ``paygate`` HTTP output binding (its URL, TLS and the
    sidecar-side timeout, retries and circuit breaker live in components/), behind the same
    in-process breaker as the embedded adapter, so customers hear "try again later" at once."""

    def __init__(
        self,
        sidecar: Sidecar,
        binding: str,
        timeout_s: float = 1.0,
        failure_threshold: int = 5,
        recovery_timeout_s: float = 5.0,
    ) -> None:
        self._sidecar = sidecar
        self._binding = binding
        self._timeout_s = timeout_s
        super().__init__(self._post, failure_threshold, recovery_timeout_s)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await asyncio.wait_for(
                self._sidecar.client.invoke_binding(
                    self._binding, "post", dumps(body), {"path": path, "Content-Type": "application/json"}
                ),
                self._timeout_s,
            )
        except TimeoutError as exc:
            raise GatewayUnavailable(f"no answer within {self._timeout_s} s") from exc
        except (DaprGrpcError, grpc.RpcError) as exc:
            raise GatewayUnavailable(f"binding {self._binding}: {exc}") from exc
        result: dict[str, Any] = loads(response.data)
        return result


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
