"""A Restaurant's ``status`` as the operator writes it: pure functions of what happened.

One condition, ``Synced``: True once the generation in ``observedGeneration`` is in the catalog,
False with a reason (``InvalidSpec``, ``PublishFailed``, ``Rejected``, ``RemovalFailed``) otherwise.
Its ``lastTransitionTime`` moves only when its status flips, as Kubernetes conventions ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

SYNCED = "Synced"

Status = Mapping[str, Any] | None


def now() -> str:
    """RFC 3339 in whole seconds, like the API server's own timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def synced_condition(status: Status) -> Mapping[str, Any] | None:
    return next((c for c in (status or {}).get("conditions") or () if c.get("type") == SYNCED), None)


def is_synced(status: Status, generation: int) -> bool:
    """Whether this generation is already known to be in the catalog."""
    condition = synced_condition(status)
    current = (status or {}).get("observedGeneration") == generation
    return bool(current and condition and condition.get("status") == "True")


def published(status: Status, generation: int, menu_items: int, at: str) -> dict[str, Any]:
    message = f"generation {generation} with {menu_items} menu items is in the catalog"
    return {
        "observedGeneration": generation,
        "menuItems": menu_items,
        "syncedAt": at,
        "conditions": _conditions(status, True, "Published", message, generation, at),
    }


def not_synced(status: Status, generation: int, reason: str, message: str, at: str) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": _conditions(status, False, reason, message, generation, at),
    }


def _conditions(status: Status, ok: bool, reason: str, message: str, generation: int, at: str) -> list[dict[str, Any]]:
    """The other conditions untouched (a merge patch replaces the whole list), ``Synced`` replaced."""
    previous = synced_condition(status)
    state = "True" if ok else "False"
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == state else None
    condition = {
        "type": SYNCED,
        "status": state,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since or at,
    }
    others = [dict(c) for c in (status or {}).get("conditions") or () if c.get("type") != SYNCED]
    return [*others, condition]
