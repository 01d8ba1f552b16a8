"""The HTTP server layer under the app: uvicorn, with its one answer of its own made a problem.

uvicorn answers a request it cannot parse (a request line or header block over its parser's
limits, a control character in a header, a malformed request line) itself, before any ASGI app
runs, with a plain-text ``400 Invalid HTTP request received.``. The protocols below send the same
400 as ``application/problem+json`` (``VALIDATION_ERROR``), like every other error of the API.
The connection is still closed afterwards: after a parse error the server cannot know where the
next request would begin.
"""

from __future__ import annotations

import orjson
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
