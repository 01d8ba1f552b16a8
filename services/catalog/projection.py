"""Pure rules for keeping a restaurant's catalog entry current from out-of-order events.

Two sources change a restaurant, each with its own ordering:
- catalog snapshots from the manifest (``uid`` + ``generation``): the newest generation of the
  current incarnation wins; a deleted incarnation's ``uid`` is remembered (tombstone) so its late
  events cannot bring it back, while a re-created restaurant (new ``uid``) starts afresh;
- owner overrides from the restaurant service (``seq``): the full override state, newest ``seq``
  wins.

The effective view combines them: open only if the manifest says open *and* the owner has not
closed it; an item is available only if the manifest says so *and* the owner has not marked it
sold out. Owner overrides survive later manifest generations (an owner's "sold out" is not undone
by a price change); overrides for items no longer on the menu are ignored. A re-created restaurant
(new ``uid``) starts without the old one's overrides.
"""

from __future__ import annotations

from typing import Any

TOMBSTONES_KEPT = 8

Entry = dict[str, Any]


def empty_entry(restaurant_id: str) -> Entry:
    return {
        "restaurant_id": restaurant_id,
        "uid": None,
        "generation": 0,
        "spec": None,
        "deleted": True,
        "tombstones": [],
        "override_seq": 0,
        "closed": False,
        "sold_out": [],
    }


def apply_snapshot(entry: Entry | None, data: dict[str, Any]) -> Entry | None:
    """The entry after a snapshot event, or None when the event is stale or already applied."""
    current = entry or empty_entry(data["restaurant_id"])
    uid, generation = data["uid"], int(data["generation"])
    if uid in current["tombstones"]:
        return None
    if uid == current["uid"]:
        if generation <= current["generation"]:
            return None
        return {**current, "generation": generation, "spec": data["spec"]}
    # A new incarnation replaces the old one: bury the old uid so its late events cannot return,
    # and start without the old incarnation's owner overrides.
    buried = [*current["tombstones"], current["uid"]][-TOMBSTONES_KEPT:] if current["uid"] else current["tombstones"]
    fresh = empty_entry(current["restaurant_id"])
    return {**fresh, "uid": uid, "generation": generation, "spec": data["spec"], "deleted": False, "tombstones": buried}


def apply_removal(entry: Entry | None, data: dict[str, Any]) -> Entry | None:
    current = entry or empty_entry(data["restaurant_id"])
    uid = data["uid"]
    if uid in current["tombstones"]:
        return None
    tombstones = [*current["tombstones"], uid][-TOMBSTONES_KEPT:]
    if uid != current["uid"]:
        # A removal of an older incarnation (or of one we never saw): remember it, keep the rest.
        return {**current, "tombstones": tombstones}
    return {**current, "tombstones": tombstones, "spec": None, "deleted": True, "generation": 0, "uid": None}


def apply_overrides(entry: Entry | None, data: dict[str, Any]) -> Entry | None:
    """Owner overrides belong to one incarnation (``uid``): others' are ignored."""
    current = entry or empty_entry(data["restaurant_id"])
    if data["uid"] != current["uid"] or int(data["seq"]) <= current["override_seq"]:
        return None
    return {
        **current,
        "override_seq": int(data["seq"]),
        "closed": bool(data["closed"]),
        "sold_out": sorted(data["sold_out"]),
    }


def is_live(entry: Entry | None) -> bool:
    return entry is not None and not entry["deleted"] and entry["spec"] is not None


def effective_open(entry: Entry) -> bool:
    return bool(entry["spec"]["open"]) and not entry["closed"]


def effective_items(entry: Entry) -> list[dict[str, Any]]:
    sold_out = set(entry["sold_out"])
    return [
        {
            "id": item["id"],
            "name": item["name"],
            "price": item["price"],
            "available": bool(item["available"]) and item["id"] not in sold_out,
        }
        for item in entry["spec"]["menu"]
    ]


def summary(entry: Entry) -> dict[str, Any]:
    spec = entry["spec"]
    return {
        "id": entry["restaurant_id"],
        "display_name": spec["display_name"],
        "open": effective_open(entry),
        "location": spec["location"],
        "delivery_fee": spec["delivery_fee"],
        "express_fee": spec["express_fee"],
    }
