"""The docs against the code. Where a page restates what the code knows (topics, publishers,
subscribers, routing rules, payload fields, routes, settings, databases), these tests fail as soon
as the two disagree, so a change to one without the other cannot go unnoticed."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.routing import APIRoute
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from services import topics
from services.catalog.manifest import RestaurantResource, load_manifests
from services.catalog.reconcile import removal_event, snapshot_event
from services.delivery.domain import Delivery, DeliveryStatus
from services.entrypoints.bootstrap import SERVICES, Platform, wire
from services.entrypoints.cli import app as cli
from services.entrypoints.gateway import ops
from services.entrypoints.routes import ROUTES
from services.order.domain import CancelReason, Order, OrderStatus
from services.order.handlers import SOURCE as ORDER_SOURCE
from services.payment.domain import FailureReason, Payment, PaymentStatus
from services.restaurant.domain import RejectReason, Ticket, TicketStatus
from services.restaurant.handlers import RestaurantService
from services.restaurant_operator.config import OperatorConfig
from services.restaurant_operator.handlers import SOURCE as OPERATOR_SOURCE
from services.runtime.events import Event, OutboundEvent
from services.runtime.memory import MemoryStateStore
from services.runtime.ports import BatchHandler, Handler, Subscription
from services.runtime.settings import REPO_ROOT, Settings
from services.runtime.unit_of_work import outbound
from services.runtime.web.api import probes
from services.topics import DomainEvent

DOCS = REPO_ROOT / "docs"
EXAMPLES = REPO_ROOT / "operator" / "examples"
# The pages these tests keep true (docs/api.md and README.md have their own owners and checks).
PAGES = ("architecture.md", "dapr.md", "events.md", "kubernetes.md", "lifecycle.md", "operations.md", "operator.md")
TOPICS = {value for name, value in vars(topics).items() if name.isupper() and isinstance(value, str)}
CONSUMER = re.compile(r"^[a-z]+/[a-z][a-z-]*$")


# --------------------------------------------------------------------------- reading Markdown


def page(name: str) -> str:
    return (DOCS / name).read_text()


def section(text: str, heading: str) -> str:
    """The part of ``text`` from the heading line starting with ``heading`` up to the next heading
    of the same or a higher level (headings inside code blocks do not count)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert len(starts) == 1, f"expected one heading {heading!r}, found {len(starts)}"
    end, fenced = len(lines), False
    for i in range(starts[0] + 1, len(lines)):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", lines[i]):
            end = i
            break
    return "\n".join(lines[starts[0] : end])


def headings(text: str, level: int) -> list[str]:
    return [line[level + 1 :] for line in text.splitlines() if line.startswith("#" * level + " ")]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def tables(text: str) -> Iterator[list[dict[str, str]]]:
    """Every Markdown table in ``text``, as rows keyed by the header."""
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            header = _cells(block[0])
            yield [dict(zip(header, _cells(row), strict=True)) for row in block[2:]]
            block = []


def table(text: str, *columns: str) -> list[dict[str, str]]:
    """The one table in ``text`` whose header starts with ``columns``."""
    found = [rows for rows in tables(text) if rows and list(rows[0])[: len(columns)] == list(columns)]
    assert len(found) == 1, f"expected one table with columns {columns}, found {len(found)}"
    return found[0]


def ticks(text: str) -> list[str]:
    """The `code spans` of ``text`` (outside fenced code blocks)."""
    return re.findall(r"`([^`]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


# --------------------------------------------------------------------------- what the code knows


@dataclass(frozen=True)
class Registered:
    service: str
    subscription: Subscription
    batch: bool

    @property
    def name(self) -> str:
        return f"{self.service}/{self.subscription.consumer}"


def _register(service: str, found: list[Registered]) -> tuple[Any, Any]:
    def single(subscription: Subscription, _: Handler) -> None:
        found.append(Registered(service, subscription, batch=False))

    def batch(subscription: Subscription, _: BatchHandler) -> None:
        found.append(Registered(service, subscription, batch=True))

    return single, batch


@pytest.fixture(scope="module")
def consumers(tmp_path_factory: pytest.TempPathFactory) -> list[Registered]:
    """Every consumer, registered exactly as the runtimes register them (``bootstrap.wire``)."""
    platform = Platform(Settings(data_dir=tmp_path_factory.mktemp("docs"), load_demo=False))
    found: list[Registered] = []
    for name in SERVICES:
        wire(getattr(platform, name), *_register(name, found))
    return found


def subscribers_of(consumers: list[Registered], topic: str) -> dict[str, Registered]:
    return {c.name: c for c in consumers if c.subscription.topic == topic}


# The payload field a routing rule looks at, per topic: routing rules filter by status.
STATUS_OF: dict[str, tuple[str, type[StrEnum]]] = {
    topics.ORDER_STATUS_CHANGED: ("order", OrderStatus),
    topics.DELIVERY_STATUS_CHANGED: ("delivery", DeliveryStatus),
}


def routed(consumer: Registered) -> set[str] | None:
    """The statuses a consumer's routing rule lets through (None: it has no rule)."""
    match = consumer.subscription.match
    if match is None:
        return None
    topic = consumer.subscription.topic
    assert topic in STATUS_OF, f"{consumer.name} routes {topic} by a rule this test cannot describe"
    key, statuses = STATUS_OF[topic]
    return {status.value for status in statuses if match({key: {"status": status.value}})}


def _restaurant(name: str) -> RestaurantResource:
    (document,) = load_manifests(EXAMPLES / f"{name}.yaml")
    return RestaurantResource.model_validate(document)


async def sample_events() -> dict[str, DomainEvent | OutboundEvent]:
    """One real event of every kind, made by the code that publishes it (the aggregates, the
    catalog's reconcile step, and handlers run on the in-memory state store)."""
    now = "2026-11-21T06:02:54.249968Z"
    order = Order(
        id="o1",
        customer_id="cust-1",
        restaurant_id="hanok-bibimbap",
        status=OrderStatus.PENDING,
        items=[{"product_id": "bibimbap", "name": "비빔밥", "quantity": 1, "unit_price": 18000}],
        total_price=21000,
        delivery={"address": "서울 강남구 테헤란로 1", "lat": 37.5, "lon": 127.03, "express": False},
        payment={"method": "card", "status": "PENDING"},
        created_at=now,
        updated_at=now,
        cancel_reason=CancelReason.CUSTOMER_CANCELLED,
    )
    payments = [
        Payment("o1", "cust-1", 21000, "wallet", PaymentStatus.COMPLETED),
        Payment("o1", "cust-1", 21000, "card", PaymentStatus.FAILED, FailureReason.GATEWAY_UNAVAILABLE),
        Payment("o1", "cust-1", 21000, "wallet", PaymentStatus.REFUNDED),
    ]
    tickets = [
        Ticket("o1", "seoul-chicken", "cust-1", status, 21000, [], now, now)
        for status in (TicketStatus.ACCEPTED, TicketStatus.COOKING, TicketStatus.READY)
    ]
    rejected = Ticket("o1", "seoul-chicken", "cust-1", TicketStatus.PENDING, 21000, [], now, now)
    rejected.reject(RejectReason.REJECTED, "out of rice", now)
    delivery = Delivery(
        "o1", "seoul-chicken", "cust-1", DeliveryStatus.WAITING, False, {"lat": 37.5, "lon": 127.0}, {}, now, now
    )
    # The accept deadline and the availability change come out of their handlers: run them.
    store = MemoryStateStore()
    restaurants = RestaurantService(store)
    manual = _restaurant("hanok-bibimbap")
    assert not manual.spec.auto_accept, "the accept-deadline timer needs a manual-accept restaurant"
    await restaurants.catalog.on_upserted(Event.from_envelope(snapshot_event(manual, "u1", 1, "t").envelope()))
    await restaurants.on_order_paid(Event.from_envelope(outbound(order.paid_event(), ORDER_SOURCE, "o1").envelope()))
    await restaurants.change_availability(manual.name, open_=False)
    events: list[DomainEvent | OutboundEvent] = [
        order.placed_event("tok_visa"),
        order.paid_event(),
        order.status_event(),
        order.cancel_requested_event(),
        *(payment.outcome() for payment in payments),
        *(ticket.decision() for ticket in [*tickets, rejected]),
        delivery.status_event(),
        snapshot_event(_restaurant("seoul-chicken"), "u1", 1, "restaurant"),
        removal_event("seoul-chicken", "u1", 1, "restaurant"),
        *store.events,
    ]
    return {event.topic: event for event in events}


def env_names(model: type[BaseSettings]) -> dict[str, FieldInfo]:
    """The environment variables a settings model reads, nested models included."""
    names: dict[str, FieldInfo] = {}
    prefix = model.model_config.get("env_prefix", "")
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            names |= env_names(field.annotation)
        elif isinstance(field.validation_alias, AliasChoices):
            names |= {str(c): field for c in field.validation_alias.choices if str(c).startswith("BAEDAL_")}
        else:
            names[f"{prefix}{name}".upper()] = field
    return names


def shown(default: Any) -> str:
    """A default as the settings table shows it."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    if isinstance(default, Path) and default.is_absolute():
        return f"`{default.relative_to(REPO_ROOT)}`"
    return f"`{default}`"


# --------------------------------------------------------------------------- docs/events.md


def _subscriber_cell(cell: str) -> dict[str, str]:
    """`service/consumer` (annotation), … → {service/consumer: annotation}."""
    return dict(re.findall(r"`([a-z]+/[a-z][a-z-]*)`(?: \(([^)]*)\))?", cell))


def test_topic_table_lists_every_topic_with_its_publisher_and_subscribers(consumers: list[Registered]) -> None:
    rows = table(section(page("events.md"), "## Topics"), "topic")
    documented = [ticks(row["topic"])[0] for row in rows]
    assert [t for t, n in Counter(documented).items() if n > 1] == [], "a topic listed twice"
    assert sorted(TOPICS - set(documented)) == [], "topics in services/topics.py missing from the table"
    assert sorted(set(documented) - TOPICS) == [], "documented topics that services/topics.py does not define"
    for row in rows:
        topic = ticks(row["topic"])[0]
        assert row["published by"].split(":")[0] == topics.publisher_of(topic), topic
        listed = _subscriber_cell(row["subscribers"])
        expected = subscribers_of(consumers, topic)
        assert sorted(listed) == sorted(expected), f"subscribers of {topic}"
        for name, consumer in expected.items():
            parts = [part.strip() for part in listed[name].split(";") if part.strip()]
            assert ("batch" in parts) == consumer.batch, f"{name}: '(batch)' marks exactly the batch consumers"
            rules = [part for part in parts if part != "batch"]
            accepted = routed(consumer)
            if accepted is None:
                assert rules == [], f"{name} has no routing rule"
                continue
            assert len(rules) == 1, f"{name} has a routing rule: name the statuses it receives"
            statuses = STATUS_OF[topic][1]
            named = set(rules[0].removeprefix("not ").split(", "))
            assert named <= {s.value for s in statuses}, f"{name}: {rules[0]}"
            documented_rule = {s.value for s in statuses} - named if rules[0].startswith("not ") else named
            assert documented_rule == accepted, f"{name} receives {sorted(accepted)}"


def test_every_consumer_has_its_guard_against_duplicates(consumers: list[Registered]) -> None:
    rows = table(section(page("events.md"), "## Delivery guarantees"), "consumer")
    documented = [name for row in rows for name in ticks(row["consumer"])]
    assert [n for n, count in Counter(documented).items() if count > 1] == []
    assert sorted(documented) == sorted(c.subscription.consumer for c in consumers)


def test_every_topic_has_its_payload_section_with_its_subscribers(consumers: list[Registered]) -> None:
    text = page("events.md")
    sections = [ticks(h)[0] for h in headings(text, 3) if h.startswith("`")]
    assert sorted(sections) == sorted(TOPICS), "one '### `topic`' section per topic, and no other"
    for topic in TOPICS:
        part = section(text, f"### `{topic}`")
        bullet = re.search(r"^- \*\*Subscribers:\*\*(.*?)(?=^- |^\S|\Z)", part, flags=re.S | re.M)
        assert bullet is not None, f"{topic}: no '- **Subscribers:**' line"
        named = {t for t in ticks(bullet[1]) if CONSUMER.match(t)}
        assert sorted(named) == sorted(subscribers_of(consumers, topic)), f"subscribers in the {topic} section"


async def test_payload_sections_list_the_fields_the_code_sends() -> None:
    text = page("events.md")
    events = await sample_events()
    assert sorted(events) == sorted(TOPICS), "this test makes one event of every kind"
    for topic, event in events.items():
        part = section(text, f"### `{topic}`")
        fields = [ticks(row["field"])[0] for row in table(part, "field")]
        assert sorted(fields) == sorted(event.data), f"fields of {topic}"
        for example in code_blocks(part, "json"):
            assert sorted(json.loads(example)) == sorted(event.data), f"the {topic} example"


def test_the_source_attribute_lists_every_publisher() -> None:
    rows = table(section(page("events.md"), "## Envelope"), "attribute")
    (source,) = [row["value"] for row in rows if row["attribute"] == "`source`"]
    # Each publishing service names itself in its handlers' SOURCE; the operator has its own.
    sources = {getattr(import_module(f"services.{s}.handlers"), "SOURCE", None) for s in SERVICES} - {None}
    assert sources == set(topics.PUBLISHERS.values())
    publishers = {f"/baedal/{source}" for source in [*sources, OPERATOR_SOURCE]}
    assert {t for t in ticks(source) if re.fullmatch(r"/baedal/[a-z-]+", t)} == publishers


# --------------------------------------------------------------------------- docs/architecture.md


def test_gateway_routing_table_matches_the_gateway() -> None:
    part = section(page("architecture.md"), "## Gateway routing table")
    routes = table(part, "method", "path", "service")
    assert Counter((r["method"], ticks(r["path"])[0], r["service"]) for r in routes) == Counter(ROUTES)
    own = [(row["method"], ticks(row["path"])[0]) for row in table(part, "method", "path", "what")]
    served = [route for route in [*probes.routes, *ops.routes] if isinstance(route, APIRoute)]
    assert len(served) == len(probes.routes) + len(ops.routes)
    assert Counter(own) == Counter((method, route.path) for route in served for method in route.methods or ())


def test_services_table_lists_what_each_service_publishes() -> None:
    rows = table(section(page("architecture.md"), "## Services"), "service")
    assert [row["service"] for row in rows] == list(SERVICES)
    for row in rows:
        published = {t for t in ticks(row["publishes"]) if t in TOPICS}
        assert published == {t for t in TOPICS if topics.publisher_of(t) == row["service"]}, row["service"]


def test_order_state_diagram_has_every_order_status() -> None:
    (diagram,) = [block for block in code_blocks(page("architecture.md"), "mermaid") if "stateDiagram" in block]
    ends = re.findall(r"^\s*(\S+) --> ([^\s:]+)", diagram, flags=re.M)
    states = {state for pair in ends for state in pair} - {"[*]"}
    assert states == {status.value for status in OrderStatus}


# --------------------------------------------------------------------------- docs/operations.md


def assert_documents(rows: list[dict[str, str]], variables: dict[str, FieldInfo]) -> None:
    """A settings table has one row per variable, with the variable's default."""
    documented = [ticks(row["variable"])[0] for row in rows]
    assert [v for v, n in Counter(documented).items() if n > 1] == []
    assert sorted(set(variables) - set(documented)) == [], "variables missing from the table"
    assert sorted(set(documented) - set(variables)) == [], "documented variables that nothing reads"
    for row in rows:
        field = variables[ticks(row["variable"])[0]]
        assert row["default"] == shown(field.get_default(call_default_factory=True)), row["variable"]


def test_settings_table_documents_every_setting_with_its_default() -> None:
    assert_documents(table(section(page("operations.md"), "## Settings"), "variable"), env_names(Settings))


def test_settings_and_running_name_exactly_the_flags_of_baedal_up() -> None:
    group = typer.main.get_command(cli)
    assert isinstance(group, typer.core.TyperGroup)
    up = group.commands["up"]
    flags = {opt for param in up.params for opt in param.opts if opt.startswith("--")}
    text = page("operations.md")
    in_table = [flag for row in table(section(text, "## Settings"), "variable") for flag in ticks(row["flag"])]
    in_list = re.findall(r"^- `(--[a-z-]+)", section(text, "## Running"), flags=re.M)
    assert Counter(in_table + in_list) == Counter(flags)


def test_operator_environment_is_the_operator_config() -> None:
    rows = table(section(page("operator.md"), "## For developers"), "variable")
    assert_documents(rows, env_names(OperatorConfig))


def test_database_files_and_schemas_are_one_per_service() -> None:
    for name in ("operations.md", "architecture.md"):
        spans = ticks(page(name))
        files = {m[1] for t in spans if (m := re.fullmatch(r"(?:\S*/)?([a-z]+\.db)", t))}
        assert files == {f"{s}.db" for s in SERVICES}, name
        schemas = {t for t in spans if re.fullmatch(r"baedal_[a-z]+", t)}
        assert schemas == {f"{Settings.model_fields['schema_prefix'].default}{s}" for s in SERVICES}, name


# --------------------------------------------------------------------------- every page


def harness_variables() -> set[str]:
    """The variables that the test harness and ``make services`` read from the environment."""
    sources = [*(REPO_ROOT / "scripts").glob("*.py"), *(REPO_ROOT / "tests").rglob("*.py")]
    pattern = r"environ(?:\.get\(|\[)\"(BAEDAL_[A-Z0-9_]+)\""
    return {name for source in sources for name in re.findall(pattern, source.read_text())}


@pytest.mark.parametrize("name", PAGES)
def test_named_files_and_variables_exist(name: str) -> None:
    text = page(name)
    spans = ticks(text)
    assert [t for t in spans if t.startswith("../")] == [], "paths outside the repository"
    paths = [t for t in spans if re.fullmatch(r"(services|tests|docs|charts|operator|components|scripts)/[\w./-]*", t)]
    assert [p for p in paths if not (REPO_ROOT / p).exists()] == [], "paths that do not exist"
    known = set(env_names(Settings)) | set(env_names(OperatorConfig)) | harness_variables()
    for variable in re.findall(r"BAEDAL_[A-Z0-9_]*", text):
        if variable.endswith("_"):  # a family, e.g. BAEDAL_CHAOS_*
            assert any(k.startswith(variable) for k in known), variable
        else:
            assert variable in known, variable
