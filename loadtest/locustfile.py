"""The lunch rush (docs/loadtest.md): customers, owners and riders of Baedal under a lunch-shaped load,
with an SLO gate that fails the run.

    python -m locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 --data-dir .baedal

(``make loadtest`` starts a platform, runs this and stops it.) The data set (restaurants with menus,
funded customers, tokens) is created in the ``test_start`` hook through the public API, under a
run id of its own, so runs never see each other's data. Run from the repository root: the
``loadtest`` package is imported from the working directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from locust import LoadTestShape, constant_pacing, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

from loadtest.gate import Figures, Targets, verdict
from loadtest.lunch import FULL_DURATION_S, SMOKE_DURATION_S, Lunch
from loadtest.plot import Saga, Sample, draw, percentile
from services.runtime.auth import Role, TokenIssuer, load_secret

log = logging.getLogger("lunch")
logging.getLogger("httpx").setLevel(logging.WARNING)  # the gate's polls are not news

CENTRE = (37.4979, 127.0276)  # Gangnam: restaurants and riders are spread around it
SPREAD_DEG = 0.01  # about 1 km
SETTLED_STATES = frozenset({"PAID", "ACCEPTED", "COOKING", "READY", "PICKED_UP", "DELIVERED", "COMPLETED", "CANCELLED"})
ACCEPTED_OR_LATER = frozenset({"ACCEPTED", "COOKING", "READY", "PICKED_UP", "DELIVERED", "COMPLETED"})
DELIVERY_FEE, EXPRESS_FEE = 3000, 5000
FUNDS = 5_000_000  # per customer: about a hundred orders each


# ------------------------------------------------------------------------------------ options


def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("Baedal lunch rush (docs/loadtest.md)")
    group.add_argument("--data-dir", default=os.environ.get("BAEDAL_DATA_DIR", ""), help="sign tokens with its secret")
    group.add_argument(
        "--jwt-secret", default=os.environ.get("BAEDAL_JWT_SECRET", ""), help="or with this secret (a cluster's)"
    )
    group.add_argument("--smoke", action="store_true", help=f"the {SMOKE_DURATION_S:.0f}-second variant")
    group.add_argument("--lunch-duration", type=float, default=0.0, help=f"seconds (default {FULL_DURATION_S:.0f})")
    group.add_argument("--base-rate", type=float, default=2.0, help="orders/s in the quiet hours (peak: 3×)")
    group.add_argument("--restaurants", type=int, default=12, help="generated restaurants")
    group.add_argument("--manual-ratio", type=float, default=0.34, help="share of manual-accept restaurants")
    group.add_argument("--menu-items", type=int, default=8, help="menu items per restaurant")
    group.add_argument("--customers", type=int, default=150, help="funded customers (at most one user each)")
    group.add_argument("--owners", type=int, default=4, help="owner users (restaurants are shared out among them)")
    group.add_argument("--riders", type=int, default=6, help="rider users")
    group.add_argument("--customer-pacing", type=float, default=10.0, help="seconds per customer journey")
    group.add_argument("--card-ratio", type=float, default=0.1, help="share of orders paid by card")
    group.add_argument("--card-token", default="tok_visa", help="the card token of card orders")
    group.add_argument("--cancel-ratio", type=float, default=0.03, help="share of orders the customer cancels")
    group.add_argument("--reject-ratio", type=float, default=0.05, help="share of orders an owner rejects")
    group.add_argument("--max-failure-ratio", type=float, default=Targets.max_failure_ratio, help="gate")
    group.add_argument("--slo-orders-p99-ms", type=float, default=Targets.orders_p99_ms, help="gate: POST /orders")
    group.add_argument("--slo-menu-p99-ms", type=float, default=Targets.menu_p99_ms, help="gate: menu reads")
    group.add_argument("--settle-timeout", type=float, default=Targets.settle_timeout_s, help="gate: seconds")
    group.add_argument("--report-prefix", default="", help="gate JSON and plot prefix (default: the --csv prefix)")


def _lunch(options: Any) -> Lunch:
    duration = options.lunch_duration or (SMOKE_DURATION_S if options.smoke else FULL_DURATION_S)
    return Lunch(base_rate=options.base_rate, duration_s=duration)


# ------------------------------------------------------------------------------------ the run's state


@dataclass
class Placed:
    id: str
    customer: str
    restaurant: str
    manual: bool
    cancelled: bool = False  # the customer's cancel was accepted (202): it must end CANCELLED


@dataclass
class Run:
    """The data set and what the users did, shared by every user of this process."""

    id: str = field(default_factory=lambda: f"lt{secrets.token_hex(3)}")
    host: str = ""
    issuer: TokenIssuer | None = None
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    restaurants: list[str] = field(default_factory=list)
    manual: set[str] = field(default_factory=set)
    owners: dict[str, list[str]] = field(default_factory=dict)  # owner → restaurants
    customers: list[str] = field(default_factory=list)
    riders: list[str] = field(default_factory=list)
    placed: dict[str, Placed] = field(default_factory=dict)
    started_wall: float = 0.0  # time.time() when the shape started (after the set-up)
    started: float = 0.0  # time.perf_counter() at the same moment
    samples: list[Sample] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    setup_error: str | None = None
    ready: bool = False
    next_user: Counter[str] = field(default_factory=Counter)

    def token(self, role: Role, subject: str) -> str:
        key = (role.value, subject)
        if key not in self.tokens:
            assert self.issuer is not None
            self.tokens[key] = self.issuer.issue(role, subject, ttl_s=6 * 3600)
        return self.tokens[key]

    def auth(self, role: Role, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, subject)}"}

    def take(self, kind: str, pool: list[str]) -> str:
        """The next subject of a pool for a new user, round robin."""
        index = self.next_user[kind]
        self.next_user[kind] += 1
        return pool[index % len(pool)]


RUN = Run()


def _issuer(options: Any) -> TokenIssuer:
    if options.jwt_secret:
        return TokenIssuer(options.jwt_secret)
    if options.data_dir:
        return TokenIssuer(load_secret(Path(options.data_dir)))
    raise RuntimeError(
        "give --data-dir (a local platform's data dir) or --jwt-secret (BAEDAL_JWT_SECRET) to sign tokens"
    )


def _price(item: int) -> int:
    return 6000 + 1500 * item


def _manifest(run: Run, index: int, owner: str, manual: bool, items: int) -> dict[str, Any]:
    rng = random.Random(index)
    return {
        "apiVersion": "baedal.io/v1",
        "kind": "Restaurant",
        "metadata": {"name": f"{run.id}-r{index}"},
        "spec": {
            "displayName": f"Lunch Kitchen {index}",
            "open": True,
            "autoAccept": not manual,
            "acceptTimeoutSeconds": 300,
            "location": {
                "lat": round(CENTRE[0] + rng.uniform(-SPREAD_DEG, SPREAD_DEG), 5),
                "lon": round(CENTRE[1] + rng.uniform(-SPREAD_DEG, SPREAD_DEG), 5),
            },
            "deliveryFee": DELIVERY_FEE,
            "expressFee": EXPRESS_FEE,
            "owners": [owner],
            "menu": [{"id": f"dish-{k}", "name": f"Dish {k}", "price": _price(k)} for k in range(items)],
        },
    }


def set_up(run: Run, options: Any, host: str) -> None:
    """Restaurants (a share of them manual-accept) with menus, funded customers, owners and riders,
    all through the public API; waits until the catalog shows every menu."""
    run.host = host.rstrip("/")
    run.issuer = _issuer(options)
    admin = run.auth(Role.ADMIN, f"{run.id}-admin")
    manual_count = round(options.restaurants * options.manual_ratio)
    owners = [f"{run.id}-owner{j}" for j in range(max(options.owners, 1))]
    run.owners = {owner: [] for owner in owners}
    run.customers = [f"{run.id}-c{i}" for i in range(options.customers)]
    run.riders = [f"{run.id}-rider{k}" for k in range(max(options.riders, 1))]
    with httpx.Client(base_url=run.host, headers=admin, timeout=30.0) as client:
        for index in range(options.restaurants):
            owner = owners[index % len(owners)]
            manual = index < manual_count
            response = client.post("/admin/restaurants", json=_manifest(run, index, owner, manual, options.menu_items))
            if response.status_code != 200:
                raise RuntimeError(f"manifest {run.id}-r{index}: {response.status_code} {response.text[:200]}")
            rid = f"{run.id}-r{index}"
            run.restaurants.append(rid)
            run.owners[owner].append(rid)
            if manual:
                run.manual.add(rid)
        for customer in run.customers:
            response = client.post(f"/wallets/{customer}/top-ups", json={"amount": FUNDS})
            if response.status_code != 200:
                raise RuntimeError(f"top-up of {customer}: {response.status_code} {response.text[:200]}")
        deadline = time.monotonic() + 60
        for rid in run.restaurants:  # the order service's catalog is a read model: wait for it
            while client.get(f"/restaurants/{rid}/menu").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{rid} did not reach the catalog within 60 s")
                time.sleep(0.1)
    log.info(
        "data set %s: %d restaurants (%d manual-accept), %d funded customers, %d owners, %d riders",
        run.id,
        len(run.restaurants),
        len(run.manual),
        len(run.customers),
        len(owners),
        len(run.riders),
    )


def _on_test_start(environment: Environment, **_: Any) -> None:
    if RUN.ready or RUN.setup_error:
        return
    try:
        set_up(RUN, environment.parsed_options, environment.host or "")
        RUN.ready = True
    except Exception as exc:  # the gate reports it; the shape stops at once
        RUN.setup_error = f"{type(exc).__name__}: {exc}"
        log.error("set-up failed: %s", RUN.setup_error)
    # The shape's clock starts now, after the set-up.
    RUN.started_wall, RUN.started = time.time(), time.perf_counter()
    if environment.shape_class is not None:
        environment.shape_class.reset_time()  # type: ignore[no-untyped-call]


def _on_request(request_type: str, name: str, response_time: float, exception: BaseException | None, **_: Any) -> None:
    if RUN.started:
        RUN.samples.append(
            Sample(time.perf_counter() - RUN.started, request_type, name, float(response_time), exception is None)
        )


# ------------------------------------------------------------------------------------ users


class Base(FastHttpUser):
    abstract = True
    # No user code runs before the data set exists (test_start runs before any user is spawned).

    def expect(
        self, method: str, path: str, name: str, ok: tuple[int, ...], normal: tuple[str, ...] = (), **kw: Any
    ) -> Any:
        """One request; ``ok`` statuses succeed, as do 4xx answers whose code is ``normal`` (a lost
        race: counted, not a failure). Returns the JSON body of an ``ok`` answer, else None."""
        with self.client.request(method, path, name=name, catch_response=True, **kw) as response:
            if response.status_code in ok:
                response.success()
                try:
                    return response.json()
                except ValueError:
                    return None
            code = ""
            with contextlib.suppress(ValueError, AttributeError):
                code = (response.json() or {}).get("code", "")
            if code and code in normal:
                RUN.counts[f"{name} {code}"] += 1
                response.success()
            else:
                response.failure(f"{response.status_code} {code or (response.text or '')[:100]}")
            return None


class Customer(Base):
    """Browses (several reads per order), orders with an Idempotency-Key, follows the order until it
    is accepted, sometimes cancels, and confirms what was delivered."""

    weight = 1

    def wait_time(self) -> float:
        """One journey every --customer-pacing seconds, from a random first moment: customers arrive
        at random, not all at the second they are spawned (that would be a burst of orders every
        --customer-pacing seconds)."""
        self.next_at += self.options.customer_pacing
        while self.next_at < time.monotonic():  # a journey longer than the pacing: no catching up
            self.next_at += self.options.customer_pacing
        return self.next_at - time.monotonic()

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.options = options
        self.me = RUN.take("customer", RUN.customers) if RUN.customers else "nobody"
        self.headers = RUN.auth(Role.CUSTOMER, self.me) if RUN.ready else {}
        first = random.uniform(0, options.customer_pacing)
        self.next_at = time.monotonic() + first
        time.sleep(first)

    @task
    def lunch(self) -> None:
        if not RUN.ready:
            return
        self.confirm_delivered()
        listing = self.expect("GET", "/restaurants", "/restaurants", (200,)) or []
        ours = [r for r in listing if r["id"] in RUN.restaurants and r["open"]]
        if not ours:
            return
        menu: dict[str, Any] | None = None
        for summary in random.sample(ours, k=min(len(ours), random.choice((1, 2, 3)))):
            menu = self.expect("GET", f"/restaurants/{summary['id']}/menu", "/restaurants/{id}/menu", (200,))
        if not menu:
            return
        self.order(menu)

    def order(self, menu: dict[str, Any]) -> None:
        restaurant = menu["restaurant"]
        available = [item for item in menu["items"] if item["available"]]
        lines = random.sample(available, k=min(len(available), random.choice((1, 1, 2, 3))))
        items = [{"product_id": i["id"], "quantity": random.choice((1, 1, 2)), "unit_price": i["price"]} for i in lines]
        express = random.random() < 0.1
        fee = restaurant["express_fee"] if express else restaurant["delivery_fee"]
        card = random.random() < self.options.card_ratio
        body = {
            "restaurant_id": restaurant["id"],
            "items": items,
            "delivery": {
                "address": "서울 강남구 테헤란로 1",
                "lat": round(CENTRE[0] + random.uniform(-SPREAD_DEG, SPREAD_DEG), 5),
                "lon": round(CENTRE[1] + random.uniform(-SPREAD_DEG, SPREAD_DEG), 5),
                "express": express,
            },
            "payment": {"method": "card", "card_token": self.options.card_token} if card else {"method": "wallet"},
            "total_price": sum(i["quantity"] * i["unit_price"] for i in items) + fee,
        }
        headers = {**self.headers, "Idempotency-Key": f"{RUN.id}-{uuid.uuid4().hex}"}
        view = self.expect("POST", "/orders", "/orders", (202,), json=body, headers=headers)
        if not view:
            return
        placed = Placed(view["id"], self.me, restaurant["id"], restaurant["id"] in RUN.manual)
        RUN.placed[placed.id] = placed
        if random.random() < 0.02:  # a client retry: the same key is the same order
            again = self.expect("POST", "/orders", "/orders (retry, same key)", (202,), json=body, headers=headers)
            if again and again["id"] != placed.id:
                RUN.counts["idempotency broken"] += 1
        if random.random() < self.options.cancel_ratio:
            self.wait_a_moment(0.2, 2.0)
            cancelled = self.expect(
                "POST",
                f"/orders/{placed.id}/cancel",
                "/orders/{id}/cancel",
                (202,),
                ("INVALID_STATE",),
                headers=self.headers,
            )
            placed.cancelled = cancelled is not None
            return
        self.follow(placed)

    def follow(self, placed: Placed, bound_s: float = 20.0) -> None:
        """Poll the order until it is accepted (or cancelled), as an app would."""
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            self.wait_a_moment(0.3, 0.7)
            view = self.expect("GET", f"/orders/{placed.id}", "/orders/{id}", (200,), headers=self.headers)
            if view and (view["status"] in ACCEPTED_OR_LATER or view["status"] == "CANCELLED"):
                return

    def confirm_delivered(self) -> None:
        delivered = self.expect(
            "GET", "/orders?status=DELIVERED&limit=20", "/orders?status=DELIVERED", (200,), headers=self.headers
        )
        for view in delivered or []:
            self.expect(
                "POST",
                f"/orders/{view['id']}/confirm",
                "/orders/{id}/confirm",
                (202,),
                ("INVALID_STATE",),
                headers=self.headers,
            )

    def wait_a_moment(self, low: float, high: float) -> None:
        time.sleep(random.uniform(low, high))  # cooperative: locust monkey-patched the standard library


class Owner(Base):
    """The owner of some restaurants (manual-accept ones among them): accepts or occasionally
    rejects paid orders, cooks accepted ones."""

    fixed_count = 4  # set from --owners in the init hook
    wait_time = constant_pacing(2.0)

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.me = RUN.take("owner", sorted(RUN.owners)) if RUN.owners else "nobody"
        self.headers = RUN.auth(Role.OWNER, self.me) if RUN.ready else {}
        self.mine = set(RUN.owners.get(self.me, []))

    def queue(self, status: str) -> list[dict[str, Any]]:
        views = self.expect(
            "GET", f"/orders?status={status}&limit=50", f"/orders?status={status} (owner)", (200,), headers=self.headers
        )
        return [v for v in views or [] if v["restaurant_id"] in self.mine]

    def command(self, view: dict[str, Any], verb: str, **kw: Any) -> None:
        # A ticket not open yet (404) or already decided or cancelled (409) is a normal race.
        self.expect(
            "POST",
            f"/restaurants/{view['restaurant_id']}/orders/{view['id']}/{verb}",
            f"/restaurants/{{id}}/orders/{{id}}/{verb}",
            (202,),
            ("ORDER_NOT_FOUND", "INVALID_STATE"),
            headers=self.headers,
            **kw,
        )

    @task
    def work(self) -> None:
        if not RUN.ready:
            return
        if self.mine & RUN.manual:
            for view in self.queue("PAID"):
                if view["restaurant_id"] not in RUN.manual:
                    continue
                if random.random() < self.options.reject_ratio:
                    self.command(view, "reject", json={"reason": "out of rice"})
                else:
                    self.command(view, "accept")
        for view in self.queue("ACCEPTED"):
            self.command(view, "start-cooking")
        for view in self.queue("COOKING"):
            self.command(view, "finish-cooking")


class Rider(Base):
    """Looks for READY deliveries nearby, claims one (a lost race is normal), picks it up, delivers."""

    fixed_count = 6  # set from --riders in the init hook
    wait_time = constant_pacing(1.0)

    def on_start(self) -> None:
        self.me = RUN.take("rider", RUN.riders) if RUN.riders else "nobody"
        self.headers = RUN.auth(Role.RIDER, self.me) if RUN.ready else {}
        self.position = (
            round(CENTRE[0] + random.uniform(-SPREAD_DEG, SPREAD_DEG), 5),
            round(CENTRE[1] + random.uniform(-SPREAD_DEG, SPREAD_DEG), 5),
        )

    @task
    def ride(self) -> None:
        if not RUN.ready:
            return
        lat, lon = self.position
        found = self.expect(
            "GET",
            f"/deliveries/available?lat={lat}&lon={lon}&radius_km=5",
            "/deliveries/available",
            (200,),
            headers=self.headers,
        )
        ours = [d for d in found or [] if d["restaurant_id"] in RUN.restaurants]
        if not ours:
            return
        pick = random.choice(ours[:3])  # several riders see the same few: claims race
        claimed = self.expect(
            "POST",
            f"/deliveries/{pick['id']}/claim",
            "/deliveries/{id}/claim",
            (200,),
            ("DELIVERY_ALREADY_CLAIMED", "INVALID_STATE"),
            headers=self.headers,
        )
        if not claimed:
            return
        for verb in ("pick-up", "deliver"):
            if not self.expect(
                "POST", f"/deliveries/{pick['id']}/{verb}", f"/deliveries/{{id}}/{verb}", (200,), headers=self.headers
            ):
                return
        self.position = (pick["dropoff"]["lat"], pick["dropoff"]["lon"])


# ------------------------------------------------------------------------------------ the shape


class LunchShape(LoadTestShape):
    """The lunch curve of loadtest/lunch.py: customers = wanted orders/s × seconds per journey
    (each customer places one order per journey), plus the fixed owners and riders."""

    use_common_options = False

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        if options is None:
            return None
        if RUN.setup_error:
            return None
        rate = _lunch(options).rate(self.get_run_time())  # type: ignore[no-untyped-call]
        if rate is None:
            return None
        customers = min(math.ceil(rate * options.customer_pacing), len(RUN.customers) or options.customers)
        return Owner.fixed_count + Rider.fixed_count + customers, 50.0


def _on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    Owner.fixed_count = max(options.owners, 1)
    Rider.fixed_count = max(options.riders, 1)


# ------------------------------------------------------------------------------------ the gate


def _settle(run: Run, admin: dict[str, str], timeout_s: float) -> tuple[list[dict[str, Any]], int, float]:
    """Poll the orders until every placed one is in its expected state, or the bound runs out.
    Returns our audit rows, how many are not where they should be, and the seconds it took."""
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    unsettled = len(run.placed)
    with httpx.Client(base_url=run.host, headers=admin, timeout=60.0) as client:
        while True:
            response = client.get("/admin/audit/orders")
            response.raise_for_status()
            rows = [r for r in response.json() if r["id"] in run.placed]
            seen = {r["id"]: r for r in rows}
            unsettled = sum(1 for oid, placed in run.placed.items() if not _expected(placed, seen.get(oid)))
            if unsettled == 0 or time.monotonic() - started > timeout_s:
                return rows, unsettled, time.monotonic() - started
            time.sleep(0.5)


def _expected(placed: Placed, row: dict[str, Any] | None) -> bool:
    """Where a placed order must be once the load stops: cancelled if its customer cancelled it;
    else accepted (or later) at an auto-accept restaurant; at a manual one, paid and waiting for its
    owner, accepted or later, or cancelled (rejected)."""
    if row is None:
        return False
    status = row["status"]
    if placed.cancelled:
        return bool(status == "CANCELLED")
    if placed.manual:
        return status in SETTLED_STATES
    return status in ACCEPTED_OR_LATER


def _audit(run: Run, admin_token: str) -> dict[str, Any] | None:
    """``baedal audit`` itself, as a process (locust monkey-patches this one's standard library)."""
    command = [sys.executable, "-m", "services", "audit", "--url", run.host, "--token", admin_token]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode not in (0, 1):
        log.error("baedal audit could not run: %s", done.stderr.strip())
        return None
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _gate(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    targets = Targets(
        options.max_failure_ratio, options.slo_orders_p99_ms, options.slo_menu_p99_ms, options.settle_timeout
    )
    stats = environment.stats
    figures = Figures(
        requests=stats.total.num_requests,
        failures=stats.total.num_failures,
        orders_placed=len(RUN.placed),
        exceptions=sum(e["count"] for e in environment.runner.exceptions.values()) if environment.runner else 0,
        setup_error=RUN.setup_error,
    )
    post_orders = stats.get("/orders", "POST")
    menu = stats.get("/restaurants/{id}/menu", "GET")
    if post_orders.num_requests:
        figures.orders_p99_ms = float(post_orders.get_response_time_percentile(0.99))
    if menu.num_requests:
        figures.menu_p99_ms = float(menu.get_response_time_percentile(0.99))
    rows: list[dict[str, Any]] = []
    if RUN.ready:
        admin_token = RUN.token(Role.ADMIN, f"{RUN.id}-admin")
        try:
            rows, figures.unsettled, figures.settled_after_s = _settle(
                RUN, {"Authorization": f"Bearer {admin_token}"}, options.settle_timeout
            )
            report = _audit(RUN, admin_token)
        except (httpx.HTTPError, subprocess.SubprocessError, ValueError) as exc:
            log.error("the gate could not read the platform: %s", exc)
            figures.unsettled, report = len(RUN.placed), None
        if report is not None:
            figures.audit_ok = bool(report["ok"])
            figures.audit_violations = len(report["violations"])
            figures.extra["audit"] = report
    figures.extra.update(_summary(environment, rows))
    failed = verdict(figures, targets)
    prefix = options.report_prefix or options.csv_prefix or "loadtest-lunch"
    _report(environment, figures, targets, failed, rows, Path(f"{prefix}_gate.json"), Path(f"{prefix}_plot.png"))
    environment.process_exit_code = 1 if failed else 0
    if RUN.setup_error:
        environment.process_exit_code = 2


def _summary(environment: Environment, rows: list[dict[str, Any]]) -> dict[str, Any]:
    stats = environment.stats
    elapsed = max((stats.total.last_request_timestamp or 0) - (stats.total.start_time or 0), 1e-9)
    saga_ms = [
        (_parse(r["accepted_at"]) - _parse(r["created_at"])) * 1000
        for r in rows
        if r["accepted_at"] and r["restaurant_id"] not in RUN.manual
    ]
    by_status = Counter(r["status"] for r in rows)
    per_request = {}
    for entry in sorted(stats.entries.values(), key=lambda e: (e.name, e.method or "")):
        per_request[f"{entry.method} {entry.name}"] = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p99_ms": entry.get_response_time_percentile(0.99),
        }
    return {
        "run_id": RUN.id,
        "duration_s": round(elapsed, 1),
        "requests_per_s": round(stats.total.num_requests / elapsed, 1),
        "orders_per_s": round(len(RUN.placed) / elapsed, 2),
        "failure_ratio": round(stats.total.fail_ratio, 6),
        "saga_auto_accept_ms": {p: percentile(saga_ms, q) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))},
        "orders_by_status": dict(sorted(by_status.items())),
        "normal_races": dict(RUN.counts),
        "requests": per_request,
    }


def _report(
    environment: Environment,
    figures: Figures,
    targets: Targets,
    failed: list[str],
    rows: list[dict[str, Any]],
    gate_path: Path,
    plot_path: Path,
) -> None:
    options = environment.parsed_options
    lunch = _lunch(options)
    gate_path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "passed": not failed,
        "failed": failed,
        "targets": asdict(targets),
        "figures": {k: v for k, v in asdict(figures).items() if k != "extra"}
        | {"failure_ratio": figures.failure_ratio},
        **figures.extra,
        "shape": {
            "duration_s": lunch.duration_s,
            "base_rate": lunch.base_rate,
            "phases": [asdict(p) for p in lunch.phases()],
        },
    }
    gate_path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    if RUN.started and RUN.samples:
        sagas = [
            Saga(
                _parse(r["created_at"]) - RUN.started_wall,
                (_parse(r["accepted_at"]) - _parse(r["created_at"])) * 1000 if r["accepted_at"] else None,
                r["restaurant_id"] in RUN.manual,
            )
            for r in rows
        ]
        window = max(lunch.duration_s / 60, 2.0)
        steps = [i * lunch.duration_s / 200 for i in range(200)]
        wanted = [(t, lunch.rate(t) or 0.0) for t in steps]
        title = (
            f"Baedal lunch rush {RUN.id}: {lunch.duration_s:.0f} s, base {lunch.base_rate:g} orders/s; "
            f"{'PASSED' if not failed else 'FAILED: ' + '; '.join(failed)}"
        )
        try:
            draw(RUN.samples, sagas, lunch.phases(), plot_path, title, window_s=window, wanted=wanted)
        except Exception as exc:  # a picture must not hide the verdict
            log.error("could not draw %s: %s", plot_path, exc)
    verdict_line = "PASSED" if not failed else "FAILED"
    summary = figures.extra
    log.info(
        "SLO gate %s: %d requests (%.1f/s), failure ratio %.4f%%, %d orders, POST /orders p99 %s ms, menu p99 %s ms, "
        "unsettled %d, audit %s",
        verdict_line,
        figures.requests,
        summary.get("requests_per_s", 0.0),
        figures.failure_ratio * 100,
        figures.orders_placed,
        figures.orders_p99_ms,
        figures.menu_p99_ms,
        figures.unsettled,
        "ok" if figures.audit_ok else figures.audit_ok,
    )
    for reason in failed:
        log.error("SLO gate: %s", reason)
    log.info("gate report %s, plot %s", gate_path, plot_path)


# ------------------------------------------------------------------------------------ hooks


def _listen(hook: Any, handler: Callable[..., Any]) -> None:
    hook.add_listener(handler)  # EventHook.add_listener is not annotated in locust


_listen(events.init_command_line_parser, _options)
_listen(events.test_start, _on_test_start)
_listen(events.request, _on_request)
_listen(events.init, _on_init)
_listen(events.quitting, _gate)
