"""The card gateway on the Dapr runtime: the ``paygate`` HTTP output binding."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from dapr.clients.exceptions import DaprGrpcError

from services.payment.cards import GatewayUnavailable
from services.runtime.dapr.sidecar import Sidecar
from services.runtime.events import dumps, loads
from services.runtime.paygate import Guard, GuardedGateway


class DaprPaymentGateway(GuardedGateway):
    """The card gateway through the ``paygate`` HTTP output binding (its URL, TLS and the
    sidecar-side timeout, retries and circuit breaker live in components/), behind the same
    in-process breaker as the embedded adapter, so customers hear "try again later" at once."""

    def __init__(self, sidecar: Sidecar, binding: str, guard: Guard = Guard()) -> None:
        self._sidecar = sidecar
        self._binding = binding
        self._timeout_s = guard.timeout_s
        super().__init__(self._post, guard)

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
