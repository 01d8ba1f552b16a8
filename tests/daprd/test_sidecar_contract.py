"""What daprd does with our messages, checked where the fake sidecar was only our reading of the
docs (docs/dapr.md, "daprd against the fake"): the envelope as it reaches Redis, a message that
is not ours dropped into every subscriber's dead-letter topic, and a handler that keeps failing
retried a bounded number of times, one copy at a time, then dead-lettered."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from services.runtime.events import OutboundEvent
from tests.daprd.conftest import DaprdApi
from tests.support.daprd import DaprdCluster
from tests.support.platform import eventually

CATALOG_READERS = ("order", "restaurant", "delivery", "notification")  # restaurant-events subscribers


def publish_as_operator(cluster: DaprdCluster, topic: str, body: bytes, content_type: str) -> None:
    """Through the operator's sidecar, which may publish on restaurant-events (publishingScopes)."""
    response = httpx.post(
        f"{cluster.sidecar_url('operator')}/v1.0/publish/pubsub/{topic}",
        content=body,
        headers={"Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 204, response.text


def stream_entries(cluster: DaprdCluster, stream: str) -> list[dict[str, Any]]:
    """The messages of a Redis stream as daprd wrote them (the CloudEvent in the ``data`` field)."""
    entries = cluster.redis("XRANGE", stream, "-", "+")
    found = []
    for _, fields in entries:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        found.append(json.loads(values["data"]))
    return found


async def test_our_envelope_reaches_the_stream_with_only_daprds_own_fields_added(api: DaprdApi) -> None:
    """daprd keeps our CloudEvent (id, type, source, subject, time, data) and adds topic,
    pubsubname and, as the envelope has no ``traceid``, its own traceparent/traceid/tracestate."""
    await api.top_up("envelope-1", 100_000)
    order_id = await api.place_ok("envelope-1")
    await api.wait_status(order_id, "ACCEPTED", timeout=30)
    placed = [e for e in stream_entries(api.cluster, "order-events") if e.get("subject") == order_id]
    placed = [e for e in placed if e["type"] == "io.baedal.order.placed.v1"]
    assert len(placed) == 1, placed
    event = placed[0]
    ours = {"specversion", "id", "type", "source", "subject", "time", "datacontenttype", "data"}
    assert ours <= event.keys()
    assert (event["source"], event["data"]["order_id"]) == ("/baedal/order", order_id)
    assert (event["topic"], event["pubsubname"]) == ("order-events", "pubsub")
    assert {"traceid", "traceparent", "tracestate"} <= event.keys()
    assert event.keys() - ours - {"topic", "pubsubname", "traceid", "traceparent", "tracestate"} == set()


async def test_a_message_not_of_ours_goes_to_each_subscribers_dead_letter_topic(api: DaprdApi) -> None:
    """Answered DROP by every reader of the stream: daprd puts it on each one's dead-letter topic
    at once (not retried, whatever the retry policy)."""
    before = api.dead_letters()
    publish_as_operator(api.cluster, "restaurant-events", b'{"hello": "not a Baedal event"}', "application/json")
    expected = {f"{s}-dead-letters": before.get(f"{s}-dead-letters", 0) + 1 for s in CATALOG_READERS}

    async def dead_lettered() -> bool:
        return api.dead_letters() == expected

    await eventually(dead_lettered, timeout=15, what="the message on every reader's dead-letter topic")
    api.cluster.expected_dead_letters = expected


async def test_a_handler_that_keeps_failing_is_retried_one_copy_at_a_time_then_dead_lettered(
    api: DaprdApi,
) -> None:
    """A catalog event every reader's handler fails on (it lacks the snapshot): each answers
    RETRY; daprd retries within the bounded budget, the broker never hands out a second copy
    meanwhile (delivered once), and the message ends on each reader's dead-letter topic, once."""
    before = api.dead_letters()
    event = OutboundEvent(topic="catalog.restaurant-upserted", data={"restaurant_id": "poison"}, source="test")
    publish_as_operator(
        api.cluster, "restaurant-events", json.dumps(event.envelope()).encode(), "application/cloudevents+json"
    )
    expected = {f"{s}-dead-letters": before.get(f"{s}-dead-letters", 0) + 1 for s in CATALOG_READERS}
    copies: dict[str, int] = {}
    started = time.monotonic()

    async def dead_lettered() -> bool:
        for reader in CATALOG_READERS:
            for line in api.cluster.pending("restaurant-events", reader):
                copies[reader] = max(copies.get(reader, 0), int(line.split("delivered ")[1].split("x")[0]))
        return api.dead_letters() == expected

    await eventually(dead_lettered, timeout=40, what="the failing event on every reader's dead-letter topic")
    assert all(n <= 1 for n in copies.values()), f"handed out again while still being retried: {copies}"
    print(f"dead-lettered after {time.monotonic() - started:.1f} s")
    api.cluster.expected_dead_letters = expected
