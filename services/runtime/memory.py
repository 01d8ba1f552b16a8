"""An in-memory :class:`~services.runtime.ports.StateStore`: handlers run on it without a platform
(no database, no dispatcher), and tests read the events they committed.

It keeps the contract of the SQL and Dapr stores: values are stored as JSON (what a handler reads
back never shares objects with what it wrote), every write gives the key a new ETag, a write or
delete carrying a stale ETag and a create (``etag=None``) of an existing key raise
:class:`~services.runtime.ports.ConcurrencyConflict`, and a commit is atomic: when one guard fails
nothing of it is written and none of its events is recorded. Events are recorded as serialised
at commit, like an outbox row.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from services.runtime.events import OutboundEvent, dumps, loads
from services.runtime.ports import ConcurrencyConflict, Delete, Record, Write


class MemoryStateStore:
    """State in a dict; ``events`` lists every committed event, in commit order."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[str, str]] = {}  # key -> (value as JSON, etag)
        self._etags = itertools.count(1)
        self.events: list[OutboundEvent] = []

    async def get(self, key: str) -> Record | None:
        stored = self._state.get(key)
        return Record(key, loads(stored[0]), stored[1]) if stored else None

    async def scan(self, prefix: str) -> list[Record]:
        return [
            Record(key, loads(value), etag)
            for key, (value, etag) in sorted(self._state.items())
            if key.startswith(prefix)
        ]

    async def commit(self, writes: Sequence[Write], events: Sequence[OutboundEvent] = ()) -> None:
        staged: dict[str, tuple[str, str] | None] = {}  # applied in order, kept only if all pass
        for write in writes:
            current = staged[write.key] if write.key in staged else self._state.get(write.key)
            if (current[1] if current else None) != write.etag:
                raise ConcurrencyConflict(write.key)
            if isinstance(write, Delete):
                staged[write.key] = None
            else:
                staged[write.key] = (dumps(write.value), str(next(self._etags)))
        for key, stored in staged.items():
            if stored is None:
                self._state.pop(key, None)
            else:
                self._state[key] = stored
        self.events.extend(replace(e, data=loads(dumps(e.data))) for e in events)

    def published(self, *topics: str) -> list[OutboundEvent]:
        """The committed events on these topics (every one when none is named), in order."""
        return [e for e in self.events if not topics or e.topic in topics]
