"""Wake-ups between the two processes of ``baedal up`` (the gateway's and the engine's).

Each process runs the outbox relays and delivery workers of its own services, but a commit in one
process often concerns a loop in the other: a placed order is committed by the gateway process into
the order service's outbox, and the order relay then queues the event in the payment service's
database, whose worker runs in the engine process. Within one process those loops wake on an
``asyncio.Event``; across the two, on a message over a ``SOCK_SEQPACKET`` socket pair inherited by
the engine process.

A message is only a hint: the loops still look at their tables every second, so a message lost
(the socket full, the other process restarting) delays work by at most that, never loses it.
Everything durable is in the databases. The pair also tells each side when the other is gone:
reading end-of-file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from enum import StrEnum

log = logging.getLogger("baedal.peer")


class Wake(StrEnum):
    RELAY = "relay"  # a commit put events in this service's outbox
    WORK = "work"  # deliveries were queued for this service
    PAUSE = "pause"  # stop this service's consumers (an admin's drill)
    RESUME = "resume"
    READY = "ready"  # the engine process has started every loop it runs (the service is "engine")


WAKES = frozenset(wake.value for wake in Wake)
Received = Callable[[Wake, str], None]


class Peer:
    """This process's end of the pair: :meth:`send` never blocks, :meth:`listen` calls back on the
    event loop, and ``gone`` is called once when the other end closes."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._listening = False

    @classmethod
    def pair(cls) -> tuple[Peer, socket.socket]:
        """This process's end, and the socket to hand to the other process (``pass_fds``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.set_inheritable(True)
        return cls(ours), theirs

    @classmethod
    def inherited(cls, fd: int) -> Peer:
        return cls(socket.socket(fileno=fd))

    def send(self, wake: Wake, service: str) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionError, OSError):  # a hint: see the module
            self._sock.send(f"{wake.value} {service}".encode())

    def listen(self, received: Received, gone: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    message = self._sock.recv(256)
                except BlockingIOError:
                    return
                except OSError:
                    message = b""
                if not message:
                    loop.remove_reader(self._sock.fileno())
                    self._listening = False
                    gone()
                    return
                kind, _, service = message.decode(errors="replace").partition(" ")
                if kind not in WAKES:
                    log.warning("ignored a malformed wake-up %r", message)
                    continue
                received(Wake(kind), service)

        loop.add_reader(self._sock.fileno(), readable)
        self._listening = True

    def close(self) -> None:
        if self._listening:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._listening = False
        self._sock.close()
