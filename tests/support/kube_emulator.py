"""A Kubernetes API for the operator tests: kmock's emulator plus what kopf relies on, and the real
kopf operator running against it in its own thread and event loop.

kmock 0.8 stores, patches, lists and watches objects; this subclass adds what a real API server
does and kopf needs: ``resourceVersion`` on every change and on
lists, ``uid``/``generation``/``creationTimestamp`` on create, ``generation`` bumped when ``spec``
changes, the namespace from the URL, ``generateName``, a ``status`` subresource kept apart from the
main resource, finalizer-aware deletion, a watch that starts at the ``resourceVersion`` it is given,
and 422 when a JSON-patch ``test`` fails (kopf's optimistic concurrency on finalizers).
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import kopf

from services.restaurant_operator import crd
from services.restaurant_operator.handlers import OperatorContext  # also registers the handlers with kopf
from tests.support.platform import eventually

Event = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
# Set by the API server, never by a client's patch.
SERVER_FIELDS = ("name", "namespace", "uid", "generation", "creationTimestamp", "deletionTimestamp")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(request: kmock.Request, namespace: str | None, name: str | None) -> Key:
    assert request.resource is not None and name is not None
    return request.resource, namespace, name


def _invalid(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=422, reason="Invalid", message=message)


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    revision: int = attrs.field(default=0, init=False)
    watches_opened: Counter[str] = attrs.field(factory=Counter, init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and (request.name or request.action == kmock.action.CREATE):
            async with self._lock:
                event = self._change(request)
                if event is not None:
                    await self._buses[request.resource].put(event)
        # The responses (kmock's fallbacks) read the state changed above; skip kmock's own changes.
        return await kmock.RawHandler._handle(self, request)

    def _bump(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _change(self, request: kmock.Request) -> Event | None:
        if request.action == kmock.action.CREATE:
            return self._create(request)
        if request.action not in (kmock.action.UPDATE, kmock.action.DELETE):
            return None
        key = _key(request, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        if request.action == kmock.action.UPDATE:
            return self._patch(request, self.objects[key])
        return self._delete(self.objects[key])

    def _create(self, request: kmock.Request) -> Event:
        body = request.data  # changed in place: kmock's create response reads it back
        if not isinstance(body, dict):
            raise _invalid("a JSON object is expected")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)}"
        if not meta.get("name"):
            raise _invalid("metadata.name or metadata.generateName is required")
        namespace = request.namespace or meta.get("namespace")
        if namespace:
            meta["namespace"] = namespace
        key = _key(request, namespace, meta["name"])
        if key in self.objects and not self.objects[key].deleted:
            raise kmock.KubernetesError(status=409, reason="AlreadyExists", message=f"{meta['name']} already exists")
        meta.pop("deletionTimestamp", None)
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now(), resourceVersion=self._bump())
        if key in self.objects:
            self.objects[key].create(body)
        else:
            self.objects[key] = body
        return {"type": "ADDED", "object": copy.deepcopy(body)}

    def _patch(self, request: kmock.Request, obj: kmock.Object) -> Event | None:
        old = copy.deepcopy(obj.raw)
        scratch = kmock.Object(copy.deepcopy(old))
        try:
            scratch.patch(request.data)  # a merge patch (dict) or a JSON patch (list)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, ValueError, TypeError) as exc:
            raise _invalid(f"the patch cannot be applied: {exc}") from exc
        new = self._subresource_view(request, old, scratch.raw)
        meta = new.setdefault("metadata", {})
        for field in SERVER_FIELDS:
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return None  # a no-op: no new version, no event
        if new.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"]["generation"] + 1
        meta["resourceVersion"] = self._bump()
        obj.history.append(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            obj.delete()
            return {"type": "DELETED", "object": copy.deepcopy(new)}
        return {"type": "MODIFIED", "object": copy.deepcopy(new)}

    def _subresource_view(self, request: kmock.Request, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """With a status subresource, ``/status`` changes only the status and the main resource
        everything but the status."""
        if request.resource is None or "status" not in self.resources[request.resource].subresources:
            return new
        main, status = (old, new) if request.subresource == "status" else (new, old)
        merged = {key: value for key, value in main.items() if key != "status"}
        if "status" in status:
            merged["status"] = status["status"]
        return merged

    def _delete(self, obj: kmock.Object) -> Event | None:
        if obj.raw["metadata"].get("deletionTimestamp"):
            return None  # already being deleted
        new = copy.deepcopy(obj.raw)
        meta = new["metadata"]
        meta["resourceVersion"] = self._bump()
        if meta.get("finalizers"):  # the finalizers' owners get their say first
            meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
            obj.history.append(new)
            return {"type": "MODIFIED", "object": copy.deepcopy(new)}
        obj.history.append(new)
        obj.delete()
        return {"type": "DELETED", "object": copy.deepcopy(new)}

    def _selected(self, request: kmock.Request, raw: dict[str, Any]) -> bool:
        meta = raw.get("metadata", {})
        return (request.namespace is None or meta.get("namespace") == request.namespace) and (
            request.name is None or meta.get("name") == request.name
        )

    def _current(self, request: kmock.Request) -> Iterator[dict[str, Any]]:
        for (resource, _, _), obj in self.objects.items():
            if resource == request.resource and not obj.deleted and self._selected(request, obj.raw):
                yield copy.deepcopy(obj.raw)

    async def _serve_list(self, request: kmock.Request) -> Any:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = list(self._current(request))
            listed = {"resourceVersion": str(self.revision)}
        return {"apiVersion": "v1", "kind": "List", "metadata": listed, "items": items}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # the headers go out now, even if nothing happens for a while
        assert request.resource is not None
        since = int(request.params.get("resourceVersion") or 0)
        bus = self._buses[request.resource]
        async with self._lock:  # the replay and the live stream meet exactly: no gap, no repeat
            mark = await bus.mark()
            replay = [raw for raw in self._current(request) if int(raw["metadata"]["resourceVersion"]) > since]
        self.watches_opened[request.resource.plural or ""] += 1
        try:
            for raw in replay:
                yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=mark):
                if self._selected(request, event["object"]):
                    yield event
        finally:
            await bus.unmark(mark)

    def events_for(self, name: str) -> list[dict[str, Any]]:
        """The Kubernetes events posted about an object (``kubectl describe``'s Events)."""
        return [
            obj.raw
            for (resource, _, _), obj in self.objects.items()
            if resource.plural == "events" and not obj.deleted and obj.raw["involvedObject"]["name"] == name
        ]


def register_restaurants(emulator: KubeEmulator) -> None:
    """Built-in resources, and Restaurant as its CRD (the chart's file) declares it."""
    emulator.resources.load_bundled()
    definition = crd.load_crd()
    names = definition["spec"]["names"]
    emulator.resources[f"{crd.GROUP}/{crd.VERSION}/{crd.PLURAL}"] = kmock.ResourceInfo(
        kind=names["kind"],
        singular=names["singular"],
        namespaced=definition["spec"]["scope"] == "Namespaced",
        shortnames=names.get("shortNames", ()),
        categories=names.get("categories", ()),
        verbs=VERBS,
        subresources=crd.served_version(definition).get("subresources", {}).keys(),
    )


@asynccontextmanager
async def kube_cluster() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator, kmock.Server(emulator):
        register_restaurants(emulator)
        yield emulator


@kopf.on.login(id="kube-emulator")
def login_to_the_emulator(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=memo["kube_url"])


class OperatorThread:
    """The operator as ``baedal operator`` runs it, in a thread with its own event loop (kopf
    cancels every task of its loop when it stops)."""

    def __init__(self, emulator: KubeEmulator, context: OperatorContext, liveness: str | None = None) -> None:
        self.emulator = emulator
        self.memo = kopf.Memo(context=context, kube_url=str(emulator.url).rstrip("/"))
        self.liveness = liveness
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, name="restaurant-operator", daemon=True)

    def _run(self) -> None:
        operator = kopf.operator(
            clusterwide=True,
            standalone=True,
            memo=self.memo,
            liveness_endpoint=self.liveness,
            stop_flag=self.stop_flag,
            ready_flag=self.ready_flag,
        )
        asyncio.run(operator)

    async def start(self, timeout: float = 60.0) -> None:
        """Start, and return once the operator watches Restaurants (resources made before that
        would be listed, not watched: fine too, but not what these tests want to show)."""
        opened = self.emulator.watches_opened[crd.PLURAL]

        async def watching() -> bool:
            assert self.thread.is_alive(), "the operator stopped during start-up"
            return self.ready_flag.is_set() and self.emulator.watches_opened[crd.PLURAL] > opened

        self.thread.start()
        await eventually(watching, timeout, "the operator watching Restaurants")

    async def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, timeout)
        assert not self.thread.is_alive(), "the operator did not stop"
