"""The HTTP server layer under the app: uvicorn, with its one answer of its own made a problem.

uvicorn answers a request it cannot parse (a request line or header block over its parser's
limits, a control character in a header, a malformed request line) itself, before any ASGI app
runs, with a plain-text ``400 Invalid HTTP request received.``. The protocols below send the same
400 as ``application/problem+json`` (``VALIDATION_ERROR``), like every other error of the API.
The connection is still closed afterwards: after a parse error the server cannot know where the
next request would begin.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.runtime.web.problems import PROBLEM

_STATUS_LINE = b"HTTP/1.1 400 Bad Request\r\n"


def _body(msg: str) -> bytes:
    return orjson.dumps(
        {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "code": "VALIDATION_ERROR",
            "detail": f"not a valid HTTP request: {msg.rstrip('.').lower()}",
        }
    )


def _response(default_headers: list[tuple[bytes, bytes]], msg: str) -> bytes:
    body = _body(msg)
    head = [_STATUS_LINE]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: " + PROBLEM.encode() + b"\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_response(self.server_state.default_headers, msg))
        self.transport.close()


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_response(self.server_state.default_headers, msg))
        self.transport.close()


def http_protocol() -> type[HttpToolsProtocol] | type[H11Protocol]:
    """What ``uvicorn.run(http=...)`` takes: httptools when installed (uvicorn's own choice), else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return ProblemH11Protocol
    return ProblemHttpToolsProtocol


def server(app: Any, graceful_shutdown_s: int = 10, **where: Any) -> uvicorn.Server:
    """uvicorn as every Baedal process runs it; ``where`` is ``host`` and ``port``, or nothing when
    the caller hands ``Server.run`` a socket of its own."""
    config = uvicorn.Config(
        app,
        http=http_protocol(),  # its own 400s as problem+json too
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown_s,
        # Longer than common clients' idle expiry (httpx: 5 s), so a client never reuses a
        # connection the server is closing at that moment.
        timeout_keep_alive=75,
        **where,
    )
    return uvicorn.Server(config)


def shared_socket(host: str, port: int, wait_s: float = 5.0) -> socket.socket:
    """A TCP socket bound as uvicorn binds one, that a child process may inherit: both processes
    then accept connections on it, and the kernel spreads them. A port still held is retried for
    ``wait_s``: the engine of a platform that just died may be closing it (restarts come fast)."""
    deadline = time.monotonic() + wait_s
    while True:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        sock.set_inheritable(True)
        return sock
