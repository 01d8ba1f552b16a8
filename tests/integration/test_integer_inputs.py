"""Integers in query strings and headers follow one rule (``services/runtime/web/api.py``): plain
ASCII decimal digits from 0 to 2**53 - 1. Anything else, such as a number beyond 64 bits, a
superscript digit or 4,301 digits, is ``422 VALIDATION_ERROR`` as problem+json, never a 500, and
the client's keep-alive connection stays usable for its next request.

These requests go over a real socket to the app served by uvicorn (what ``baedal up`` runs), on
each backend: a 500 there would also close the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import orjson
import pytest
import uvicorn

from services.entrypoints.gateway import create_app
from services.runtime.web.problems import PROBLEM
from tests.support.platform import Api
from tests.support.server import free_port

BEYOND_64_BITS = "9223372036854775808"  # 2**63: SQLite raised OverflowError here
HUGE = "9" * 4301  # more digits than Python's int() converts
NOT_PLAIN = [BEYOND_64_BITS, str(2**53), HUGE, "²", "٣", "-1", "+1", " 1", "1_000", "1.0", "1e3", ""]

# (path, role, subject): every integer query parameter, for a role allowed to call the route.
QUERIES = [
    pytest.param("/orders?offset={}", "customer", "cust-int", id="orders-offset-customer"),
    pytest.param("/orders?offset={}", "admin", "test-admin", id="orders-offset-admin"),
    pytest.param("/orders?offset={}", "owner", "owner-kim", id="orders-offset-owner"),
    pytest.param("/orders?limit={}", "customer", "cust-int", id="orders-limit"),
    pytest.param("/restaurants/seoul-chicken/orders?offset={}", "owner", "owner-kim", id="queue-offset-owner"),
    pytest.param("/restaurants/seoul-chicken/orders?offset={}", "admin", "test-admin", id="queue-offset-admin"),
    pytest.param("/notifications?after={}", "customer", "cust-int", id="feed-after-customer"),
    pytest.param("/notifications?after={}", "owner", "owner-kim", id="feed-after-owner"),
    pytest.param("/notifications?after={}&lat=37.5&lon=127", "rider", "rider-int", id="feed-after-rider"),
    pytest.param("/notifications?limit={}", "customer", "cust-int", id="feed-limit"),
    pytest.param("/notifications/stream?after={}&limit=1", "customer", "cust-int", id="stream-after-customer"),
    pytest.param("/notifications/stream?after={}&lat=37.5&lon=127", "rider", "rider-int", id="stream-after-rider"),
    pytest.param("/notifications/stream?limit={}", "customer", "cust-int", id="stream-limit"),
]


@dataclass
class Raw:
    """One keep-alive HTTP/1.1 connection to the served app."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def get(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        lines = [f"GET {target} HTTP/1.1", "Host: baedal"] + [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        answer = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        body = await asyncio.wait_for(self.reader.readexactly(int(answer["content-length"])), 10)
        return int(status_line.split()[1]), answer, body


@pytest.fixture
async def raw(api: Api) -> AsyncIterator[Raw]:
    port = free_port()
    config = uvicorn.Config(
        create_app(api.platform, manage_lifecycle=False), host="127.0.0.1", port=port, lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()
        server.should_exit = True
        await task


async def assert_422_and_still_connected(
    raw: Raw, api: Api, target: str, role: str, subject: str, **headers: str
) -> None:
    auth = api.headers(role, subject)
    status, answer, body = await raw.get(target, auth | headers)
    assert status == 422, body
    assert answer["content-type"].startswith(PROBLEM)
    problem = orjson.loads(body)
    assert problem["code"] == "VALIDATION_ERROR"
    assert problem["status"] == 422
    assert answer.get("connection") != "close"
    # The same connection answers the next request.
    status, _, body = await raw.get("/orders?limit=1", api.headers("customer", "cust-int"))
    assert status == 200, body
    assert orjson.loads(body) == []


@pytest.mark.parametrize(("path", "role", "subject"), QUERIES)
async def test_integer_query_parameter_that_is_not_a_plain_bounded_decimal_is_422(
    raw: Raw, api: Api, path: str, role: str, subject: str
) -> None:
    for value in NOT_PLAIN:
        await assert_422_and_still_connected(raw, api, path.format(quote(value)), role, subject)


async def test_last_event_id_that_is_not_a_plain_bounded_decimal_is_422(raw: Raw, api: Api) -> None:
    for value in NOT_PLAIN:
        if value.strip() in ("", "1"):
            continue  # HTTP strips a header's surrounding spaces; an empty Last-Event-ID is none at all
        await assert_422_and_still_connected(
            raw, api, "/notifications/stream?limit=1", "customer", "cust-int", **{"Last-Event-ID": value}
        )


@pytest.mark.parametrize(
    "path",
    [
        "/orders?offset=9007199254740991",
        "/restaurants/seoul-chicken/orders?offset=9007199254740991&limit=1000",
        "/notifications?after=9007199254740991",
    ],
)
async def test_the_largest_integer_is_accepted(api: Api, path: str) -> None:
    role, subject = ("owner", "owner-kim") if "restaurants" in path else ("customer", "cust-int")
    for who in ((role, subject), ("admin", "test-admin")) if "notifications" not in path else ((role, subject),):
        response = await api.request("GET", path, *who)
        assert response.status_code == 200, response.text
        assert response.json() == []
    owner_list = await api.request("GET", "/orders?offset=9007199254740991&limit=1000", "owner", "owner-kim")
    assert owner_list.status_code == 200, owner_list.text
