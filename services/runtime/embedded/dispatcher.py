"""The embedded message bus: outbox relay, per-service delivery queues, retries, dead letters.

Delivery path for one event:
1. a handler's commit puts the event in its service's ``outbox`` (same transaction as its state);
2. the relay of that service copies it into the ``deliveries`` queue of every subscribed service
   (in the subscriber's own database), then deletes it from the outbox. A crash between the two
   steps copies it again: delivery is at least once;
3. the subscriber's worker runs the handler, records the event id in its ``inbox`` and deletes the
   delivery in one transaction, so a duplicate copy finds the inbox entry and has no second effect;
4. a handler that raises is retried with exponential backoff and jitter; after ``max_attempts``
   (or at once for :class:`DropEvent`) the delivery moves to ``dead_letters`` for ``baedal dlq``.

Timers are events whose ``deliver_at`` lies in the future: the queue holds them until due, on disk,
so they survive restarts.

The relay and worker of a service run in one process only, the one ``local`` names; with two
processes (``baedal up --processes 2``) a wake-up for the other's loops goes over the
:class:`~services.runtime.embedded.peer.Peer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, TypeVar

from prometheus_client import Histogram

from services.runtime.clock import epoch
from services.runtime.embedded.peer import Peer, Wake
from services.runtime.embedded.storage import ServiceDb
from services.runtime.events import Event, loads
from services.runtime.metrics import HANDLED
from services.runtime.ports import BatchHandler, Consumer, DropEvent, Handler, RetryLater, Subscription
from services.runtime.settings import Settings

log = logging.getLogger("baedal.dispatcher")

DELIVERY_LAG = Histogram(
    "baedal_delivery_lag_seconds",
    "Time from an event being due to its handler committing",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

RELAY_BATCH = 1000
T = TypeVar("T")

# For tests/e2e/test_crash.py: BAEDAL_CRASH_AT=<point> (read once) exits the process the first time it gets there.
CRASH_POINTS = (
    "relay-before-copy-commit",  # the copies into a subscriber's queue written, not yet committed
    "relay-after-copy-commit",
    "relay-before-delete-commit",  # the copied rows deleted from the outbox, not yet committed
    "relay-after-delete-commit",
    "worker-before-commit",  # a batch handled, its transaction not yet committed
    "worker-after-commit",
)
CRASH_EXIT_CODE = 86
_CRASH_AT = os.environ.get("BAEDAL_CRASH_AT") or None
if _CRASH_AT is not None and _CRASH_AT not in CRASH_POINTS:
    raise ValueError(f"BAEDAL_CRASH_AT={_CRASH_AT!r} is no crash point; points: {', '.join(CRASH_POINTS)}")


def _crash_point(name: str) -> None:
    if name == _CRASH_AT:
        os._exit(CRASH_EXIT_CODE)


class OutboxRow(NamedTuple):
    seq: int
    event_id: str
    topic: str
    envelope: str
    deliver_at: float


class DeliveryRow(NamedTuple):
    seq: int
    consumer: str
    event_id: str
    topic: str
    envelope: str
    attempts: int
    due_at: float


class Delivery:
    """How the bus hands events over: once each, when due, in queue order. The chaos adapter
    (``services.runtime.embedded.chaos``) replaces it to duplicate, delay, reorder and fail."""

    def copies(self) -> int:
        return 1

    def delay(self) -> float:
        return 0.0

    def order(self, rows: list[T]) -> list[T]:
        return rows

    def in_flight_s(self) -> float:
        """How far ahead of now a delivery held back on purpose may be due (it is not a timer)."""
        return 0.0

    def consumer(self, consumer: Consumer) -> Consumer:
        return consumer


@dataclass(frozen=True)
class DeadLetter:
    id: str
    service: str
    consumer: str
    event_id: str
    topic: str
    attempts: int
    error: str
    failed_at: float
    envelope: dict[str, Any]


class Dispatcher:
    def __init__(
        self,
        dbs: dict[str, ServiceDb],
        settings: Settings,
        paused: set[str] | None = None,
        delivery: Delivery | None = None,
        local: Collection[str] | None = None,
        peer: Peer | None = None,
    ) -> None:
        self._dbs = dbs
        # The services whose relay and worker run in this process; the peer's process runs the rest.
        self.local = frozenset(dbs if local is None else local)
        if not self.local <= dbs.keys() or (self.local != dbs.keys() and peer is None):
            raise ValueError(f"local services {sorted(self.local)}: unknown, or the rest has no peer to run them")
        self._peer = peer
        self._settings = settings
        self._delivery = delivery or Delivery()
        self._by_topic: dict[str, list[Consumer]] = defaultdict(list)
        self._consumers: dict[tuple[str, str], Consumer] = {}
        self._relay_kick = {name: asyncio.Event() for name in dbs}
        self._worker_kick = {name: asyncio.Event() for name in dbs}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.paused: set[str] = set(paused or ())
        self._random = random.Random()
        for name, db in dbs.items():
            db.on_commit(partial(self._wake, Wake.RELAY, name))

    # ------------------------------------------------------------------ wiring

    def subscribe(self, service: str, subscription: Subscription, handler: Handler) -> None:
        self._add(Consumer(service, subscription, handler=handler))

    def subscribe_batch(self, service: str, subscription: Subscription, handler: BatchHandler) -> None:
        """A consumer handed all its due events of a worker batch at once (one statement for many
        events instead of one transaction step each)."""
        self._add(Consumer(service, subscription, batch_handler=handler))

    def _add(self, consumer: Consumer) -> None:
        consumer = self._delivery.consumer(consumer)
        service, subscription = consumer.service, consumer.subscription
        key = (service, subscription.consumer)
        if key in self._consumers:
            raise ValueError(f"consumer {subscription.consumer!r} registered twice in {service}")
        self._consumers[key] = consumer
        self._by_topic[subscription.topic].append(consumer)

    def topics(self) -> dict[str, list[str]]:
        return {t: [f"{c.service}/{c.subscription.consumer}" for c in cs] for t, cs in self._by_topic.items()}

    def _wake(self, wake: Wake, service: str) -> None:
        """Wake a service's relay or worker, here or in the peer's process."""
        if service not in self.local:
            assert self._peer is not None
            self._peer.send(wake, service)
        elif wake is Wake.RELAY:
            self._relay_kick[service].set()
        else:
            self._worker_kick[service].set()

    def woken(self, wake: Wake, service: str) -> None:
        """A message from the peer: a wake-up for one of this process's loops, or a pause or resume
        asked there (both processes keep the whole paused set, for /admin/backlog)."""
        if wake in (Wake.PAUSE, Wake.RESUME):
            self._set_paused(service, wake is Wake.PAUSE)
        elif service in self.local:
            self._wake(wake, service)
        else:
            log.warning("a wake-up for %r, which does not run here", service)

    async def start(self) -> None:
        self._running = True
        for name in self.local:
            self._tasks.append(asyncio.create_task(self._relay_loop(name), name=f"relay-{name}"))
            self._tasks.append(asyncio.create_task(self._worker_loop(name), name=f"worker-{name}"))
        self._tasks.append(asyncio.create_task(self._prune_loop(), name="inbox-pruner"))

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def services(self) -> list[str]:
        return list(self._dbs)

    def pause(self, service: str) -> None:
        self._set_paused(service, True)
        if self._peer is not None:
            self._peer.send(Wake.PAUSE, service)

    def resume(self, service: str) -> None:
        self._set_paused(service, False)
        if self._peer is not None:
            self._peer.send(Wake.RESUME, service)

    def _set_paused(self, service: str, paused: bool) -> None:
        if paused:
            self.paused.add(service)
        else:
            self.paused.discard(service)
            if service in self.local:
                self._worker_kick[service].set()

    # ------------------------------------------------------------------ relay

    async def _relay_loop(self, service: str) -> None:
        kick = self._relay_kick[service]
        while self._running:
            kick.clear()
            try:
                moved = await self.relay_once(service)
            except Exception:
                log.exception("relay of %s failed; retrying", service)
                await asyncio.sleep(0.5)
                continue
            if moved:
                await asyncio.sleep(0)  # see _worker_loop
            else:
                await _wait(kick, 1.0)

    async def relay_once(self, service: str) -> int:
        db = self._dbs[service]
        rows = [
            OutboxRow(*row)
            for row in await db.database.fetchall(
                "SELECT seq, event_id, topic, envelope, deliver_at FROM outbox ORDER BY seq LIMIT ?", (RELAY_BATCH,)
            )
        ]
        if not rows:
            return 0
        copies: dict[str, list[tuple[str, str, str, str, float]]] = defaultdict(list)
        for row in rows:
            data: dict[str, Any] | None = None
            for consumer in self._by_topic.get(row.topic, ()):
                if consumer.subscription.match is not None:
                    data = data if data is not None else loads(row.envelope).get("data", {})
                    if not consumer.subscription.match(data):
                        continue  # not for this consumer: never queued
                for _ in range(self._delivery.copies()):
                    due = row.deliver_at + self._delivery.delay()
                    copies[consumer.service].append(
                        (consumer.subscription.consumer, row.event_id, row.topic, row.envelope, due)
                    )
        for target, items in copies.items():
            async with self._dbs[target].database.transaction() as tx:
                await tx.executemany(
                    "INSERT INTO deliveries (consumer, event_id, topic, envelope, due_at) VALUES (?, ?, ?, ?, ?)",
                    items,
                )
                _crash_point("relay-before-copy-commit")
            _crash_point("relay-after-copy-commit")
            self._wake(Wake.WORK, target)
        async with db.database.transaction() as tx:
            await tx.executemany("DELETE FROM outbox WHERE seq = ?", [(row.seq,) for row in rows])
            _crash_point("relay-before-delete-commit")
        _crash_point("relay-after-delete-commit")
        return len(rows)

    # ------------------------------------------------------------------ worker

    async def _worker_loop(self, service: str) -> None:
        kick = self._worker_kick[service]
        while self._running:
            kick.clear()
            if service in self.paused:
                await _wait(kick, 1.0)
                continue
            try:
                handled, next_due = await self.work_once(service)
            except Exception:
                log.exception("worker of %s failed; retrying", service)
                await asyncio.sleep(0.5)
                continue
            if handled:
                # SQLite calls never suspend, so without this a busy worker would never let the
                # event loop serve HTTP requests until every queue drained.
                await asyncio.sleep(0)
            else:
                timeout = 1.0 if next_due is None else min(max(next_due - epoch(), 0.001), 1.0)
                await _wait(kick, timeout)

    async def work_once(self, service: str) -> tuple[int, float | None]:
        """Handle one batch of due deliveries; return how many, and when the next one is due."""
        db = self._dbs[service]
        now = epoch()
        rows = [
            DeliveryRow(*row)
            for row in await db.database.fetchall(
                "SELECT seq, consumer, event_id, topic, envelope, attempts, due_at FROM deliveries"
                " WHERE due_at <= ? ORDER BY due_at, seq LIMIT ?",
                (now, self._settings.batch_size),
            )
        ]
        if not rows:
            row = await db.database.fetchone("SELECT MIN(due_at) FROM deliveries")
            return 0, (row[0] if row and row[0] is not None else None)
        rows = self._delivery.order(rows)
        singles: list[DeliveryRow] = []
        batches: dict[str, list[DeliveryRow]] = defaultdict(list)
        for row in rows:
            consumer = self._consumers.get((service, row.consumer))
            (batches[row.consumer] if consumer and consumer.batch_handler else singles).append(row)
        async with db.atomic() as tx:
            for name, group in batches.items():
                if not await self._deliver_batch(service, tx, self._consumers[(service, name)], group):
                    singles += group  # one by one, so each gets its own retry and dead-letter accounting
            for row in singles:
                await self._deliver(service, tx, row)
            _crash_point("worker-before-commit")
        _crash_point("worker-after-commit")
        done = epoch()
        for row in rows:
            DELIVERY_LAG.labels(service).observe(max(done - row.due_at, 0.0))
        return len(rows), None

    async def _deliver(self, service: str, tx: Any, row: DeliveryRow) -> None:
        seq, consumer_name, event_id, topic, envelope, attempts, _due = row
        consumer = self._consumers.get((service, consumer_name))
        try:
            if consumer is None:
                raise DropEvent(f"no consumer {consumer_name!r} in {service}")
            try:
                event = Event.from_envelope(loads(envelope))
            except ValueError as exc:
                raise DropEvent(f"malformed envelope: {exc}") from exc
            async with tx.savepoint():
                # The inbox row first: if it exists this is a duplicate; if the handler fails, the
                # savepoint takes the row back with everything else.
                fresh = await tx.execute(
                    "INSERT INTO inbox (consumer, event_id, done_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (consumer_name, event_id, epoch()),
                )
                if fresh:
                    await consumer.handle(event)
                # No row count needed: on PostgreSQL it goes out with the savepoint's release.
                await tx.executemany("DELETE FROM deliveries WHERE seq = ?", [(seq,)])
            HANDLED.labels(service, consumer_name, "success" if fresh else "duplicate").inc()
        except DropEvent as exc:
            await self._dead_letter(service, tx, row, attempts + 1, f"dropped: {exc}")
        except Exception as exc:
            attempts += 1
            error = f"{type(exc).__name__}: {exc}"
            if attempts >= self._settings.max_attempts:
                await self._dead_letter(service, tx, row, attempts, error)
                return
            log.log(
                _level(exc), "%s/%s on %s, attempt %d, retrying: %s", service, consumer_name, topic, attempts, error
            )
            HANDLED.labels(service, consumer_name, "retry").inc()
            await tx.execute(
                "UPDATE deliveries SET attempts = ?, due_at = ?, last_error = ? WHERE seq = ?",
                (attempts, epoch() + self._backoff(attempts), error[:2000], seq),
            )

    async def _deliver_batch(self, service: str, tx: Any, consumer: Consumer, group: list[DeliveryRow]) -> bool:
        """All of a batch consumer's deliveries in one savepoint; False (nothing applied) on any error."""
        assert consumer.batch_handler is not None
        name = consumer.subscription.consumer
        try:
            async with tx.savepoint():
                marks = ", ".join("?" * len(group))
                seen = {
                    r[0]
                    for r in await tx.fetchall(
                        f"SELECT event_id FROM inbox WHERE consumer = ? AND event_id IN ({marks})",
                        (name, *(row.event_id for row in group)),
                    )
                }
                fresh = {row.event_id: row for row in group if row.event_id not in seen}  # also drops in-batch copies
                await consumer.batch_handler([Event.from_envelope(loads(row.envelope)) for row in fresh.values()])
                now = epoch()
                await tx.executemany(
                    "INSERT INTO inbox (consumer, event_id, done_at) VALUES (?, ?, ?)",
                    [(name, event_id, now) for event_id in fresh],
                )
                await tx.executemany("DELETE FROM deliveries WHERE seq = ?", [(row.seq,) for row in group])
        except Exception as exc:
            log.log(_level(exc), "%s/%s: a batch of %d failed, retrying one by one: %r", service, name, len(group), exc)
            return False
        HANDLED.labels(service, name, "success").inc(len(fresh))
        HANDLED.labels(service, name, "duplicate").inc(len(group) - len(fresh))
        return True

    def _backoff(self, attempts: int) -> float:
        base = min(self._settings.backoff_cap_s, self._settings.backoff_base_s * 2.0 ** (attempts - 1))
        return base * (0.5 + self._random.random() / 2)

    async def _dead_letter(self, service: str, tx: Any, row: DeliveryRow, attempts: int, error: str) -> None:
        seq, consumer_name, event_id, topic, envelope, _attempts, _due = row
        log.error("%s/%s: event %s on %s dead-lettered: %s", service, consumer_name, event_id, topic, error)
        HANDLED.labels(service, consumer_name, "dead_letter").inc()
        await tx.execute(
            "INSERT INTO dead_letters (id, consumer, event_id, topic, envelope, attempts, error, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (f"{service}-{seq}", consumer_name, event_id, topic, envelope, attempts, error[:2000], epoch()),
        )
        await tx.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))

    # ------------------------------------------------------------------ dead letters

    async def dead_letters(self) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        for service, db in self._dbs.items():
            rows = await db.database.fetchall(
                "SELECT id, consumer, event_id, topic, attempts, error, failed_at, envelope FROM dead_letters"
                " ORDER BY failed_at"
            )
            letters += [DeadLetter(r[0], service, r[1], r[2], r[3], r[4], r[5], r[6], loads(r[7])) for r in rows]
        return letters

    async def replay(self, letter_id: str) -> bool:
        """Move a dead letter back onto its consumer's queue, with a fresh attempt budget."""
        service = letter_id.rsplit("-", 1)[0]
        db = self._dbs.get(service)
        if db is None:
            return False
        async with db.database.transaction() as tx:
            row = await tx.fetchone(
                "SELECT consumer, event_id, topic, envelope FROM dead_letters WHERE id = ?", (letter_id,)
            )
            if row is None:
                return False
            await tx.execute(
                "INSERT INTO deliveries (consumer, event_id, topic, envelope, due_at) VALUES (?, ?, ?, ?, ?)",
                (*row, epoch()),
            )
            await tx.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        self._wake(Wake.WORK, service)
        return True

    # ------------------------------------------------------------------ housekeeping

    async def backlog(self) -> dict[str, dict[str, int]]:
        """Per service: events waiting to be handled (outbox, due deliveries, deliveries retrying
        after a failure, and those the chaos settings hold back) and timers not yet due. No waiting
        events anywhere means the platform has settled."""
        counts: dict[str, dict[str, int]] = {}
        # A delivery held back on purpose is in flight, not a timer: it counts as waiting.
        soon = epoch() + self._delivery.in_flight_s()
        for name, db in self._dbs.items():
            out = await db.database.fetchone("SELECT COUNT(*) FROM outbox")
            due = await db.database.fetchone(
                "SELECT COUNT(*) FROM deliveries WHERE due_at <= ? OR attempts > 0", (soon,)
            )
            later = await db.database.fetchone(
                "SELECT COUNT(*) FROM deliveries WHERE due_at > ? AND attempts = 0", (soon,)
            )
            counts[name] = {
                "due": int(out[0] if out else 0) + int(due[0] if due else 0),
                "scheduled": int(later[0] if later else 0),
            }
        return counts

    async def settled(self) -> bool:
        return all(c["due"] == 0 for c in (await self.backlog()).values())

    async def prune_inbox(self) -> None:
        """Forget handled event ids after the retention window; state-machine guards cover later
        duplicates (architecture rule 3), and the tables stay bounded as orders grow."""
        cutoff = epoch() - self._settings.inbox_retention_s
        for db in (self._dbs[name] for name in self.local):
            async with db.database.transaction() as tx:
                await tx.execute("DELETE FROM inbox WHERE done_at < ?", (cutoff,))

    async def _prune_loop(self) -> None:
        while self._running:
            await asyncio.sleep(min(60.0, self._settings.inbox_retention_s))
            try:
                await self.prune_inbox()
            except Exception:
                log.exception("inbox pruning failed")


def _level(exc: Exception) -> int:
    """RetryLater is a handler's own "not yet" (a dependency is missing or down); anything else is
    a failure worth a look."""
    return logging.INFO if isinstance(exc, RetryLater) else logging.WARNING


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
