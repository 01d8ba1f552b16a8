"""The state-store port on a Dapr state store, with Dapr's transactional outbox and an inbox.

- ``get`` is ``GetState`` with its ETag; ``commit`` is one ``ExecuteStateTransaction`` whose every
  operation carries the ETag it read (first-write concurrency for keys that must not exist yet).
  daprd reports a failed guard as ``INTERNAL`` "possible etag mismatch" on a transaction and as
  ``ABORTED`` on ``SaveState``/``DeleteState``; both become :class:`ConcurrencyConflict`, which the
  handlers already retry from a fresh read.
- Events leave through the store's outbox (``outboxPublishPubsub``/``outboxPublishTopic``): daprd
  publishes one message per upserted key after the transaction commits. An event rides on a
  write's key as its ``outbox.projection``; events beyond the number of writes get keys of their own
  (``event:<id>``, expiring). Writes without an event of their own publish a tiny "no event" marker
  that subscribers ignore, instead of leaking the record to other services.
- Inside a delivery (see :mod:`services.runtime.dapr.subscriber`) the first commit also records
  ``inbox:<consumer>:<event id>`` (first-write, expiring), so a redelivered event has no second
  effect; the outbox is at least once, late and unordered, so this matters.
- ``scan``: Dapr's state API cannot list keys (PostgreSQL v2 has no query API), so every new key is
  first written to a key directory in the service's own SQL database, *before* the transaction: a
  committed key is always listed; a key whose transaction failed is listed but reads as missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
from dapr.clients.exceptions import DaprGrpcError, DaprInternalError

from services.runtime.dapr.client import StateOp
from services.runtime.dapr.sidecar import Sidecar
from services.runtime.embedded.storage import ServiceDb, prefix_range
from services.runtime.events import OutboundEvent, dumps, loads
from services.runtime.ports import ConcurrencyConflict, Delete, Put, Record, Write
from services.topics import PUBLISHERS, publisher_of

DIRECTORY_SCHEMA = ["CREATE TABLE IF NOT EXISTS state_keys (key TEXT PRIMARY KEY)"]
PROJECTION = {"outbox.projection": "true", "contentType": "application/json"}
# What a write without an event of its own publishes: subscribers see no envelope and ignore it.
NO_EVENT: dict[str, Any] = {"baedal": "no-event"}
ETAG_MISMATCH = "possible etag mismatch"


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
    return code == grpc.StatusCode.ABORTED or (code == grpc.StatusCode.INTERNAL and ETAG_MISMATCH in details)


def outbox_operations(
    writes: Sequence[Write], events: Sequence[OutboundEvent], inbox: StateOp | None, event_ttl_s: int, outbox: bool
) -> list[StateOp]:
    """The transaction's operations: the writes (each guarded) and the inbox entry, in key order (every
    transaction takes PostgreSQL's row locks in the same order: no deadlock between two of them),
    and, when the store has an outbox, one message per upserted key, carrying the events. (Without an
    outbox daprd would *store* a projection, overwriting the record: so none is sent.)

    Each projection goes right *before* its write. daprd 1.18 removes the projections from the
    operations while it ranges over them (``outbox.go``, dapr#8659): a projection right after
    another removed one is skipped (then stored over its record and published as an event of its
    own), and one at the end of a transaction with two or more makes daprd panic and exit (``slice
    bounds out of range``). A projection followed by a plain write is always removed; this order
    works as well with a daprd that removes them correctly."""
    ops = sorted((_guarded(write) for write in writes), key=lambda op: op.key)
    if inbox is not None:
        ops = sorted([*ops, inbox], key=lambda op: op.key)
    if not outbox:
        if events:
            raise ValueError("this state store has no outbox: it cannot publish events")
        return ops
    pending = [event.envelope() for event in events]
    ordered: list[StateOp] = []
    for op in ops:
        if op.value is not None:
            message = pending.pop(0) if pending else NO_EVENT
            ordered.append(StateOp(op.key, dumps(message).encode(), metadata=PROJECTION))
        ordered.append(op)
    ttl = {"ttlInSeconds": str(event_ttl_s), "contentType": "application/json"}
    ordered.extend(StateOp(f"event:{e['id']}", dumps(e).encode(), metadata=ttl) for e in pending)
    return ordered


def _guarded(write: Write) -> StateOp:
    if isinstance(write, Delete):
        return StateOp(write.key, None, etag=write.etag)
    return StateOp(write.key, dumps(write.value).encode(), etag=write.etag, first_write=write.etag is None)


class DaprStateStore:
    """:class:`services.runtime.ports.StateStore` on the Dapr state store ``store_name``."""

    def __init__(
        self, sidecar: Sidecar, service: str, store_name: str, directory: KeyDirectory, retention_s: int = 86400
    ) -> None:
        self._sidecar = sidecar
        self._service = service
        self._outbox = service in set(PUBLISHERS.values())  # components/state-<service>.yaml agrees
        self._store = store_name
        self._directory = directory
        self._retention_s = retention_s

    async def get(self, key: str) -> Record | None:
        response = await self._sidecar.client.get_state(self._store, key)
        if not response.data:
            return None
        return Record(key, loads(response.data), response.etag)

    async def scan(self, prefix: str) -> list[Record]:
        keys = await self._directory.keys(prefix)
        if not keys:
            return []
        response = await self._sidecar.client.get_bulk_state(self._store, keys, parallelism=8)
        return [Record(item.key, loads(item.data), item.etag) for item in response.items if item.data]

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        for event in events:  # the outbox has one topic: this service's stream
            if publisher_of(event.topic) != self._service:
                raise ValueError(f"{self._service} cannot publish {event.topic}: see services.topics.PUBLISHERS")
        created = [w.key for w in writes if isinstance(w, Put) and w.etag is None]
        if created:
            await self._directory.add(created)
        delivery = CURRENT_DELIVERY.get()
        inbox = None
        if delivery is not None and not delivery.recorded:
            inbox = StateOp(
                delivery.inbox_key, b"{}", first_write=True, metadata={"ttlInSeconds": str(self._retention_s)}
            )
        try:
            await self._sidecar.client.execute_guarded_transaction(
                self._store, outbox_operations(writes, events, inbox, self._retention_s, self._outbox)
            )
        except (DaprGrpcError, DaprInternalError) as exc:
            if not is_conflict(exc):
                raise
            if delivery is not None and inbox is not None and await self.get(delivery.inbox_key) is not None:
                raise AlreadyHandled(delivery.event_id) from exc
            raise ConcurrencyConflict(str(exc)) from exc
        if delivery is not None:
            delivery.recorded = True

    async def handled(self, consumer: str, event_id: str) -> bool:
        return await self.get(inbox_key(consumer, event_id)) is not None
