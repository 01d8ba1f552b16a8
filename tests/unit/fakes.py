"""What the handlers' unit tests build services on: the in-memory state store, fake ports (views,
board, feed, channel, card gateway), catalog snapshots, and a store that lets a competing write in
between a step's read and its commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from services import topics
from services.catalog.manifest import RestaurantResource
from services.catalog.reconcile import removal_event, snapshot_event
from services.notification.domain import Notification
from services.payment.cards import ChargeResult, GatewayUnavailable
from services.runtime.events import Event, OutboundEvent
from services.runtime.memory import MemoryStateStore
from services.runtime.ports import Record, Write
from tests.support.manifests import manifest


def received(event: OutboundEvent) -> Event:
    """An event as its subscribers receive it (through its CloudEvents envelope)."""
    return Event.from_envelope(event.envelope())


def incoming(topic: str, subject: str = "o1", **data: Any) -> Event:
    """An event of ``topic`` from the service that publishes it, as a subscriber receives it."""
    return received(OutboundEvent(topic=topic, data=data, source=topics.publisher_of(topic), subject=subject))


def restaurant(name: str = "seoul-chicken", generation: int = 1, **spec: Any) -> Event:
    """A catalog snapshot of a restaurant (``manifest`` fields in ``spec``), as the replicas get it."""
    resource = RestaurantResource.model_validate(manifest(name, **spec))
    return received(snapshot_event(resource, f"uid-{name}", generation, "restaurant"))


def removed(name: str, generation: int = 2) -> Event:
    return received(removal_event(name, f"uid-{name}", generation, "restaurant"))


def topics_of(events: Sequence[OutboundEvent]) -> list[str]:
    return [e.topic for e in events]


class FakeGateway:
    """The card processor: approves, declines (``approve = False``) or does not answer
    (``available = False``); remembers each charge and refund it was asked for."""

    def __init__(self) -> None:
        self.approve = True
        self.available = True
        self.charges: list[tuple[str, str, int]] = []
        self.refunds: list[str] = []

    async def charge(self, idempotency_key: str, card_token: str, amount: int) -> ChargeResult:
        if not self.available:
            raise GatewayUnavailable("the fake gateway is down")
        self.charges.append((idempotency_key, card_token, amount))
        return ChargeResult(self.approve, f"ch_{idempotency_key}")

    async def refund(self, idempotency_key: str) -> None:
        if not self.available:
            raise GatewayUnavailable("the fake gateway is down")
        self.refunds.append(idempotency_key)


class _Newest:
    """A read model fed by status events: the newest version of each view applied."""

    def __init__(self, id_field: str) -> None:
        self.id_field = id_field
        self.rows: dict[str, tuple[dict[str, Any], int]] = {}

    async def apply(self, versions: Sequence[tuple[dict[str, Any], int]]) -> None:
        for view, version in versions:
            key = view[self.id_field]
            if key not in self.rows or self.rows[key][1] < version:
                self.rows[key] = (view, version)


class FakeBoard(_Newest):
    def __init__(self) -> None:
        super().__init__("order_id")

    async def near(self, origin: dict[str, float], radius_km: float) -> list[dict[str, Any]]:
        return [view for view, _ in self.rows.values() if view["status"] == "AVAILABLE"]


class FakeViews(_Newest):
    def __init__(self) -> None:
        super().__init__("id")

    async def list(self, **_: Any) -> list[dict[str, Any]]:
        return [view for view, _ in self.rows.values()]


class FakeFeed:
    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    async def add(self, notifications: Sequence[Notification]) -> None:
        self.notifications += notifications

    async def for_recipient(self, recipient: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def for_rider(self, where: dict[str, float], after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def outbound_log(self, limit: int = 100) -> list[dict[str, Any]]:
        raise NotImplementedError


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def invoke(self, operation: str, data: dict[str, Any]) -> None:
        self.sent.append((operation, data))


class Interfering(MemoryStateStore):
    """An in-memory store that runs ``compete`` once, right after the next read of ``key`` and
    before the reader goes on: a competing write between a step's read and its commit."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}
        self.commits: list[Sequence[Write]] = []
        self._interference: tuple[str, Callable[[], Awaitable[object]]] | None = None

    def interfere(self, key: str, compete: Callable[[], Awaitable[object]]) -> None:
        self._interference = (key, compete)

    async def get(self, key: str) -> Record | None:
        record = await super().get(key)
        self.reads[key] = self.reads.get(key, 0) + 1
        if self._interference is not None and self._interference[0] == key:
            compete = self._interference[1]
            self._interference = None
            await compete()
        return record

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        await super().commit(writes, events)
        self.commits.append(writes)
