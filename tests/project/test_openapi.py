"""docs/openapi.json, the machine-readable contract, against the code and against docs/api.md.

Fails when the published document is stale (regenerate: ``make openapi``, which runs
``baedal openapi > docs/openapi.json``), when an operation answers a bare object, when an error is
not documented as the one problem+json schema, or when an error status docs/api.md names for an
endpoint is missing from the operation. Also: ``/docs`` and ``/redoc`` load nothing from the
internet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.entrypoints.bootstrap import Platform
from services.entrypoints.gateway import create_app, openapi_text, ops
from services.entrypoints.routes import SERVICE_ROUTERS
from services.runtime.settings import Settings
from services.runtime.web.api import MAX_INT, PlainDecimal, probes
from services.runtime.web.problems import PROBLEM
from tests.project.test_api_doc import STATUS_AND_CODE, _doc, _endpoint_sections
from tests.support import ROOT

PUBLISHED = ROOT / "docs" / "openapi.json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# The two operations that answer something other than JSON.
NOT_JSON = {("GET", "/metrics"): "text/plain", ("GET", "/notifications/stream"): "text/event-stream"}
# Said once in docs/api.md for every endpoint, so not on each operation: a wrong
# method, body too large (only where there is a body) and the 500 of a bug.
GENERIC = {405, 413, 500}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(Platform(Settings(data_dir=tmp_path_factory.mktemp("openapi"))), manage_lifecycle=False)


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_the_published_document_is_current() -> None:
    assert PUBLISHED.read_text(encoding="utf-8") == openapi_text(), (
        "docs/openapi.json is stale: run `make openapi` (baedal openapi > docs/openapi.json)"
    )


def test_every_operation_answers_a_typed_model(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    untyped = []
    for method, path, operation in _operations(document):
        success = [answer for status, answer in operation["responses"].items() if status.startswith("2")]
        assert len(success) == 1, (method, path)
        content = success[0].get("content", {})
        if (method, path) in NOT_JSON:
            assert list(content) == [NOT_JSON[(method, path)]], (method, path, content)
            continue
        schema = content.get("application/json", {}).get("schema", {})
        schema = schema.get("items", schema) if schema.get("type") == "array" else schema
        ref = schema.get("$ref", "")
        if not ref.startswith("#/components/schemas/") or "properties" not in schemas[ref.rsplit("/", 1)[1]]:
            untyped.append((method, path, schema))
    assert untyped == []


def test_every_error_is_the_problem_schema(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                assert answer["content"] == {PROBLEM: {"schema": PROBLEM_REF}}, (method, path, status)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert {"type", "title", "status", "code", "detail"} <= set(schemas["Problem"]["required"])


def test_operations_that_need_a_token_say_so(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "baedal token",
    }
    for method, path, operation in _operations(document):
        public = path in ("/healthz", "/readyz", "/metrics", "/restaurants", "/restaurants/{restaurant_id}/menu")
        assert ("security" not in operation) == public, (method, path)
        if not public:
            assert operation["security"] == [{"bearerAuth": []}]
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_every_error_docs_api_md_names_is_documented(document: dict[str, Any]) -> None:
    missing = []
    for (method, path), section in _endpoint_sections(_doc()).items():
        operation = document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue  # /openapi.json, /docs, /redoc
        named = {int(status) for status, _ in STATUS_AND_CODE.findall(section)} - GENERIC
        missing += [(method, path, s) for s in sorted(named) if str(s) not in operation["responses"]]
    assert missing == []


def test_readyz_documents_its_503(document: dict[str, Any]) -> None:
    assert "503" in document["paths"]["/readyz"]["get"]["responses"]


async def test_docs_pages_load_nothing_from_the_internet(app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://baedal") as client:
        for page in ("/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 200
            assert re.findall(r"https?://", response.text) == [], page
            for asset in re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text) + re.findall(
                r"""url: ['"]([^'"]+)['"]""", response.text
            ):
                loaded = await client.get(asset)
                assert loaded.status_code == 200, (page, asset)


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def test_every_integer_query_parameter_and_header_follows_the_one_rule(document: dict[str, Any]) -> None:
    """``services/runtime/web/api.py``: plain decimal digits, 0 to MAX_INT (issue 16: 2**63 and '²'
    were 500s). The validator on each, and the bounds in the document."""
    checked, bare = 0, []
    for router in (*SERVICE_ROUTERS.values(), probes, ops):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for dependant in _dependants(route.dependant):
                for param in dependant.query_params + dependant.header_params:
                    annotation = param.field_info.annotation
                    if int in (get_args(annotation) or (annotation,)):
                        checked += 1
                        if PlainDecimal not in param.field_info.metadata:
                            bare.append((route.path, param.name))
    assert checked >= 8
    assert bare == []
    for method, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            for alternative in schema.get("anyOf", [schema]):
                if alternative.get("type") == "integer":
                    assert 0 <= alternative["minimum"] <= alternative["maximum"] <= MAX_INT, (method, path, parameter)
