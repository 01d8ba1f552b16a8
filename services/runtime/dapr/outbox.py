"""The service's own outbox on the Dapr state store, relayed onto pub/sub by the service.

Each event a commit publishes is written as ``outbox:<event id>`` (first-write) in the *same*
state transaction as the records, so the event exists exactly when the change does. After the
commit the relay publishes it onto the service's stream (``PublishEvent``, our envelope as a
CloudEvent) and deletes the key. A commit whose process dies before that is relayed by the sweep:
every outbox key is first listed in the service's SQL database (``dapr_outbox``), *before* its
transaction; rows older than :data:`SWEEP_AFTER_S` are looked up in the state store and relayed
if the key exists, forgotten once :data:`FORGET_AFTER_S` passed without it (the transaction
failed, or it was relayed and deleted). Replicas may relay one event twice: consumers deduplicate
on the event id, as they must for any at-least-once delivery.

Why not daprd's transactional outbox (``outboxPublishPubsub``), which Baedal used before: in daprd
1.18 it (1) panics and exits on a transaction with two or more ``outbox.projection`` operations
in some orders (dapr#8659), (2) after a transaction that failed (an ETag conflict: routine here)
polls the state store for its marker key in a loop that never ends, without delay, holding one of
the outbox consumer's ten workers and a CPU core (its backoff is built without ``Stop``), and
(3) sleeps a second per message in those ten workers: at most ten events a second per service,
and a second of latency per saga step. See docs/dapr.md, "daprd against the fake".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from dapr.clients import BulkPublishEntry

from services.runtime.clock import epoch
from services.runtime.dapr.client import StateOp
from services.runtime.dapr.sidecar import CLOUDEVENTS_JSON, Sidecar
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import dumps, loads

log = logging.getLogger("baedal.dapr")

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS dapr_outbox (key TEXT PRIMARY KEY, listed_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dapr_outbox_listed ON dapr_outbox (listed_at)",
]
PREFIX = "outbox:"
SWEEP_EVERY_S = 1.0
SWEEP_AFTER_S = 5.0  # the committing replica relays at once; the sweep is for the ones it could not
FORGET_AFTER_S = 120.0  # a listed key still missing by then was never committed (or is relayed)
SWEEP_BATCH = 500


def outbox_key(event_id: str) -> str:
    return f"{PREFIX}{event_id}"


class OutboxRelay:
    def __init__(self, sidecar: Sidecar, store: str, pubsub: str, stream: str | None, db: ServiceDb) -> None:
        self._sidecar = sidecar
        self._store = store
        self._pubsub = pubsub
        self._stream = stream  # None: this service publishes nothing
        self._db = db
        self._queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    # ------------------------------------------------------------------ the commit's part

    async def enlist(self, event_ids: Sequence[str]) -> None:
        """Before the transaction: the keys it will create, so the sweep finds them after a crash."""
        now = epoch()
        async with self._db.atomic() as tx:
            await tx.executemany(
                "INSERT INTO dapr_outbox (key, listed_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                [(outbox_key(event_id), now) for event_id in event_ids],
            )

    def operations(self, envelopes: Sequence[dict[str, Any]], ttl_s: int) -> list[StateOp]:
        """The outbox keys of a transaction (expiring: a safety net, the relay deletes them)."""
        metadata = {"ttlInSeconds": str(ttl_s), "contentType": "application/json"}
        return [StateOp(outbox_key(e["id"]), dumps(e).encode(), first_write=True, metadata=metadata) for e in envelopes]

    def committed(self, envelopes: list[dict[str, Any]]) -> None:
        """After the transaction: relay these now (in the background: the request does not wait)."""
        if envelopes:
            self._queue.put_nowait(envelopes)

    # ------------------------------------------------------------------ the relay

    def start(self) -> None:
        if self._stream is not None:
            self._task = asyncio.create_task(self._loop(), name="dapr-outbox-relay")

    async def stop(self) -> None:
        """Relay what was committed and is still queued (briefly), then stop; the sweep of the
        next start (or another replica) relays whatever is left."""
        if self._task is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain(), 5.0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _drain(self) -> None:
        while not self._queue.empty():
            await self._relay(self._queue.get_nowait())

    async def _loop(self) -> None:
        next_sweep = epoch() + SWEEP_EVERY_S
        while True:
            try:
                envelopes = await asyncio.wait_for(self._queue.get(), max(next_sweep - epoch(), 0.0))
            except TimeoutError:
                envelopes = []
            try:
                if envelopes:
                    await self._relay(envelopes)
                if epoch() >= next_sweep:
                    await self.sweep()
                    next_sweep = epoch() + SWEEP_EVERY_S
            except Exception as exc:  # the sidecar or Redis is down: the sweep tries again
                log.warning("outbox relay of %s: %r", self._store, exc)
                next_sweep = epoch() + SWEEP_EVERY_S

    async def _relay(self, envelopes: list[dict[str, Any]]) -> None:
        """Publish, then delete the keys and their rows. A failure leaves both to the sweep."""
        assert self._stream is not None
        client = self._sidecar.client
        if len(envelopes) == 1:
            await client.publish_event(
                self._pubsub, self._stream, dumps(envelopes[0]), data_content_type=CLOUDEVENTS_JSON
            )
        else:
            entries = [
                BulkPublishEntry(entry_id=e["id"], event=dumps(e), content_type=CLOUDEVENTS_JSON) for e in envelopes
            ]
            response = await client.publish_events(self._pubsub, self._stream, entries)
            if response.failed_entries:
                failed = ", ".join(f"{f.entry_id}: {f.error}" for f in response.failed_entries)
                raise RuntimeError(f"bulk publish to {self._stream} failed for {failed}")
        self.published += len(envelopes)
        keys = [outbox_key(e["id"]) for e in envelopes]
        await client.execute_guarded_transaction(self._store, [StateOp(key, None) for key in keys])
        await self._forget(keys)

    async def forget(self, event_ids: Sequence[str]) -> None:
        """A transaction failed: its keys were never written."""
        await self._forget([outbox_key(event_id) for event_id in event_ids])

    async def _forget(self, keys: Sequence[str]) -> None:
        async with self._db.atomic() as tx:
            await tx.executemany("DELETE FROM dapr_outbox WHERE key = ?", [(key,) for key in keys])

    async def sweep(self) -> int:
        """Relay listed keys the committing process did not; forget the ones never committed."""
        now = epoch()
        rows = await self._db.fetchall(
            "SELECT key, listed_at FROM dapr_outbox WHERE listed_at <= ? ORDER BY listed_at LIMIT ?",
            (now - SWEEP_AFTER_S, SWEEP_BATCH),
        )
        if not rows:
            return 0
        listed = {str(key): float(at) for key, at in rows}
        response = await self._sidecar.client.get_bulk_state(self._store, list(listed), parallelism=8)
        found = {item.key: loads(item.data) for item in response.items if item.data}
        if found:
            await self._relay(list(found.values()))
        stale = [key for key, at in listed.items() if key not in found and at <= now - FORGET_AFTER_S]
        if stale:
            await self._forget(stale)
        return len(found)

    async def pending(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM dapr_outbox")
        return int(row[0]) if row else 0
