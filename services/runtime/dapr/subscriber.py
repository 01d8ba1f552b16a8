"""Pub/sub on Dapr: the service's subscriptions as Dapr subscriptions, handler outcomes as Dapr's.

Every service publishes all its events on one topic (its stream, see
:func:`services.topics.stream_of`), so the service subscribes once per publishing service
(``DaprApp``, each with the service's dead-letter topic) and routes each event here, by its type,
to every consumer of that kind (the routing rules of :class:`~services.runtime.ports.Subscription`).

Outcomes follow Dapr's contract: ``SUCCESS`` when every consumer is done (or the message is not for
this service), ``{"status": "RETRY"}`` when a consumer failed, and ``{"status": "DROP"}`` for a
poison message: daprd moves it to the dead-letter topic. A timer event that arrives before its
``deliverat`` (pub/sub cannot delay a message) is kept in the service's own database and
answered SUCCESS; :mod:`services.runtime.dapr.timers` runs it when it is due.

Deduplication is on the business event id inside the envelope (in the older form, the envelope as
the ``data`` of daprd's outbox message, Dapr's CloudEvent ``id`` was its marker): single-event
consumers keep an inbox entry in the same transaction as their state change; batch consumers
(projections) are idempotent on their own.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from enum import StrEnum
from typing import Any

import orjson
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI, Request, Response

from services.runtime.clock import epoch
from services.runtime.dapr.sidecar import CLOUDEVENTS_JSON, Sidecar
from services.runtime.dapr.state import CURRENT_DELIVERY, NO_EVENT, AlreadyHandled, DaprStateStore, Delivery
from services.runtime.dapr.timers import TimerLoop, TimerTable
from services.runtime.events import TYPE_PREFIX, Event, dumps, loads
from services.runtime.metrics import HANDLED
from services.runtime.ports import BatchHandler, Consumer, DropEvent, Handler, Subscription
from services.topics import dead_letters_of, publisher_of, stream_of

log = logging.getLogger("baedal.dapr")


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    DROP = "DROP"


def unwrap(message: Any) -> dict[str, Any] | None:
    """The Baedal envelope in a message from Dapr: the ``data`` of an outbox message, or the
    message itself when it was published as a CloudEvent of ours. None for the outbox's
    "no event" marker. ValueError for anything else."""
    if not isinstance(message, dict):
        raise ValueError("a pub/sub message must be a JSON object")
    data = message.get("data")
    if isinstance(data, str):
        try:
            data = loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError("the message data is not JSON") from exc
    if isinstance(data, dict) and str(data.get("type", "")).startswith(TYPE_PREFIX):
        return data
    if str(message.get("type", "")).startswith(TYPE_PREFIX):
        return message
    if data == NO_EVENT:
        return None
    raise ValueError(f"not a Baedal event: type {message.get('type')!r}")


class DaprSubscriber:
    def __init__(self, service: str, store: DaprStateStore, pubsub: str, sidecar: Sidecar, timers: TimerTable) -> None:
        self.service = service
        self.pubsub = pubsub
        self._store = store
        self._sidecar = sidecar
        self._by_topic: dict[str, list[Consumer]] = defaultdict(list)
        self.timers = TimerLoop(timers, self._fire, self._dead_letter, service)

    def subscribe(self, subscription: Subscription, handler: Handler) -> None:
        self._by_topic[subscription.topic].append(Consumer(self.service, subscription, handler=handler))

    def subscribe_batch(self, subscription: Subscription, handler: BatchHandler) -> None:
        self._by_topic[subscription.topic].append(Consumer(self.service, subscription, batch_handler=handler))

    def streams(self) -> list[str]:
        """The pub/sub topics this service reads."""
        return sorted({stream_of(publisher_of(topic)) for topic in self._by_topic})

    def install(self, app: FastAPI) -> None:
        """``GET /dapr/subscribe`` and one ``POST /events/<topic>`` route per topic."""
        dapr_app = DaprApp(app)
        for stream in self.streams():
            dapr_app.subscribe(
                pubsub=self.pubsub,
                topic=stream,
                route=f"/events/{stream}",
                dead_letter_topic=dead_letters_of(self.service),
            )(self.endpoint)

    async def endpoint(self, request: Request) -> Response:
        try:
            message = loads(await request.body())
        except orjson.JSONDecodeError:
            message = None
        outcome = await self.deliver(message)
        return Response(orjson.dumps({"status": outcome.value}), media_type="application/json")

    async def deliver(self, message: Any) -> Outcome:
        try:
            envelope = unwrap(message)
            if envelope is None:
                return Outcome.SUCCESS
            event = Event.from_envelope(envelope)
            consumers = self._consumers(event)
        except (ValueError, KeyError, TypeError) as exc:  # a routing rule cannot read the data either
            log.warning("%s: dropping a malformed message: %r", self.service, exc)
            HANDLED.labels(self.service, "-", "dead_letter").inc()
            return Outcome.DROP
        if not consumers:
            return Outcome.SUCCESS
        if event.deliver_at is not None and event.deliver_at > epoch():
            try:  # a timer not due yet: kept until then (not answered RETRY: see timers.py)
                await self.timers.table.schedule(event.id, event.deliver_at, envelope)
            except Exception as exc:
                log.warning("%s: could not keep timer %s (%s), retry: %r", self.service, event.id, event.topic, exc)
                return Outcome.RETRY
            self.timers.kick()
            return Outcome.SUCCESS
        return await self._dispatch(consumers, event)

    def _consumers(self, event: Event) -> list[Consumer]:
        return [c for c in self._by_topic.get(event.topic, ()) if _wants(c.subscription, event)]

    async def _dispatch(self, consumers: list[Consumer], event: Event) -> Outcome:
        outcomes = {await self._run(consumer, event) for consumer in consumers}
        for outcome in (Outcome.RETRY, Outcome.DROP):
            if outcome in outcomes:
                return outcome
        return Outcome.SUCCESS

    async def _fire(self, envelope: dict[str, Any]) -> str:
        """A kept timer, now due."""
        try:
            event = Event.from_envelope(envelope)
        except (ValueError, KeyError, TypeError):
            return Outcome.DROP.value
        return (await self._dispatch(self._consumers(event), event)).value

    async def _dead_letter(self, envelope: dict[str, Any], reason: str) -> None:
        """A timer given up on goes where daprd puts this service's dead letters."""
        log.error(
            "%s: timer %s (%s) to the dead-letter topic: %s",
            self.service,
            envelope.get("id"),
            envelope.get("type"),
            reason,
        )
        HANDLED.labels(self.service, "-", "dead_letter").inc()
        await self._sidecar.client.publish_event(
            self.pubsub, dead_letters_of(self.service), dumps(envelope), data_content_type=CLOUDEVENTS_JSON
        )

    async def _run(self, consumer: Consumer, event: Event) -> Outcome:
        name = consumer.subscription.consumer
        single = consumer.handler is not None
        if single and await self._store.handled(name, event.id):
            HANDLED.labels(self.service, name, "duplicate").inc()
            return Outcome.SUCCESS
        token = CURRENT_DELIVERY.set(Delivery(name, event.id) if single else None)
        try:
            await consumer.handle(event)
        except AlreadyHandled:
            HANDLED.labels(self.service, name, "duplicate").inc()
            return Outcome.SUCCESS
        except DropEvent as exc:
            log.error("%s/%s: dropping event %s (%s): %s", self.service, name, event.id, event.topic, exc)
            HANDLED.labels(self.service, name, "dead_letter").inc()
            return Outcome.DROP
        except Exception as exc:
            log.warning("%s/%s: event %s (%s) failed, retry: %r", self.service, name, event.id, event.topic, exc)
            HANDLED.labels(self.service, name, "retry").inc()
            return Outcome.RETRY
        finally:
            CURRENT_DELIVERY.reset(token)
        HANDLED.labels(self.service, name, "success").inc()
        return Outcome.SUCCESS


def _wants(subscription: Subscription, event: Event) -> bool:
    return subscription.match is None or subscription.match(event.data)
