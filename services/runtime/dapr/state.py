"""The state-store port on a Dapr state store, with an outbox and an inbox in the same transactions.

- ``get`` is ``GetState`` with its ETag; ``commit`` is one ``ExecuteStateTransaction`` whose every
  operation carries the ETag it read (first-write concurrency for keys that must not exist yet).
  daprd reports a failed guard as ``INTERNAL`` "possible etag mismatch" on a transaction, a failed
  first write on PostgreSQL v2 as ``INTERNAL`` "no item was updated", and either as ``ABORTED`` on
  ``SaveState``/``DeleteState``; all become :class:`ConcurrencyConflict`, which the handlers
  already retry from a fresh read.
- Events are written as ``outbox:<event id>`` keys in the same transaction and relayed onto the
  service's stream by :class:`~services.runtime.dapr.outbox.OutboxRelay` (not daprd's own outbox:
  see that module for why).
- Inside a delivery (see :mod:`services.runtime.dapr.subscriber`) the first commit also records
  ``inbox:<consumer>:<event id>`` (first-write, expiring), so a redelivered event has no second
  effect; pub/sub is at least once and unordered, so this matters.
- ``scan``: Dapr's state API cannot list keys (PostgreSQL v2 has no query API), so every new key is
  first written to a key directory in the service's own SQL database, *before* the transaction: a
  committed key is always listed; a key whose transaction failed is listed but reads as missing.
- Keys: daprd stores ``<app id>||<key>`` and refuses a key containing ``||`` (an Idempotency-Key
  may). So ``%`` and ``|`` are %-escaped on the way to daprd (:func:`dapr_key`); every other key
  is stored as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
from dapr.clients.exceptions import DaprGrpcError, DaprInternalError

from services.runtime.dapr.client import StateOp
from services.runtime.dapr.outbox import OutboxRelay
from services.runtime.dapr.sidecar import Sidecar
from services.runtime.embedded.storage import ServiceDb, prefix_range
from services.runtime.events import OutboundEvent, dumps, loads
from services.runtime.ports import ConcurrencyConflict, Delete, Put, Record, Write
from services.topics import publisher_of

DIRECTORY_SCHEMA = ["CREATE TABLE IF NOT EXISTS state_keys (key TEXT PRIMARY KEY)"]
# What daprd's own outbox published for a write without an event (Baedal before it relayed its own
# outbox): subscribers still ignore it.
NO_EVENT: dict[str, Any] = {"baedal": "no-event"}
ETAG_MISMATCH = "possible etag mismatch"
# PostgreSQL v2: a first-write upsert on a key that exists changes no row (components-contrib
# answers a plain error, not an ETag error; daprd passes its text on).
FIRST_WRITE_FAILED = "no item was updated"


class AlreadyHandled(Exception):
    """This delivery's event was already handled (its inbox entry exists): answer success."""


@dataclass
class Delivery:
    """The event a subscriber is handling right now, for the inbox entry of its first commit."""

    consumer: str
    event_id: str
    recorded: bool = field(default=False)

    @property
    def inbox_key(self) -> str:
        return inbox_key(self.consumer, self.event_id)


CURRENT_DELIVERY: ContextVar[Delivery | None] = ContextVar("baedal_dapr_delivery", default=None)


def inbox_key(consumer: str, event_id: str) -> str:
    return f"inbox:{consumer}:{event_id}"


class KeyDirectory:
    """Every key ever created in the state store, in the service's SQL database (for ``scan``)."""

    def __init__(self, db: ServiceDb) -> None:
        self._db = db

    async def add(self, keys: Sequence[str]) -> None:
        async with self._db.atomic() as tx:
            await tx.executemany(
                "INSERT INTO state_keys (key) VALUES (?) ON CONFLICT (key) DO NOTHING", [(k,) for k in keys]
            )

    async def keys(self, prefix: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT key FROM state_keys WHERE key >= ? AND key < ? ORDER BY key", prefix_range(prefix)
        )
        return [str(row[0]) for row in rows]


def is_conflict(exc: Exception) -> bool:
    """daprd's answer to a failed ETag or first-write guard. The SDK wraps the gRPC error in
    DaprGrpcError or (async ``save_state``) DaprInternalError, both keeping it on ``__cause__``."""
    cause = exc.__cause__
    if not isinstance(cause, grpc.RpcError):
        return False
    code, details = cause.code(), cause.details() or ""
    return code == grpc.StatusCode.ABORTED or (
        code == grpc.StatusCode.INTERNAL and (ETAG_MISMATCH in details or FIRST_WRITE_FAILED in details)
    )


def dapr_key(key: str) -> str:
    """The key as daprd gets it: ``%`` and ``|`` %-escaped (daprd refuses ``||``); injective."""
    return key.replace("%", "%25").replace("|", "%7C") if ("|" in key or "%" in key) else key


def baedal_key(key: str) -> str:
    return key.replace("%7C", "|").replace("%25", "%") if "%" in key else key


def transaction_operations(writes: Sequence[Write], inbox: StateOp | None, outbox: Sequence[StateOp]) -> list[StateOp]:
    """The writes (each guarded) and the inbox entry in key order, so every transaction takes
    PostgreSQL's row locks in the same order (two of them never deadlock), then the outbox keys."""
    ops = [_guarded(write) for write in writes]
    if inbox is not None:
        ops.append(inbox)
    return [*sorted(ops, key=lambda op: op.key), *outbox]


def _guarded(write: Write) -> StateOp:
    if isinstance(write, Delete):
        return StateOp(dapr_key(write.key), None, etag=write.etag)
    return StateOp(dapr_key(write.key), dumps(write.value).encode(), etag=write.etag, first_write=write.etag is None)


class DaprStateStore:
    """:class:`services.runtime.ports.StateStore` on the Dapr state store ``store_name``."""

    def __init__(
        self,
        sidecar: Sidecar,
        service: str,
        store_name: str,
        directory: KeyDirectory,
        outbox: OutboxRelay,
        retention_s: int = 86400,
    ) -> None:
        self._sidecar = sidecar
        self._service = service
        self._store = store_name
        self._directory = directory
        self.outbox = outbox
        self._retention_s = retention_s

    async def get(self, key: str) -> Record | None:
        response = await self._sidecar.client.get_state(self._store, dapr_key(key))
        if not response.data:
            return None
        return Record(key, loads(response.data), response.etag)

    async def scan(self, prefix: str) -> list[Record]:
        keys = await self._directory.keys(prefix)
        if not keys:
            return []
        response = await self._sidecar.client.get_bulk_state(self._store, [dapr_key(k) for k in keys], parallelism=8)
        return [Record(baedal_key(item.key), loads(item.data), item.etag) for item in response.items if item.data]

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        for event in events:  # the service's one stream carries only its own kinds
            if publisher_of(event.topic) != self._service:
                raise ValueError(f"{self._service} cannot publish {event.topic}: see services.topics.PUBLISHERS")
        created = [w.key for w in writes if isinstance(w, Put) and w.etag is None]
        if created:
            await self._directory.add(created)
        envelopes = [event.envelope() for event in events]
        if envelopes:
            await self.outbox.enlist([e["id"] for e in envelopes])
        delivery = CURRENT_DELIVERY.get()
        inbox = None
        if delivery is not None and not delivery.recorded:
            inbox = StateOp(
                dapr_key(delivery.inbox_key), b"{}", first_write=True, metadata={"ttlInSeconds": str(self._retention_s)}
            )
        operations = transaction_operations(writes, inbox, self.outbox.operations(envelopes, self._retention_s))
        try:
            await self._sidecar.client.execute_guarded_transaction(self._store, operations)
        except (DaprGrpcError, DaprInternalError) as exc:
            if not is_conflict(exc):  # the sidecar went away mid-call, say: it may have committed,
                raise  # so the outbox rows stay for the sweep (which forgets them if it did not)
            if envelopes:  # a failed guard: nothing was written
                await self.outbox.forget([e["id"] for e in envelopes])
            if delivery is not None and inbox is not None and await self.get(delivery.inbox_key) is not None:
                raise AlreadyHandled(delivery.event_id) from exc
            raise ConcurrencyConflict(str(exc)) from exc
        if delivery is not None:
            delivery.recorded = True
        self.outbox.committed(envelopes)

    async def handled(self, consumer: str, event_id: str) -> bool:
        return await self.get(inbox_key(consumer, event_id)) is not None
