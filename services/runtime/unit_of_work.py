"""The unit of work: one read–decide–commit step of a handler, said once.

A step is ``async (uow) -> T``. It reads through ``uow.get``, which remembers each record's ETag (a
key read as missing must still not exist at commit); it stages writes with ``uow.put`` and
``uow.delete``, each guarded by what the step read of that key; and the events to publish with
``uow.emit`` (an aggregate's :class:`~services.topics.DomainEvent`) or ``uow.publish`` (a finished
:class:`~services.runtime.events.OutboundEvent`). :func:`run_step` then commits the writes and the
events atomically through :meth:`StateStore.commit <services.runtime.ports.StateStore.commit>`.

When the commit meets a :class:`~services.runtime.ports.ConcurrencyConflict` (somebody wrote a key
after the step read it), the whole step runs again on a new unit of work, from fresh reads, up to
:data:`TRIES` times. A step that raises (``DomainError``, ``RetryLater``, ``DropEvent``…) commits
nothing; a step that stages nothing commits nothing either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from services.runtime.events import OutboundEvent
from services.runtime.ports import Delete, Put, Record, StateStore, Write, retry_on_conflict
from services.topics import DomainEvent

T = TypeVar("T")
TRIES = 20


def outbound(event: DomainEvent, source: str, subject: str) -> OutboundEvent:
    """A domain event as ``source`` publishes it about the aggregate ``subject``."""
    return OutboundEvent(
        topic=event.topic, data=event.data, source=source, subject=subject, deliver_at=event.deliver_at
    )


class UnitOfWork:
    """The reads, guarded writes and events of one attempt at a step. ``source`` is the service
    that publishes what the step emits (None: the step publishes nothing)."""

    def __init__(self, store: StateStore, source: str | None = None) -> None:
        self.store = store
        self.source = source
        self._read: dict[str, Record | None] = {}
        self._writes: dict[str, Write] = {}
        self._events: list[OutboundEvent] = []

    async def get(self, key: str) -> Record | None:
        """The record under ``key`` as this step sees it: read once, then remembered with its ETag."""
        if key not in self._read:
            self._read[key] = await self.store.get(key)
        return self._read[key]

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Write ``value`` under ``key`` at commit, if the key is still as this step read it: same
        ETag, or still missing (a key the step did not read must not exist either: a create)."""
        record = self._read.get(key)
        self._writes[key] = Put(key, value, record.etag if record else None)

    def delete(self, key: str) -> None:
        """Delete ``key`` at commit, if it is still as this step read it."""
        record = self._read.get(key)
        if record is None:
            raise KeyError(f"{key!r}: only a record this step read can be deleted")
        self._writes[key] = Delete(key, record.etag)

    def publish(self, *events: OutboundEvent) -> None:
        """Publish finished events with the commit."""
        self._events.extend(events)

    def emit(self, subject: str, events: Iterable[DomainEvent]) -> None:
        """Publish what an aggregate's change caused, as this service's events about ``subject``
        (the aggregate's id)."""
        if self.source is None:
            raise TypeError("this unit of work has no source to publish as")
        source = self.source
        self._events.extend(outbound(e, source, subject) for e in events)

    async def commit(self) -> None:
        """Apply the staged writes and enqueue the events atomically (nothing staged: no commit).
        Raises ConcurrencyConflict if a key changed since this step read it."""
        if self._writes or self._events:
            await self.store.commit(list(self._writes.values()), self._events)


Step = Callable[[UnitOfWork], Awaitable[T]]


async def run_step(store: StateStore, step: Step[T], source: str | None = None) -> T:
    """Run ``step`` on a fresh unit of work and commit what it staged; on a conflict, run it again
    from fresh reads (at most :data:`TRIES` times, then the conflict propagates)."""

    async def attempt() -> T:
        uow = UnitOfWork(store, source)
        result = await step(uow)
        await uow.commit()
        return result

    return await retry_on_conflict(attempt, TRIES)
