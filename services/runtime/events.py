"""Events and their CloudEvents 1.0 envelopes."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.runtime.clock import iso_at, now_iso, parse_iso

SPEC_VERSION = "1.0"
DELIVER_AT = "deliverat"
TYPE_PREFIX = "io.baedal."


# Ids: 128 random bits like a uuid4, from a generator seeded once per process from the OS, so
# there is no getrandom() system call per order and event. Not sequential: an id says nothing
# about how many orders came before it. (Access control, not unguessability, protects orders.)
_ids = random.Random(os.urandom(32))


def new_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


@dataclass(frozen=True)
class OutboundEvent:
    """An event a handler wants published once its state change commits.

    ``topic`` names the event kind (``order.placed``); ``deliver_at`` (epoch seconds) turns it into
    a durable timer: subscribers see it no earlier than that.
    """

    topic: str
    data: dict[str, Any]
    source: str
    subject: str | None = None
    id: str = field(default_factory=new_id)
    deliver_at: float | None = None

    def envelope(self) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": f"/baedal/{self.source}",
            "type": f"{TYPE_PREFIX}{self.topic}.v1",
            "time": now_iso(),
            "datacontenttype": "application/json",
            "topic": self.topic,
            "data": self.data,
        }
        if self.subject is not None:
            envelope["subject"] = self.subject
        if self.deliver_at is not None:  # a CloudEvents extension: runtimes without timers honour it
            envelope[DELIVER_AT] = iso_at(self.deliver_at)
        return envelope


@dataclass(frozen=True)
class Event:
    """An event as a subscriber receives it (a parsed CloudEvents envelope)."""

    id: str
    topic: str
    type: str
    source: str
    time: str
    data: dict[str, Any]
    subject: str | None = None
    deliver_at: float | None = None

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> Event:
        missing = [k for k in ("specversion", "id", "source", "type", "data") if k not in envelope]
        if missing:
            raise ValueError(f"not a CloudEvents 1.0 envelope, missing {missing}")
        if envelope["specversion"] != SPEC_VERSION:
            raise ValueError(f"unsupported specversion {envelope['specversion']!r}")
        data = envelope["data"]
        if not isinstance(data, dict):
            raise ValueError("event data must be a JSON object")
        # The type names the topic; Dapr overwrites a CloudEvent's `topic` with its pub/sub topic.
        event_type = str(envelope["type"])
        topic = _topic_of(event_type) if event_type.startswith(TYPE_PREFIX) else envelope.get("topic")
        return cls(
            id=str(envelope["id"]),
            topic=str(topic),
            type=str(envelope["type"]),
            source=str(envelope["source"]),
            time=str(envelope.get("time", "")),
            data=data,
            subject=envelope.get("subject"),
            deliver_at=parse_iso(envelope[DELIVER_AT]).timestamp() if envelope.get(DELIVER_AT) else None,
        )


def _topic_of(event_type: str) -> str:
    name = event_type.removeprefix(TYPE_PREFIX)
    return name.rsplit(".v", 1)[0]


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(raw: str | bytes) -> Any:
    return orjson.loads(raw)
