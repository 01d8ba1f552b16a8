"""The ports every service talks to; adapters (embedded, dapr) implement them.

Handlers never see a transport: they read records with their ETag, and commit writes together
with the events those writes cause.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from services.runtime.events import Event, OutboundEvent


class ConcurrencyConflict(Exception):
    """An ETag guard failed: somebody else wrote first. Retry from a fresh read."""


class RetryLater(Exception):
    """A handler cannot make progress yet (a dependency is missing or down): redeliver later."""


class DropEvent(Exception):
    """A poison message: retrying cannot help. It goes to the dead-letter store."""


@dataclass(frozen=True)
class Record:
    key: str
    value: dict[str, Any]
    etag: str


@dataclass(frozen=True)
class Put:
    """Write ``value`` under ``key``; ``etag`` is what was read, ``None`` when it must not exist."""

    key: str
    value: dict[str, Any]
    etag: str | None


@dataclass(frozen=True)
class Delete:
    key: str
    etag: str


Write = Put | Delete


class StateStore(Protocol):
    """A service's own key/value state with ETag optimistic concurrency and an outbox."""

    async def get(self, key: str) -> Record | None: ...

    async def scan(self, prefix: str) -> list[Record]:
        """All records under a key prefix (admin and audit reads, not the request path)."""

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        """Apply every write and enqueue every event atomically; raise ConcurrencyConflict if any
        ETag guard fails (then nothing is written)."""


class OutputBinding(Protocol):
    """An outbound integration (a message channel, an external API), invoked by name of operation.
    In the cluster this is a Dapr output binding; embedded, an adapter of the runtime."""

    async def invoke(self, operation: str, data: dict[str, Any]) -> None: ...


Handler = Callable[[Event], Awaitable[None]]
# A consumer that applies many events at once (projections): it must be idempotent on its own,
# e.g. a version-guarded upsert, because a batch may repeat an event.
BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """``consumer`` (unique per service) receives the events published on ``topic`` whose data
    ``match`` accepts (all when None): a routing rule, applied before anything is queued."""

    topic: str
    consumer: str
    match: Callable[[dict[str, Any]], bool] | None = None


@dataclass(frozen=True)
class Consumer:
    """A subscription of ``service`` with its handler: one event at a time, or a batch handler."""

    service: str
    subscription: Subscription
    handler: Handler | None = None
    batch_handler: BatchHandler | None = None

    async def handle(self, event: Event) -> None:
        if self.handler is not None:
            await self.handler(event)
        elif self.batch_handler is not None:
            await self.batch_handler([event])


T = TypeVar("T")


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]], tries: int = 20) -> T:
    """Run ``attempt`` again whenever it raises ConcurrencyConflict, ``tries`` times at most. The
    loop under :func:`services.runtime.unit_of_work.run_step`, which handlers' steps go through."""
    for _ in range(tries - 1):
        try:
            return await attempt()
        except ConcurrencyConflict:
            continue
    return await attempt()


class Service(Protocol):
    """What a runtime needs of a service: its consumers, registered with the runtime's bus."""

    def subscriptions(self) -> list[tuple[Subscription, Handler]]: ...

    def batch_subscriptions(self) -> list[tuple[Subscription, BatchHandler]]: ...
