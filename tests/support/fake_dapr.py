"""A faithful stand-in for daprd, for tests on a machine with no daprd: one "cluster" of sidecars.

Each app gets its own sidecar: the real gRPC API (the servicer in the ``dapr`` wheel) on one port
and the HTTP endpoints the SDK and the gateway use (``/v1.0/healthz/outbound``, service
invocation) on another. Sidecars share the brokers and the state stores, like daprd processes
sharing Redis and PostgreSQL. It reads ``components/`` like daprd: a component is usable only by the
apps in its ``scopes``, and pub/sub ``publishingScopes``/``subscriptionScopes`` are enforced.

Faithful on what Baedal relies on, as daprd 1.18.2 with PostgreSQL v2 and Redis Streams behaves
(tests/daprd checks the real one; docs/dapr.md lists where the two differed):
- state: ETags are random UUIDs and change on every write; a stale one is ``ABORTED`` on
  SaveState/DeleteState and ``INTERNAL`` "possible etag mismatch" on ExecuteStateTransaction; a
  first write on an existing key is ``INTERNAL`` "no item was updated" (not an ETag error);
  transactions are atomic; ``ttlInSeconds`` expires keys; a key containing ``||`` is refused;
- daprd's own outbox (``outboxPublishTopic``; Baedal no longer uses it): every upsert of a committed
  transaction is published (its ``outbox.projection`` instead), after the commit, late, unordered;
  projections are removed from the operations the way daprd does (skipping one after another and
  panicking at the end: ``remove_projections``), and a failed transaction on such a store is a
  warning (daprd would poll for its marker forever);
- pub/sub: reads each app's ``GET /dapr/subscribe`` and POSTs ``application/cloudevents+json``,
  our CloudEvents with daprd's fields added (``cloudevent``); 2xx without a status is SUCCESS,
  RETRY or another non-2xx is retried with backoff as many times as resiliency.yaml's inbound
  policy says, then dead-lettered; DROP or a 404 goes to the dead-letter topic at once; messages
  published before a subscription exists wait for it (Redis Streams consumer groups);
  ``duplicate_rate`` redelivers successes too;
- output bindings of type ``bindings.http``: a real HTTP call to the component's URL.
Not modelled: resiliency's timeouts and breakers, app health checks, Redis' processingTimeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import yaml
from aiohttp import web
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import binding_pb2 as binding_v1
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from dapr.proto.runtime.v1 import pubsub_pb2 as pubsub_v1
from dapr.proto.runtime.v1 import state_pb2 as state_v1
from google.protobuf import empty_pb2

from tests.support import ROOT
from tests.support.server import free_port

log = logging.getLogger("fake-dapr")
COMPONENTS = ROOT / "components"
FIRST_WRITE = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Component:
    name: str
    type: str
    metadata: dict[str, str]
    scopes: list[str]

    def visible_to(self, app_id: str) -> bool:
        return not self.scopes or app_id in self.scopes

    def topic_scopes(self, key: str) -> dict[str, set[str]] | None:
        """``publishingScopes``/``subscriptionScopes``: app id → allowed topics (None: no rule)."""
        raw = self.metadata.get(key)
        if raw is None:
            return None
        scopes: dict[str, set[str]] = {}
        for part in raw.split(";"):
            app, _, topics = part.partition("=")
            scopes[app.strip()] = {t.strip() for t in topics.split(",") if t.strip()}
        return scopes


def load_components(path: Path = COMPONENTS) -> dict[str, Component]:
    components: dict[str, Component] = {}
    for file in sorted(path.glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if doc and doc.get("kind") == "Component":
                meta = {m["name"]: str(m.get("value", "")) for m in doc["spec"].get("metadata", [])}
                components[doc["metadata"]["name"]] = Component(
                    doc["metadata"]["name"], doc["spec"]["type"], meta, list(doc.get("scopes", []))
                )
    return components


def inbound_retries(path: Path, component: str) -> int:
    """``maxRetries`` of the retry policy resiliency.yaml applies to deliveries from ``component``
    (-1, without end, becomes a large number)."""
    for file in sorted(path.glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if doc and doc.get("kind") == "Resiliency":
                policy = doc["spec"]["targets"]["components"].get(component, {}).get("inbound", {}).get("retry")
                if policy:
                    retries = int(doc["spec"]["policies"]["retries"][policy].get("maxRetries", -1))
                    return 1_000_000 if retries < 0 else retries
    return 0


@dataclass
class Item:
    value: bytes
    etag: str
    expires_at: float | None = None


@dataclass
class Subscriber:
    app_id: str
    app_port: int
    route: str
    dead_letter_topic: str | None


@dataclass
class Sidecar:
    app_id: str
    app_port: int
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    def env(self) -> dict[str, str]:
        """What the app process needs to find its sidecar (as daprd's injector sets it)."""
        return {
            "DAPR_GRPC_PORT": str(self.grpc_port),
            "DAPR_HTTP_PORT": str(self.http_port),
            "APP_ID": self.app_id,
            "DAPR_HEALTH_TIMEOUT": "30",
        }


@dataclass
class DeadLetter:
    app_id: str
    topic: str
    dead_letter_topic: str | None
    reason: str
    message: dict[str, Any]


class FakeDapr:
    """Sidecars for several apps, sharing stores and brokers, served from a background thread."""

    def __init__(
        self,
        components: Path = COMPONENTS,
        binding_urls: dict[str, str] | None = None,
        outbox_delay_s: tuple[float, float] = (0.0, 0.05),
        retry_backoff_s: tuple[float, float] = (0.05, 1.0),
        max_attempts: int | None = None,
        duplicate_rate: float = 0.0,
    ) -> None:
        self.components = load_components(components)
        self.binding_urls = binding_urls or {}
        self.outbox_delay_s = outbox_delay_s
        self.retry_backoff_s = retry_backoff_s
        # daprd: one delivery, then resiliency's inbound retries of the pub/sub (components/).
        self.max_attempts = max_attempts or inbound_retries(components, "pubsub") + 1
        self.duplicate_rate = duplicate_rate
        self.sidecars: dict[str, Sidecar] = {}
        self.stores: dict[str, dict[str, Item]] = defaultdict(dict)
        self.published: list[tuple[str, str, dict[str, Any]]] = []  # (pubsub, topic, cloudevent)
        self.dead_letters: list[DeadLetter] = []
        self.warnings: list[str] = []
        self.binding_calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self._topic_log: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self._subscribers: dict[tuple[str, str], list[Subscriber]] = defaultdict(list)
        self._subscribed_apps: set[str] = set()
        self._etag = 0
        self._in_flight = 0  # outbox messages not yet published, deliveries not yet answered once
        self._random = random.Random(7)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-dapr", daemon=True)
        self._servers: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle (test thread)

    def add_app(self, app_id: str, app_port: int) -> Sidecar:
        sidecar = Sidecar(app_id, app_port)
        self.sidecars[app_id] = sidecar
        if self._thread.is_alive():
            self.call(self._serve(sidecar))
        return sidecar

    def start(self) -> FakeDapr:
        self._thread.start()
        self.call(self._open())
        for sidecar in self.sidecars.values():
            self.call(self._serve(sidecar))
        return self

    def stop(self) -> None:
        self.call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def call(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the fake's loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def subscribe_now(self, app_id: str) -> None:
        """Read the app's subscriptions now (daprd reads them once the app is up)."""
        self.call(self._read_subscriptions(self.sidecars[app_id]))

    def idle(self) -> bool:
        """Nothing published is still on its way to a first answer (retries may be pending)."""
        return self._in_flight == 0

    def publish(self, pubsub: str, topic: str, data: dict[str, Any], app_id: str = "test") -> None:
        self.call(self._publish_cloudevent(pubsub, topic, self._wrap(app_id, pubsub, topic, data)))

    # ------------------------------------------------------------------ serving (fake's loop)

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for stop in self._servers:
            await stop()
        if self._session is not None:
            await self._session.close()

    async def _serve(self, sidecar: Sidecar) -> None:
        server = grpc.aio.server()
        dapr_pb2_grpc.add_DaprServicer_to_server(Servicer(self, sidecar.app_id), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"127.0.0.1:{sidecar.grpc_port}")
        await server.start()
        http = web.Application()
        http.router.add_get("/v1.0/healthz/outbound", self._healthz)
        http.router.add_get("/v1.0/healthz", self._healthz)
        http.router.add_route("*", "/v1.0/invoke/{app_id}/method/{path:.*}", self._invoke)
        runner = web.AppRunner(http, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", sidecar.http_port).start()

        async def stop() -> None:
            await server.stop(grace=None)
            await runner.cleanup()

        self._servers.append(stop)
        self._spawn(self._await_app(sidecar))

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        """Service invocation over HTTP: forward to the target app, headers and body as they are."""
        target = self.sidecars.get(request.match_info["app_id"])
        if target is None:
            return web.json_response({"errorCode": "ERR_DIRECT_INVOKE", "message": "app not found"}, status=500)
        assert self._session is not None
        url = f"http://127.0.0.1:{target.app_port}/{request.match_info['path']}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(
            request.method, url, params=request.query, headers=headers, data=await request.read()
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                    response.headers[name] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _await_app(self, sidecar: Sidecar) -> None:
        """Like daprd: wait for the app's port, then read its subscriptions."""
        while sidecar.app_id not in self._subscribed_apps:
            try:
                await self._read_subscriptions(sidecar)
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.1)

    async def _read_subscriptions(self, sidecar: Sidecar) -> None:
        if sidecar.app_id in self._subscribed_apps:
            return
        assert self._session is not None
        async with self._session.get(f"http://127.0.0.1:{sidecar.app_port}/dapr/subscribe") as response:
            subscriptions = await response.json() if response.status == 200 else []
        self._subscribed_apps.add(sidecar.app_id)
        for sub in subscriptions:
            pubsub, topic = sub["pubsubname"], sub["topic"]
            problem = self._pubsub_problem(sidecar.app_id, pubsub, topic, "subscriptionScopes")
            if problem:
                self.warnings.append(problem)
                continue
            route = sub.get("route") or sub.get("routes", {}).get("default", f"/{topic}")
            subscriber = Subscriber(sidecar.app_id, sidecar.app_port, route, sub.get("deadLetterTopic"))
            self._subscribers[(pubsub, topic)].append(subscriber)
            for message in self._topic_log[(pubsub, topic)]:  # the consumer group starts at the beginning
                self._spawn(self._deliver(subscriber, pubsub, topic, message))

    def _pubsub_problem(self, app_id: str, pubsub: str, topic: str, scope_key: str) -> str | None:
        component = self.components.get(pubsub)
        if component is None or not component.type.startswith("pubsub.") or not component.visible_to(app_id):
            return f"{app_id}: pubsub {pubsub!r} is not found"
        scopes = component.topic_scopes(scope_key)
        if scopes is not None and app_id in scopes and topic not in scopes[app_id]:
            return f"{app_id}: topic {topic!r} is not allowed by {scope_key} of {pubsub!r}"
        return None

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ pub/sub

    def _wrap(
        self, app_id: str, pubsub: str, topic: str, data: Any, content_type: str = "application/json"
    ) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": app_id,
            "type": "com.dapr.event.sent",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "datacontenttype": content_type,
            "data": data,
            "topic": topic,
            "pubsubname": pubsub,
            "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        }

    def cloudevent(self, app_id: str, pubsub: str, topic: str, data: bytes, content_type: str) -> dict[str, Any]:
        if content_type.startswith("application/cloudevents+json"):
            # As daprd's FromCloudEvent: the event is kept, ``time`` and ``source`` filled in when
            # missing, the trace fields set unless it has a ``traceid`` (then traceparent too is
            # daprd's), ``topic`` and ``pubsubname`` always daprd's.
            event: dict[str, Any] = orjson.loads(data)
            event.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if "traceid" not in event:
                trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
                event |= {"traceid": trace, "traceparent": trace}
            event.setdefault("tracestate", "")
            event.setdefault("source", "Dapr")
            return event | {"topic": topic, "pubsubname": pubsub}
        if content_type.startswith("application/json") or not content_type:
            try:
                return self._wrap(app_id, pubsub, topic, orjson.loads(data))
            except orjson.JSONDecodeError:
                pass
        return self._wrap(app_id, pubsub, topic, data.decode(), content_type or "text/plain")

    async def _publish_cloudevent(self, pubsub: str, topic: str, event: dict[str, Any]) -> None:
        self.published.append((pubsub, topic, event))
        self._topic_log[(pubsub, topic)].append(event)
        for subscriber in self._subscribers[(pubsub, topic)]:
            self._spawn(self._deliver(subscriber, pubsub, topic, event))

    async def _deliver(self, subscriber: Subscriber, pubsub: str, topic: str, event: dict[str, Any]) -> None:
        url = f"http://127.0.0.1:{subscriber.app_port}/{subscriber.route.lstrip('/')}"
        headers = {"Content-Type": "application/cloudevents+json"}
        base, cap = self.retry_backoff_s
        assert self._session is not None
        self._in_flight += 1
        try:
            outcome = await self._post(url, headers, event)
        finally:
            self._in_flight -= 1
        for attempt in range(self.max_attempts):
            if attempt:
                outcome = await self._post(url, headers, event)
            if outcome == "SUCCESS":
                if self._random.random() < self.duplicate_rate:  # at least once: sometimes twice
                    await self._post(url, headers, event)
                return
            if outcome == "DROP":
                await self._dead_letter(subscriber, pubsub, topic, event, "dropped by the app")
                return
            await asyncio.sleep(min(cap, base * 2**attempt) * (0.5 + self._random.random()))
        await self._dead_letter(subscriber, pubsub, topic, event, f"still failing after {self.max_attempts} attempts")

    async def _post(self, url: str, headers: dict[str, str], event: dict[str, Any]) -> str:
        assert self._session is not None
        try:
            async with self._session.post(url, data=orjson.dumps(event), headers=headers) as response:
                if response.status == 404:
                    return "DROP"
                if not 200 <= response.status < 300:
                    return "RETRY"
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return "RETRY"
        try:
            status = orjson.loads(body).get("status") if body else None
        except (orjson.JSONDecodeError, AttributeError):
            status = None
        if status in (None, "", "SUCCESS"):
            return "SUCCESS"
        return "DROP" if status == "DROP" else "RETRY"

    async def _dead_letter(
        self, subscriber: Subscriber, pubsub: str, topic: str, event: dict[str, Any], reason: str
    ) -> None:
        self.dead_letters.append(DeadLetter(subscriber.app_id, topic, subscriber.dead_letter_topic, reason, event))
        if subscriber.dead_letter_topic:
            await self._publish_cloudevent(
                pubsub, subscriber.dead_letter_topic, {**event, "topic": subscriber.dead_letter_topic}
            )

    # ------------------------------------------------------------------ state

    def store(self, app_id: str, name: str) -> tuple[Component, dict[str, Item]]:
        component = self.components.get(name)
        if component is None or not component.type.startswith("state.") or not component.visible_to(app_id):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"state store {name} is not found")
        items = self.stores[name]
        now = time.time()
        for key in [k for k, item in items.items() if item.expires_at is not None and item.expires_at <= now]:
            del items[key]
        return component, items

    def next_etag(self) -> str:
        """PostgreSQL v2 ETags are random UUIDs."""
        self._etag += 1
        return str(uuid.UUID(int=self._random.getrandbits(128)))


def _etag_of(item: common_pb2.StateItem | state_v1.DeleteStateRequest) -> str | None:
    return item.etag.value if item.HasField("etag") and item.etag.value else None


def check_guard(items: dict[str, Item], key: str, etag: str | None, first_write: bool) -> tuple[bool, str] | None:
    """Why this write's guard fails, as PostgreSQL v2 says it, or None: (is an ETag error, text).
    A stale ETag is an ETag error ("possible etag mismatch"); a first write on a key that exists is
    not: the store's upsert changes no row and it answers a plain "no item was updated"."""
    current = items.get(key)
    if etag is not None:
        if current is None or current.etag != etag:
            return True, "possible etag mismatch. error from state store: <nil>"
    elif first_write and current is not None:
        return False, "no item was updated"
    return None


def check_key(key: str) -> None:
    """daprd stores ``<app id>||<key>`` and refuses keys containing its separator."""
    if "||" in key:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"input key/keyPrefix '{key}' can't contain '||'")


def remove_projections(
    ops: list[state_v1.TransactionalStateOperation],
) -> tuple[list[state_v1.TransactionalStateOperation], dict[str, bytes]]:
    """The outbox projections taken out of a transaction's operations, as daprd 1.18 does it
    (``PublishInternal`` in ``pkg/runtime/pubsub/outbox.go``): it deletes each projection from the
    slice it is ranging over (dapr#8659). The element after a removed one is skipped, so a
    projection right after another stays in the operations (and is stored over its record, and
    published as an event of its own); when the range reaches past the shrunken slice, daprd panics
    (IndexError here, with Go's message) and the sidecar exits."""
    array, length, projections = list(ops), len(ops), {}
    for i in range(len(array)):
        op = array[i]
        if op.operationType == "upsert" and op.request.metadata.get("outbox.projection") == "true":
            projections[op.request.key] = op.request.value
            if i + 1 > length:
                raise IndexError(f"runtime error: slice bounds out of range [{i + 1}:{length}]")
            array[i : length - 1] = array[i + 1 : length]
            length -= 1
    return array[:length], projections


class Servicer(dapr_pb2_grpc.DaprServicer):
    """The sidecar's gRPC API for one app."""

    def __init__(self, fake: FakeDapr, app_id: str) -> None:
        self.fake = fake
        self.app_id = app_id

    async def _guarded(self, context: grpc.aio.ServicerContext[Any, Any], action: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await action()
        except Abort as exc:
            await context.abort(exc.code, exc.message)

    async def GetState(self, request: state_v1.GetStateRequest, context: Any) -> state_v1.GetStateResponse:
        async def get() -> state_v1.GetStateResponse:
            _, items = self.fake.store(self.app_id, request.store_name)
            check_key(request.key)
            item = items.get(request.key)
            if item is None:
                return state_v1.GetStateResponse()
            return state_v1.GetStateResponse(data=item.value, etag=item.etag)

        return await self._guarded(context, get)  # type: ignore[no-any-return]

    async def GetBulkState(self, request: state_v1.GetBulkStateRequest, context: Any) -> state_v1.GetBulkStateResponse:
        async def get() -> state_v1.GetBulkStateResponse:
            _, items = self.fake.store(self.app_id, request.store_name)
            for key in request.keys:
                check_key(key)
            found = [(key, items.get(key)) for key in request.keys]
            return state_v1.GetBulkStateResponse(
                items=[
                    state_v1.BulkStateItem(key=key, data=item.value, etag=item.etag)
                    if item
                    else state_v1.BulkStateItem(key=key)
                    for key, item in found
                ]
            )

        return await self._guarded(context, get)  # type: ignore[no-any-return]

    async def SaveState(self, request: state_v1.SaveStateRequest, context: Any) -> empty_pb2.Empty:
        async def save() -> empty_pb2.Empty:
            async with self.fake.lock:
                _, items = self.fake.store(self.app_id, request.store_name)
                for state in request.states:  # one by one, like daprd's bulk save: not atomic
                    check_key(state.key)
                    first_write = state.HasField("options") and state.options.concurrency == FIRST_WRITE
                    problem = check_guard(items, state.key, _etag_of(state), first_write)
                    if problem:  # daprd: ABORTED for an ETag error, INTERNAL for any other
                        code = grpc.StatusCode.ABORTED if problem[0] else grpc.StatusCode.INTERNAL
                        raise Abort(code, f"failed saving state in state store {request.store_name}: {problem[1]}")
                    items[state.key] = Item(state.value, self.fake.next_etag(), _expiry(state.metadata))
            return empty_pb2.Empty()

        return await self._guarded(context, save)  # type: ignore[no-any-return]

    async def DeleteState(self, request: state_v1.DeleteStateRequest, context: Any) -> empty_pb2.Empty:
        async def delete() -> empty_pb2.Empty:
            async with self.fake.lock:
                _, items = self.fake.store(self.app_id, request.store_name)
                check_key(request.key)
                problem = check_guard(items, request.key, _etag_of(request), False)
                if problem:
                    raise Abort(grpc.StatusCode.ABORTED, f"failed deleting state with key {request.key}: {problem[1]}")
                items.pop(request.key, None)
            return empty_pb2.Empty()

        return await self._guarded(context, delete)  # type: ignore[no-any-return]

    async def ExecuteStateTransaction(
        self, request: state_v1.ExecuteStateTransactionRequest, context: Any
    ) -> empty_pb2.Empty:
        async def execute() -> empty_pb2.Empty:
            async with self.fake.lock:
                component, items = self.fake.store(self.app_id, request.storeName)
                for op in request.operations:
                    check_key(op.request.key)
                try:
                    messages = self._commit(component, items, list(request.operations))
                except Abort as exc:
                    if "outboxPublishTopic" in component.metadata and exc.code == grpc.StatusCode.INTERNAL:
                        self.fake.warnings.append(
                            f"{self.app_id}: a transaction on {component.name}, a store with daprd's outbox, failed"
                            f" ({exc.message}): daprd 1.18 had already published its messages internally and"
                            " would poll for the missing marker without end, a worker and a CPU core gone"
                        )
                    raise
            pubsub, topic = component.metadata.get("outboxPublishPubsub"), component.metadata.get("outboxPublishTopic")
            for value in messages:  # after the commit; each late by its own random delay: unordered
                assert pubsub and topic
                self.fake._spawn(self._publish_later(pubsub, topic, value))
            return empty_pb2.Empty()

        return await self._guarded(context, execute)  # type: ignore[no-any-return]

    def _commit(
        self, component: Component, items: dict[str, Item], ops: list[state_v1.TransactionalStateOperation]
    ) -> list[bytes]:
        outbox = "outboxPublishTopic" in component.metadata
        projections: dict[str, bytes] = {}
        if outbox:
            try:
                ops, projections = remove_projections(ops)
            except IndexError as exc:
                self.fake.warnings.append(f"{self.app_id}: daprd would have crashed: {exc}")
                raise Abort(grpc.StatusCode.UNAVAILABLE, f"daprd panicked and exited: {exc}") from exc
        staged = dict(items)
        for op in ops:
            first_write = op.request.HasField("options") and op.request.options.concurrency == FIRST_WRITE
            problem = check_guard(staged, op.request.key, _etag_of(op.request), first_write)
            if problem:
                raise Abort(grpc.StatusCode.INTERNAL, f"error while executing state transaction: {problem[1]}")
            if op.operationType == "delete":
                staged.pop(op.request.key, None)
            elif op.operationType == "upsert":
                staged[op.request.key] = Item(op.request.value, self.fake.next_etag(), _expiry(op.request.metadata))
            else:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported operation {op.operationType}")
        items.clear()
        items.update(staged)
        if not outbox:
            return []
        return [projections.get(op.request.key, op.request.value) for op in ops if op.operationType == "upsert"]

    async def _publish_later(self, pubsub: str, topic: str, value: bytes) -> None:
        low, high = self.fake.outbox_delay_s
        self.fake._in_flight += 1
        try:
            await asyncio.sleep(low + (high - low) * self.fake._random.random())
            event = self.fake.cloudevent(self.app_id, pubsub, topic, value, "")
            await self.fake._publish_cloudevent(pubsub, topic, event)
        finally:
            self.fake._in_flight -= 1

    async def PublishEvent(self, request: pubsub_v1.PublishEventRequest, context: Any) -> empty_pb2.Empty:
        async def publish() -> empty_pb2.Empty:
            self._check_publish(request.pubsub_name, request.topic)
            event = self.fake.cloudevent(
                self.app_id, request.pubsub_name, request.topic, request.data, request.data_content_type
            )
            await self.fake._publish_cloudevent(request.pubsub_name, request.topic, event)
            return empty_pb2.Empty()

        return await self._guarded(context, publish)  # type: ignore[no-any-return]

    async def BulkPublishEvent(
        self, request: pubsub_v1.BulkPublishRequest, context: Any
    ) -> pubsub_v1.BulkPublishResponse:
        async def publish() -> pubsub_v1.BulkPublishResponse:
            self._check_publish(request.pubsub_name, request.topic)
            for entry in request.entries:
                event = self.fake.cloudevent(
                    self.app_id, request.pubsub_name, request.topic, entry.event, entry.content_type
                )
                await self.fake._publish_cloudevent(request.pubsub_name, request.topic, event)
            return pubsub_v1.BulkPublishResponse()

        return await self._guarded(context, publish)  # type: ignore[no-any-return]

    BulkPublishEventAlpha1 = BulkPublishEvent

    def _check_publish(self, pubsub: str, topic: str) -> None:
        problem = self.fake._pubsub_problem(self.app_id, pubsub, topic, "publishingScopes")
        if problem and "not allowed" in problem:
            raise Abort(grpc.StatusCode.PERMISSION_DENIED, problem)
        if problem:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    async def InvokeBinding(
        self, request: binding_v1.InvokeBindingRequest, context: Any
    ) -> binding_v1.InvokeBindingResponse:
        async def invoke() -> binding_v1.InvokeBindingResponse:
            component = self.fake.components.get(request.name)
            if component is None or not component.type.startswith("bindings.") or not component.visible_to(self.app_id):
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"output binding {request.name} is not found")
            if component.type != "bindings.http":
                raise Abort(grpc.StatusCode.UNIMPLEMENTED, f"the fake has no {component.type} binding")
            metadata = dict(request.metadata)
            self.fake.binding_calls.append((request.name, request.operation, metadata, request.data))
            return await self._http_binding(component, request.operation, dict(metadata), request.data)

        return await self._guarded(context, invoke)  # type: ignore[no-any-return]

    async def _http_binding(
        self, component: Component, operation: str, metadata: dict[str, str], data: bytes
    ) -> binding_v1.InvokeBindingResponse:
        method = {"create": "POST"}.get(operation, operation.upper())
        if method not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported operation {operation}")
        base = self.fake.binding_urls.get(component.name, component.metadata["url"])
        url = base.rstrip("/") + metadata.pop("path", "")
        assert self.fake._session is not None
        try:
            async with self.fake._session.request(method, url, data=data, headers=metadata) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError) as exc:
            raise Abort(grpc.StatusCode.INTERNAL, f"error invoking output binding {component.name}: {exc}") from exc
        if status >= 400 and component.metadata.get("errorIfNot2XX", "true") == "true":
            raise Abort(
                grpc.StatusCode.INTERNAL,
                f"error invoking output binding {component.name}: received status code {status}",
            )
        return binding_v1.InvokeBindingResponse(data=body, metadata={"statusCode": str(status)})


def _expiry(metadata: Any) -> float | None:
    ttl = dict(metadata).get("ttlInSeconds")
    return time.time() + int(ttl) if ttl else None
