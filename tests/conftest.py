"""Shared fixtures: a running embedded platform per test, driven over HTTP (in-process ASGI).
The helpers they use, and that tests import, are in ``tests/support``.

Backends: SQLite always; PostgreSQL too, at ``BAEDAL_TEST_DATABASE_URL`` (default: the server that
``make services`` starts); each test gets its own schemas and drops them. When that server does not
answer, the PostgreSQL variants skip and say how to provide one; with ``BAEDAL_REQUIRE_POSTGRES=1``
(CI) they fail instead.
"""

from __future__ import annotations

import os

# gRPC's fork handlers (the fake Dapr sidecar runs gRPC in this process) can break a child started
# by fork(); the tests' children exec at once and need none of them.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.entrypoints.bootstrap import Platform, drop_schemas
from services.runtime.settings import ChaosSettings, Settings
from tests.support import EXAMPLES
from tests.support.platform import BACKENDS, PG_URL, Api, PlatformFactory, api_for, require_postgres


@pytest.fixture
def paygate(paygate_process: str) -> str:
    """The simulator's URL, its knobs back to healthy defaults for this test."""
    assert httpx.put(f"{paygate_process}/knobs", json={}, timeout=5).status_code == 200
    return paygate_process


@pytest.fixture(scope="session")
def paygate_process() -> Iterator[str]:
    """The payment-gateway simulator as a real process (timeouts need a real socket)."""
    from tests.support.server import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "services.tools.paygate", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def make_platform(backend: str, tmp_path: Path) -> AsyncIterator[PlatformFactory]:
    """Build (and later stop and clean up) platforms on this test's backend."""
    started: list[Platform] = []
    prefixes: list[str] = []
    prefix = f"t{uuid.uuid4().hex[:10]}_"

    async def factory(chaos: ChaosSettings | None = None, data_dir: Path | None = None, **overrides: Any) -> Platform:
        values: dict[str, Any] = {
            "data_dir": data_dir or tmp_path / "data",
            "demo_manifests": EXAMPLES,
            "backoff_base_s": 0.01,
            "backoff_cap_s": 0.2,
        }
        if backend == "postgresql":
            values |= {"database_url": PG_URL, "schema_prefix": prefix}
            prefixes.append(prefix)
        if chaos is not None:
            values["chaos"] = chaos
        platform = Platform(Settings(**(values | overrides)))
        await platform.start()
        started.append(platform)
        return platform

    if backend == "postgresql":
        await require_postgres()
    yield factory
    for platform in started:
        if platform.started:
            await platform.stop()
    for schema_prefix in set(prefixes):
        await drop_schemas(PG_URL, schema_prefix)


@pytest.fixture
async def api(make_platform: PlatformFactory) -> AsyncIterator[Api]:
    """A running platform with the demo catalog loaded and propagated to the read stores."""
    platform = await make_platform()
    client = api_for(platform)
    await client.settle()
    yield client
    await client.client.aclose()
