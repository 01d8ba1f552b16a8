"""The official async Dapr client, plus the one call its public API leaves out.

``DaprClient.execute_state_transaction`` builds its operations without ``StateOptions``, so a
transaction cannot say "this key must not exist yet" (first-write concurrency, daprd's
``options.concurrency``). The handlers rely on that guard (``Put(key, value, etag=None)``), so
:meth:`GuardedDaprClient.execute_guarded_transaction` sends the same request with the options set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dapr.aio.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.proto.common.v1 import common_pb2 as common_v1
from dapr.proto.runtime.v1 import state_pb2 as api_v1
from grpc.aio import AioRpcError


@dataclass(frozen=True)
class StateOp:
    """One operation of a state transaction: an upsert (``value`` set) or a delete."""

    key: str
    value: bytes | None
    etag: str | None = None
    first_write: bool = False
    metadata: dict[str, str] | None = None

    def proto(self) -> api_v1.TransactionalStateOperation:
        options = (
            common_v1.StateOptions(concurrency=common_v1.StateOptions.CONCURRENCY_FIRST_WRITE)
            if self.first_write
            else None
        )
        return api_v1.TransactionalStateOperation(
            operationType="delete" if self.value is None else "upsert",
            request=common_v1.StateItem(
                key=self.key,
                value=self.value or b"",
                etag=common_v1.Etag(value=self.etag) if self.etag is not None else None,
                options=options,
                metadata=self.metadata or {},
            ),
        )


class GuardedDaprClient(DaprClient):
    async def execute_guarded_transaction(
        self, store_name: str, operations: Sequence[StateOp], metadata: dict[str, str] | None = None
    ) -> None:
        request = api_v1.ExecuteStateTransactionRequest(
            storeName=store_name, operations=[op.proto() for op in operations], metadata=metadata or {}
        )
        try:
            await self._stub.ExecuteStateTransaction(request)
        except AioRpcError as err:
            raise DaprGrpcError(err) from err
