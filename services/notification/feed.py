"""The notification feeds port: what each recipient has been told, in order, and the log of the
outbound channel. The SQL adapter is ``services.runtime.sql.notification_feed``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from services.notification.domain import Notification


class Feed(Protocol):
    async def add(self, notifications: Sequence[Notification]) -> None:
        """Store, idempotently: the id is derived from the event and the recipient."""

    async def for_recipient(self, recipient: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The recipient's notifications after ``after`` (a feed sequence number), oldest first."""

    async def for_rider(self, where: dict[str, float], after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """READY-delivery alerts near the rider's position."""

    async def outbound_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest messages of the outbound channel with their delivery state."""
