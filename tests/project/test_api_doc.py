"""docs/api.md, the public contract, against the code that implements it.

Fails when they drift apart:
- every route the gateway serves has its index row (with the service that answers it) and its
  ``#### `METHOD /path``` section with the right success status, and the document names no route
  that does not exist;
- the error-code table lists exactly the codes the code can answer with, each with its HTTP
  status(es), and every ``NNN CODE`` an endpoint section names agrees with the table;
- the value sets (roles, statuses, reasons) and the ticket table of invariant 6 match the enums
  and the audit's table.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.delivery.domain import DeliveryStatus
from services.entrypoints.bootstrap import Platform
from services.entrypoints.gateway import create_app, ops
from services.entrypoints.routes import ROUTES, SERVICE_ROUTERS
from services.order.api import PaymentIn
from services.order.domain import CancelReason, OrderStatus
from services.payment.domain import FailureReason, PaymentStatus
from services.restaurant.domain import TicketStatus
from services.runtime import errors
from services.runtime.auth import Role
from services.runtime.settings import Settings
from services.runtime.web import problems
from services.runtime.web.api import probes
from services.tools.audit import TICKET_STATES_FOR
from tests.support import ROOT

DOC = ROOT / "docs" / "api.md"
SERVICES_DIR = ROOT / "services"
# Not part of the platform's API: the card-gateway simulator stands in for an outside system.
NOT_THE_API = {SERVICES_DIR / "paygate"}

Route = tuple[str, str]
METHODS = "GET|POST|PUT|PATCH|DELETE"
ROUTE_IN_TICKS = re.compile(rf"`({METHODS}) (/[^`\s]*)`")
SECTION_HEADING = re.compile(rf"^#### `({METHODS}) (/[^`\s]*)`$")
INDEX_ROW = re.compile(rf"^\| `({METHODS}) (/[^`\s]*)` \| ([^|]+?) \|")
ERROR_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]+?) \|")
STATUS_AND_CODE = re.compile(r"`(\d{3}) ([A-Z][A-Z0-9_]*)`")
VALUE_ROW = re.compile(r"^\| ([a-z_]+ `[a-z_.]+`) \| (.+?) \|$")
TICKET_ROW = re.compile(r"^\s*\| `([A-Z_]+)` \| (.+?) \|$")


# --------------------------------------------------------------------------- reading the doc


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (i for i in range(start, len(lines)) if re.match(rf"^#{{1,{level}}} ", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start:end])


def _endpoint_sections(text: str) -> dict[Route, str]:
    """Each ``#### `METHOD /path``` heading with the text of its section."""
    sections: dict[Route, str] = {}
    current: Route | None = None
    body: list[str] = []
    for line in [*text.splitlines(), "# end"]:
        if line.startswith("#"):
            if current is not None:
                assert current not in sections, f"{current} is documented twice"
                sections[current] = "\n".join(body)
            match = SECTION_HEADING.match(line)
            current = (match[1], match[2]) if match else None
            body = []
        elif current is not None:
            body.append(line)
    return sections


def _error_table(text: str) -> dict[str, set[int]]:
    table: dict[str, set[int]] = {}
    for line in _section(text, "## Error codes").splitlines():
        match = ERROR_ROW.match(line)
        if match:
            assert match[1] not in table, f"{match[1]} is in the error table twice"
            table[match[1]] = {int(s) for s in re.findall(r"\b\d{3}\b", match[2])}
    return table


# --------------------------------------------------------------------------- reading the code


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The embedded gateway app, built (not started) on an empty data dir."""
    return create_app(Platform(Settings(data_dir=tmp_path_factory.mktemp("api-doc"))), manage_lifecycle=False)


@pytest.fixture(scope="module")
def served(app: FastAPI) -> dict[Route, int]:
    """Every (method, path) the gateway serves, with its success status: the OpenAPI document, the
    routers it includes (in case a route hides from the schema), and the API description pages."""
    routes: dict[Route, int] = {}
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            success = [int(code) for code in operation["responses"] if code.startswith("2")]
            assert len(success) == 1, (method, path, success)
            routes[(method.upper(), path)] = success[0]
    for router in (*SERVICE_ROUTERS.values(), probes, ops):
        for route in router.routes:
            assert isinstance(route, APIRoute), route
            for method in route.methods or ():
                routes[(method, route.path)] = route.status_code or 200
    for page in (app.openapi_url, app.docs_url, app.redoc_url):
        assert page is not None
        routes[("GET", page)] = 200
    return routes


def _python_files() -> Iterator[Path]:
    for path in sorted(SERVICES_DIR.rglob("*.py")):
        if not any(path.is_relative_to(skipped) for skipped in NOT_THE_API):
            yield path


def _called(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _error_call(node: ast.Call) -> tuple[object, object] | None:
    """(code, status) of a call that makes a problem+json answer, or None for any other call.
    Either may be a non-literal (then not a str or an int)."""
    name = _called(node)
    args = node.args
    if name in ("ApiError", "problem"):
        return (_literal(args[1]), _literal(args[0])) if len(args) >= 2 else (None, None)
    if name == "not_found":
        return (_literal(args[0]) if args else None), 404
    if name == "DomainError":
        code = _literal(args[0]) if args else None
        return code, (errors.DOMAIN_STATUS.get(code, 422) if isinstance(code, str) else None)
    func = node.func
    mapping = func.value if isinstance(func, ast.Attribute) else None
    if name == "get" and isinstance(mapping, ast.Name) and mapping.id == "_HTTP_CODES":
        return (_literal(args[1]) if len(args) == 2 else None), None  # the fallback, for any other status
    return None


def _codes_in_source() -> dict[str, set[int | None]]:
    """Every problem+json code the platform can answer with, and its HTTP statuses (None: decided
    at run time), found in the source: ``ApiError(status, "CODE", ...)``, ``problem(status, "CODE",
    ...)``, ``not_found("CODE", ...)``, ``DomainError("CODE", ...)`` (status by ``DOMAIN_STATUS``),
    and the status → code mapping for framework errors, with its fallback."""
    codes: dict[str, set[int | None]] = {}
    for code, status in errors.DOMAIN_STATUS.items():
        codes.setdefault(code, set()).add(status)
    for http_status, http_code in problems._HTTP_CODES.items():
        codes.setdefault(http_code, set()).add(http_status)
    dynamic: list[str] = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            found = _error_call(node) if isinstance(node, ast.Call) else None
            if found is None:
                continue
            literal_code, literal_status = found
            if not isinstance(literal_code, str):
                # Only the generic handlers pass codes along; elsewhere a code must be a literal, so
                # that this test (and a reader) can see it.
                if path not in {
                    SERVICES_DIR / "runtime" / "errors.py",
                    SERVICES_DIR / "runtime" / "web" / "problems.py",
                }:
                    dynamic.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}")
                continue
            codes.setdefault(literal_code, set()).add(literal_status if isinstance(literal_status, int) else None)
    assert dynamic == [], f"error codes that are not literals: {dynamic}"
    return codes


# --------------------------------------------------------------------------- routes


def test_the_source_scan_finds_the_codes_it_should() -> None:
    """The scan itself works: codes from each kind of call are found with their statuses."""
    codes = _codes_in_source()
    assert codes["DEAD_LETTER_NOT_FOUND"] == {404}  # ApiError in services/entrypoints/gateway.py
    assert codes["PAYLOAD_TOO_LARGE"] == {413}  # problem() in runtime/api.py and _HTTP_CODES
    assert codes["SERVICE_UNAVAILABLE"] == {503}  # problem() in the Dapr gateway
    assert codes["DELIVERY_ALREADY_CLAIMED"] == {409}  # DomainError + DOMAIN_STATUS
    assert codes["VALIDATION_ERROR"] >= {400, 422}
    assert codes["HTTP_ERROR"] == {None}


def test_every_served_route_has_an_index_row_and_a_section_and_no_other_route_is_documented(
    served: dict[Route, int],
) -> None:
    text = _doc()
    index = {(m[1], m[2]) for line in _section(text, "### Index").splitlines() if (m := INDEX_ROW.match(line))}
    sections = set(_endpoint_sections(text))
    assert sorted(set(served) - index) == [], "served routes missing from the index of docs/api.md"
    assert sorted(index - set(served)) == [], "routes in the index of docs/api.md that the platform does not serve"
    assert sorted(set(served) - sections) == [], "served routes without a `#### `METHOD /path`` section"
    assert sorted(sections - set(served)) == [], "sections of docs/api.md for routes the platform does not serve"
    mentioned = {(m[1], m[2]) for m in ROUTE_IN_TICKS.finditer(text)}
    assert sorted(mentioned - set(served)) == [], "docs/api.md mentions routes that do not exist"


def test_the_index_names_the_service_that_answers_each_route(served: dict[Route, int]) -> None:
    table = {(method, path): service for method, path, service in ROUTES}
    documented = {
        (m[1], m[2]): m[3].strip()
        for line in _section(_doc(), "### Index").splitlines()
        if (m := INDEX_ROW.match(line))
    }
    wrong = {
        route: (service, table.get(route, "gateway"))
        for route, service in documented.items()
        if service != table.get(route, "gateway")
    }
    assert wrong == {}, "route: (docs/api.md says, the routing table says)"


def test_each_section_states_the_success_status_the_route_answers(served: dict[Route, int]) -> None:
    wrong = {}
    for route, body in _endpoint_sections(_doc()).items():
        match = re.search(r"^- \*\*Response:\*\* `(\d{3})`", body, re.MULTILINE)
        assert match, f"the section of {route} has no '- **Response:** `NNN`' line"
        if int(match[1]) != served[route]:
            wrong[route] = (int(match[1]), served[route])
    assert wrong == {}, "route: (docs/api.md says, the code answers)"


# --------------------------------------------------------------------------- error codes


def test_the_error_table_lists_exactly_the_codes_in_the_code_with_their_statuses() -> None:
    in_code = _codes_in_source()
    in_doc = _error_table(_doc())
    assert sorted(in_code.keys() - in_doc.keys()) == [], "codes missing from the error table of docs/api.md"
    assert sorted(in_doc.keys() - in_code.keys()) == [], "codes in docs/api.md that the code never answers with"
    wrong = {}
    for code, statuses in in_code.items():
        fixed = {s for s in statuses if s is not None}
        # A code whose status is decided at run time only (HTTP_ERROR) names no status number.
        if in_doc[code] != fixed:
            wrong[code] = (sorted(in_doc[code]), sorted(fixed))
    assert wrong == {}, "code: (docs/api.md says, the code answers)"


def test_the_errors_named_by_the_endpoint_sections_agree_with_the_error_table() -> None:
    text = _doc()
    table = _error_table(text)
    wrong = []
    for route, body in _endpoint_sections(text).items():
        for status, code in STATUS_AND_CODE.findall(body):
            if int(status) not in table.get(code, set()):
                wrong.append((route, f"{status} {code}"))
    assert wrong == []


# --------------------------------------------------------------------------- value sets and invariant 6


VALUE_SETS: dict[str, set[str]] = {
    "token `role`": {r.value for r in Role},
    "order `status`": {s.value for s in OrderStatus},
    "order `cancel_reason`": {r.value for r in CancelReason},
    "payment `method`": set(get_args(PaymentIn.model_fields["method"].annotation)),
    "payment `status`": {s.value for s in PaymentStatus},
    "payment `failure_reason`": {r.value for r in FailureReason},
    "ticket `status`": {s.value for s in TicketStatus},
    "delivery `status`": {s.value for s in DeliveryStatus},
}


def test_the_value_sets_match_the_enums() -> None:
    documented = {
        m[1]: set(re.findall(r"`([^`]+)`", m[2]))
        for line in _section(_doc(), "## Value sets").splitlines()
        if (m := VALUE_ROW.match(line))
    }
    assert documented == VALUE_SETS


def test_the_ticket_table_of_invariant_6_is_the_audits() -> None:
    documented: dict[str, set[str | None]] = {}
    for line in _section(_doc(), "## Consistency invariants").splitlines():
        match = TICKET_ROW.match(line)
        if match:
            states: set[str | None] = set(re.findall(r"`([A-Z_]+)`", match[2]))
            if "no ticket" in match[2]:
                states.add(None)
            documented[match[1]] = states
    audit = {str(status): states for status, states in TICKET_STATES_FOR.items()}
    assert documented == audit
    assert set(audit) == {s.value for s in OrderStatus}, "the audit's table covers every order status"
