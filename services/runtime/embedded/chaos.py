"""Fault injection for the embedded bus (drills and tests only): duplicated, delayed and reordered
deliveries, and handlers that fail now and then.

It is an adapter around the dispatcher's :class:`Delivery` policy and its consumers, installed by
the wiring when ``BAEDAL_CHAOS_*`` asks for it; the dispatcher itself has no fault of its own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from services.runtime.embedded.dispatcher import Delivery
from services.runtime.events import Event
from services.runtime.ports import Consumer, RetryLater
from services.runtime.settings import ChaosSettings

T = TypeVar("T")


class ChaosFailure(RetryLater):
    """A transient handler failure injected by the chaos settings."""


class ChaosDelivery(Delivery):
    def __init__(self, settings: ChaosSettings, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._random = rng or random.Random()

    def copies(self) -> int:
        rate = self._settings.duplicate_rate
        return 2 if rate and self._random.random() < rate else 1

    def delay(self) -> float:
        return self._random.uniform(0, self._settings.max_delay_s) if self._settings.max_delay_s else 0.0

    def order(self, rows: list[T]) -> list[T]:
        if self._settings.shuffle:
            self._random.shuffle(rows)
        return rows

    def in_flight_s(self) -> float:
        return self._settings.max_delay_s

    def consumer(self, consumer: Consumer) -> Consumer:
        """The consumer, failing now and then before its handler runs (then it is retried)."""
        if not self._settings.failure_rate:
            return consumer
        handler, batch_handler = consumer.handler, consumer.batch_handler

        def fail_sometimes() -> None:
            if self._random.random() < self._settings.failure_rate:
                raise ChaosFailure("injected transient failure")

        async def single(event: Event) -> None:
            fail_sometimes()
            assert handler is not None
            await handler(event)

        async def batch(events: Sequence[Event]) -> None:
            fail_sometimes()
            assert batch_handler is not None
            await batch_handler(events)

        if handler is not None:
            return replace(consumer, handler=single)
        return replace(consumer, batch_handler=batch)
