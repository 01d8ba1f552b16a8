"""Requests the HTTP server cannot parse never reach the app; the server itself answers them, and
like every other error that answer is a ``400`` problem+json (``services/runtime/web/server.py``),
then closes the connection (after a parse error, where the next request would begin is unknown).
Served the way ``baedal up`` serves: uvicorn with :func:`http_protocol`, and with its h11 variant.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from services.entrypoints.gateway import create_app
from services.runtime.web.problems import PROBLEM
from services.runtime.web.server import ProblemH11Protocol, ProblemHttpToolsProtocol, http_protocol
from tests.support.platform import Api
from tests.support.server import free_port

HOST = b"Host: baedal\r\nConnection: close\r\n"  # the answer ends the exchange, whoever gives it
REQUEST_LINE_90KB = b"GET /restaurants?" + b"q" * 90_000 + b" HTTP/1.1\r\n" + HOST + b"\r\n"
CONTROL_CHARACTER = b"GET /restaurants HTTP/1.1\r\n" + HOST + b"X-Bad: a\x01b\r\n\r\n"
HEADER_90KB = b"GET /restaurants HTTP/1.1\r\n" + HOST + b"X-Big: " + b"h" * 90_000 + b"\r\n\r\n"
BAD_VERSION = b"GET /restaurants HTTP/9.Z\r\n\r\n"
# What the issue found (plain text from the server layer), as ``baedal up`` serves (httptools).
SERVER_LAYER_400 = [
    pytest.param(REQUEST_LINE_90KB, id="90KB-request-line"),
    pytest.param(CONTROL_CHARACTER, id="control-character-in-header"),
    pytest.param(BAD_VERSION, id="malformed-version"),
]
# Odd requests on either protocol: whoever answers (server layer or app), never plain text or a 5xx.
ODD = [*SERVER_LAYER_400, pytest.param(HEADER_90KB, id="90KB-header")]


@pytest.fixture
def app(api: Api) -> FastAPI:
    return create_app(api.platform, manage_lifecycle=False)


async def exchange(app: FastAPI, protocol: type[asyncio.Protocol], raw: bytes) -> bytes:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_level="critical")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes the connection
        writer.close()
        return answer
    finally:
        server.should_exit = True
        await task


def test_baedal_up_serves_with_the_problem_protocol() -> None:
    assert http_protocol() is ProblemHttpToolsProtocol


def _parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("raw", SERVER_LAYER_400)
async def test_a_request_the_server_cannot_parse_is_a_400_problem(app: FastAPI, raw: bytes) -> None:
    answer = await exchange(app, http_protocol(), raw)
    status, headers, body = _parse(answer)
    assert status == 400, answer[:500]
    assert headers["content-type"] == PROBLEM
    assert headers["connection"] == "close"
    problem = orjson.loads(body)
    assert (problem["status"], problem["code"], problem["title"]) == (400, "VALIDATION_ERROR", "Bad Request")
    assert problem["detail"].startswith("not a valid HTTP request")


@pytest.mark.parametrize("protocol", [ProblemHttpToolsProtocol, ProblemH11Protocol])
@pytest.mark.parametrize("raw", ODD)
async def test_odd_requests_never_get_plain_text(app: FastAPI, protocol: type[asyncio.Protocol], raw: bytes) -> None:
    status, headers, body = _parse(await exchange(app, protocol, raw))
    assert status < 500
    if status >= 400:
        assert headers["content-type"] == PROBLEM
        assert orjson.loads(body)["status"] == status
