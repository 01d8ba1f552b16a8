"""The operator's catalog publisher in the cluster: Dapr pub/sub through the operator's sidecar."""

from __future__ import annotations

import grpc

from services.restaurant_operator.publisher import PublishError, PublishRejected
from services.runtime.dapr.sidecar import DaprPublisher, Sidecar, SidecarUnavailable
from services.runtime.events import OutboundEvent


class DaprCatalogPublisher:
    """In the cluster: catalog events straight onto Dapr pub/sub (the restaurant service's stream,
    where every catalog consumer already reads), through the operator pod's own sidecar."""

    def __init__(self, pubsub: str) -> None:
        self.pubsub = pubsub

    def check(self) -> None:
        """Nothing to check before the first event: the sidecar is reached per publish."""

    async def publish(self, event: OutboundEvent) -> None:
        # A connection per event: publishes are rare, and kopf's handlers may run in any loop.
        sidecar = Sidecar()
        try:
            await sidecar.connect()
            await DaprPublisher(sidecar, self.pubsub).publish(event)
        except grpc.RpcError as exc:  # DaprGrpcError is one too
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT):
                raise PublishRejected(f"Dapr refused the event: {exc}") from exc
            raise PublishError(f"Dapr did not take the event: {exc}") from exc
        except SidecarUnavailable as exc:
            raise PublishError(str(exc)) from exc
        finally:
            await sidecar.close()
