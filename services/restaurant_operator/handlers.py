"""kopf handlers for ``restaurants.baedal.io/v1``.

Create, update and resume publish the resource's full snapshot (``metadata.uid`` and
``metadata.generation``) through the same :func:`services.catalog.reconcile.reconcile` step as
``baedal apply``; delete publishes the removal before kopf's finalizer lets the resource go. The
outcome lands in ``status`` (``observedGeneration``, ``menuItems``, ``syncedAt``, a ``Synced``
condition) and in Kubernetes events. A failed publish is retried by kopf with exponential backoff.

Developers: ``kopf run -m services.restaurant_operator.handlers --all-namespaces`` (configured by
the environment, see :class:`~services.restaurant_operator.config.OperatorConfig`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from services.catalog.manifest import RestaurantResource, describe
from services.catalog.reconcile import reconcile, reconcile_removal
from services.entrypoints.bootstrap import catalog_publisher
from services.restaurant_operator import crd
from services.restaurant_operator.cluster import check_cluster
from services.restaurant_operator.config import OperatorConfig
from services.restaurant_operator.publisher import CatalogPublisher, PublishError, PublishRejected
from services.restaurant_operator.status import Status, is_synced, not_synced, now, published

SOURCE = "restaurant-operator"
FINALIZER = f"{crd.GROUP}/catalog-removal"
# kopf ignores annotations under its storage prefix: a prefix of its own leaves baedal.io/* to users.
KOPF_PREFIX = f"operator.{crd.GROUP}"
RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)


@dataclass
class OperatorContext:
    """What the handlers share, kept in kopf's memo (every resource's memo points to this one)."""

    config: OperatorConfig
    publisher: CatalogPublisher
    last_published_at: str | None = None
    last_error: str | None = None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping in our annotations; not in status, which the CRD schema would prune.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.reporting_component = SOURCE
    # The CRD is installed before the operator: no need to watch CRDs (nor RBAC to list them).
    settings.scanning.disabled = True
    # Re-list now and then rather than trust one watch connection forever.
    settings.watching.server_timeout = 300
    if "context" not in memo:  # `kopf run`: configured by the environment
        config = OperatorConfig()
        memo["context"] = OperatorContext(config, catalog_publisher(config))


@kopf.on.probe(id="catalog")
def catalog_probe(memo: kopf.Memo, **_: Any) -> dict[str, str | None]:
    """For ``--liveness``: when the catalog last took an event, and the last failure."""
    context: OperatorContext | None = memo.get("context")
    if context is None:
        return {"lastPublishedAt": None, "lastError": "not started"}
    return {"lastPublishedAt": context.last_published_at, "lastError": context.last_error}


@dataclass(frozen=True)
class Handling:
    """The resource a handler works on, and where its outcome goes (status patch and events)."""

    body: kopf.Body
    status: Status
    patch: kopf.Patch
    generation: int

    def synced(self, menu_items: int) -> None:
        self.patch.status.update(published(self.status, self.generation, menu_items, now()))
        kopf.info(self.body, reason="Published", message=f"generation {self.generation} is in the catalog")

    def failed(self, reason: str, message: str) -> None:
        self.patch.status.update(not_synced(self.status, self.generation, reason, message, now()))
        kopf.warn(self.body, reason=reason, message=message)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def publish_restaurant(
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    reason: str,
    retry: int,
    **_: Any,
) -> None:
    """Publish this generation's snapshot. On resume, a generation already synced is left alone:
    a restarted operator changes nothing in the catalog."""
    context: OperatorContext = memo["context"]
    handling = Handling(body, status, patch, int(meta["generation"]))
    resource = _checked(handling)
    if reason == kopf.Reason.RESUME and is_synced(status, handling.generation):
        kopf.info(body, reason="UpToDate", message=f"generation {handling.generation} is already in the catalog")
        return
    publishing = reconcile(resource, str(meta["uid"]), handling.generation, context.publisher.publish, SOURCE)
    await _publish(context, handling, retry, publishing, failure="PublishFailed")
    handling.synced(len(resource.spec.menu))


@kopf.on.delete(*RESOURCE)
async def remove_restaurant(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """Publish the removal; only then does kopf remove its finalizer and let the resource go."""
    context: OperatorContext = memo["context"]
    handling = Handling(body, status, patch, int(meta["generation"]))
    name, uid = str(meta["name"]), str(meta["uid"])
    removing = reconcile_removal(name, uid, handling.generation, context.publisher.publish, SOURCE)
    await _publish(context, handling, retry, removing, failure="RemovalFailed")
    kopf.info(body, reason="Removed", message=f"{name} left the catalog")


def _checked(handling: Handling) -> RestaurantResource:
    """The resource, checked by the same model as ``baedal apply`` (also what the schema cannot
    say, such as duplicate menu ids when the API server does not enforce them)."""
    try:
        return RestaurantResource.model_validate(dict(handling.body))
    except ValidationError as exc:
        message = f"invalid spec, nothing published: {describe(exc)}"
        handling.failed("InvalidSpec", message)
        raise kopf.PermanentError(message) from None


async def _publish(
    context: OperatorContext, handling: Handling, retry: int, publishing: Awaitable[None], failure: str
) -> None:
    """Await a publish; on failure report ``Synced=False`` and hand the retry to kopf."""
    try:
        await publishing
    except PublishRejected as exc:
        handling.failed("Rejected", f"the platform refused the event: {exc}")
        raise kopf.PermanentError(str(exc)) from None
    except PublishError as exc:
        context.last_error = str(exc)
        delay = context.config.retry_delay(retry)
        handling.failed(failure, f"{exc}; retrying in {delay:g} s")
        raise kopf.TemporaryError(str(exc), delay=delay) from None
    context.last_published_at = now()


def preflight(config: OperatorConfig) -> OperatorContext:
    """What ``baedal operator`` checks before it starts: a publisher for the configuration, the
    platform taking its token (embedded), a cluster to watch. Raises :class:`CouldNotRun` or
    :class:`httpx.HTTPError`; later outages are retried instead (``Synced=False``)."""
    context = OperatorContext(config, catalog_publisher(config))
    context.publisher.check()
    check_cluster()
    return context


def run(context: OperatorContext, namespaces: list[str], liveness: str | None = None) -> None:
    """``baedal operator``: these handlers, in this process, for the given namespaces (or all)."""
    operator = kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,  # one replica; kopf's peering would need its own CRDs
        liveness_endpoint=liveness,
        memo=kopf.Memo(context=context),
    )
    asyncio.run(operator)
