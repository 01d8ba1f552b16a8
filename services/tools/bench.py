"""``baedal bench``: throughput and latency of the order saga, driven over HTTP like real clients.

Starts a fresh platform in its own process (or drives one at ``--url``), loads an auto-accept
catalog, funds customers (some of them, with ``--underfunded``, too little), places orders with
bounded concurrency (closed loop) or on a schedule (open loop) while ``--menu-readers`` clients read
menus, waits until every saga has settled, then runs the consistency audit, and reports the CPU each
process group used. What the figures mean: docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson

from services.entrypoints.bootstrap import drop_schemas
from services.payment.domain import MAX_TOP_UP
from services.runtime.auth import Role, TokenIssuer, load_secret
from services.runtime.clock import parse_iso
from services.runtime.failures import CouldNotRun, raise_if_unusable
from services.runtime.process import spawn_child
from services.tools.audit import audit

RESTAURANTS = 10
MENU_ITEMS = 10
DELIVERY_FEE = 3000
EXPRESS_FEE = 5000

# CANCELLING too: with auto-accept nothing should cancel, but if something does it is not settled.
IN_FLIGHT = frozenset({"PENDING", "PAID", "CANCELLING"})
# With auto-accept restaurants, an order is only cancelled when its payment is refused.
REFUSED = "CANCELLED"
# An underfunded customer's wallet gets this share of what their orders cost.
UNDERFUNDED_SHARE = 0.5
READY_TIMEOUT_S = 60.0
CATALOG_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.2
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Say = Callable[[str], None]
Rows = list[dict[str, Any]]
# Called with the order's index and the perf_counter time it was due to start.
Job = Callable[[int, float], Awaitable[None]]


class BenchError(CouldNotRun):
    """A run that cannot go on (platform not starting, catalog rejected, ...)."""


@dataclass(frozen=True)
class BenchConfig:
    orders: int = 2000
    concurrency: int = 64
    database_url: str | None = None
    url: str | None = None
    data_dir: Path | None = None
    customers: int = 200
    quiet: bool = False
    # Open loop: start orders at this many per second, as customers would, whatever the latency;
    # None: closed loop, each of ``concurrency`` clients sends its next order when one returns.
    rate: float | None = None
    # This share of the customers (0..1) gets only UNDERFUNDED_SHARE of what their orders cost.
    underfunded: float = 0.0
    # Clients reading GET /restaurants/{id}/menu back to back for the whole placement phase.
    menu_readers: int = 0

    @property
    def underfunded_customers(self) -> int:
        share = round(self.customers * self.underfunded)
        return max(share, 1) if self.underfunded > 0 else 0


@dataclass
class Target:
    """The platform under test; ``pid`` is None when it cannot be found (remote ``--url``)."""

    url: str
    data_dir: Path
    pid: int | None
    peak_rss_mb: float | None = None


@dataclass
class Placement:
    # From the time each order was due (open loop: start + i / rate) until its 202.
    latencies_ms: list[float] = field(default_factory=list)
    # From the time its request was actually sent until its 202.
    service_ms: list[float] = field(default_factory=list)
    order_ids: set[str] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    rss_mb_samples: list[float | None] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(self.failures.values())


@dataclass
class MenuReads:
    """What the ``--menu-readers`` clients saw while the orders were being placed."""

    readers: int
    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        reads = len(self.latencies_ms)
        return {
            "readers": self.readers,
            "reads": reads,
            "reads_per_s": round(reads / self.wall_s, 1) if self.wall_s > 0 else None,
            "latency_ms": _percentiles(self.latencies_ms),
            "errors": sum(self.failures.values()),
        }


@dataclass
class Run:
    """Everything a run measured, before it becomes figures."""

    placement: Placement
    menu: MenuReads | None
    rows: Rows
    violations: int
    cpu: dict[str, Any]


# ------------------------------------------------------------------------------------ entry point


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    """The figures of one run (see the module docstring). A run that cannot go on raises
    :class:`CouldNotRun` (:class:`BenchError`, a missing secret) or :class:`httpx.HTTPError`."""
    say = _reporter(config.quiet)
    if config.orders < 1 or config.concurrency < 1 or config.customers < 1:
        raise BenchError("--orders, --concurrency and --customers must be at least 1")
    if not 0 <= config.underfunded <= 1 or config.menu_readers < 0:
        raise BenchError("--underfunded must be between 0 and 1, and --menu-readers at least 0")
    async with _platform(config, say) as target:
        run = await _drive(config, target, say)
    return _result(config, target, run)


async def _drive(config: BenchConfig, target: Target, say: Say) -> Run:
    tokens = TokenIssuer(load_secret(target.data_dir))  # created by the platform: a new one would not do
    customers = [f"bench-c{i}" for i in range(config.customers)]
    auth = {c: {"Authorization": f"Bearer {tokens.issue(Role.CUSTOMER, c)}"} for c in customers}
    # uvicorn closes connections idle for 5 s, httpx's default expiry is also 5 s: reusing one in that
    # race is a ReadError on a POST we cannot safely retry. Expire first.
    limits = httpx.Limits(
        max_connections=config.concurrency, max_keepalive_connections=config.concurrency, keepalive_expiry=2.0
    )
    admin = {"Authorization": f"Bearer {tokens.issue(Role.ADMIN, 'bench')}"}
    # Admin is the default; customer calls override the header per request.
    async with httpx.AsyncClient(base_url=target.url, headers=admin, limits=limits, timeout=120.0) as client:
        await _load_catalog(client, say)
        await _fund(client, config, customers, auth, say)
        postgres = config.database_url is not None
        cpu_before = CpuSnapshot.take(target.pid, postgres)
        async with _menu_readers(target.url, config.menu_readers) as menu:
            placement = await _place(target.url, config, customers, auth, target.pid, say)
        rows = await _settle(client, placement.order_ids, say)
        cpu = CpuSnapshot.take(target.pid, postgres).figures(cpu_before, config.orders)
        say(_cpu_line(cpu))
        say("auditing")
        report = await audit(client)
    for violation in report["violations"][:10]:
        say(f"violation: {violation}")
    return Run(placement, menu, rows, len(report["violations"]), cpu)


# ------------------------------------------------------------------------------------ the platform


@asynccontextmanager
async def _platform(config: BenchConfig, say: Say) -> AsyncIterator[Target]:
    if config.url:
        target = _existing(config)
        yield target
        target.peak_rss_mb = _proc_mb(target.pid, "VmHWM")
        return
    prefix = f"bench_{secrets.token_hex(4)}_" if config.database_url else None
    with tempfile.TemporaryDirectory(prefix="baedal-bench-") as tmp:
        data_dir = Path(tmp)
        port = _free_port()
        log_path = data_dir / "server.log"
        with log_path.open("wb") as log_file:
            proc = _spawn(config, port, data_dir, prefix, log_file)
            target = Target(f"http://127.0.0.1:{port}", data_dir, proc.pid)
            say(f"platform pid {proc.pid} on {target.url} ({_backend(config)}), data dir {data_dir}")
            try:
                await _wait_ready(target.url, proc, log_path)
                yield target
            finally:
                # VmHWM is gone once the process exits, so read it first.
                target.peak_rss_mb = _proc_mb(proc.pid, "VmHWM")
                _stop(proc)
                if config.database_url and prefix:
                    await _drop_schemas(config.database_url, prefix)


def _existing(config: BenchConfig) -> Target:
    assert config.url is not None
    data_dir = config.data_dir or Path(os.environ.get("BAEDAL_DATA_DIR", ".baedal"))
    return Target(config.url.rstrip("/"), data_dir, _listener_pid(config.url))


def _spawn(
    config: BenchConfig, port: int, data_dir: Path, prefix: str | None, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "services", "up", "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--log-level", "warning"]
    env = {**os.environ, "BAEDAL_LOAD_DEMO": "false"}
    if config.database_url and prefix:
        command += ["--database-url", config.database_url]
        env["BAEDAL_SCHEMA_PREFIX"] = prefix
    else:
        env.pop("BAEDAL_DATABASE_URL", None)  # else the "SQLite" run would silently use PostgreSQL
    return spawn_child(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise _gave_up(f"the platform exited with {proc.returncode}", log_path)
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
    raise _gave_up(f"the platform was not ready within {READY_TIMEOUT_S:.0f}s", log_path)


def _gave_up(reason: str, log_path: Path, lines: int = 12) -> BenchError:
    """The platform's last log lines on stderr (its data dir is about to go), then the error:
    one line, like every other reason the bench could not run."""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    print("\n".join(f"[platform] {line}" for line in tail), file=sys.stderr, flush=True)
    return BenchError(f"{reason} (its last log lines are above)")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # Blocking on purpose: this runs in ``finally``, possibly while the run is being cancelled.
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _drop_schemas(url: str, prefix: str) -> None:
    """Best effort: a failure here must not hide the run's own outcome or error."""
    try:
        await drop_schemas(url, prefix)
    except Exception as exc:
        print(f"warning: could not drop the schemas {prefix}*: {exc}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ /proc


def _proc_mb(pid: int | None, key: str) -> float | None:
    """A memory figure (VmRSS, VmHWM) of a process in MB, or None if it cannot be read."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class ProcessStat:
    """One line of /proc/<pid>/stat: its parent, its name, and the CPU seconds it and its reaped
    children have used so far (a worker that exits between two snapshots is still counted)."""

    ppid: int
    comm: str
    cpu_s: float


@dataclass(frozen=True)
class Group:
    """CPU seconds used so far by a group of processes, and how many there were."""

    cpu_s: float
    processes: int


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the server's process tree, by this process (the bench client), by
    PostgreSQL (every ``postgres`` process) and by the whole machine, at a wall-clock time. The bench
    shares the cores with all of them (and with anything else running), so all of them matter."""

    at: float
    server: Group | None
    client: float
    postgres: Group | None
    machine: float | None

    @classmethod
    def take(cls, pid: int | None, postgres: bool) -> CpuSnapshot:
        table = _process_table()
        tree = _tree(table, pid) if pid in table else set()
        server = _group(table, tree) if tree else None
        others = {p for p, stat in table.items() if stat.comm == "postgres"} - tree
        pg = _group(table, others) if postgres and others else None
        return cls(time.perf_counter(), server, time.process_time(), pg, _machine_busy_s())

    def figures(self, before: CpuSnapshot, orders: int) -> dict[str, Any]:
        """Per group between ``before`` and now: CPU seconds, their share of the wall time (1.0 is one
        full core) and per order; "other" is the machine's busy time minus every group above."""
        wall = self.at - before.at
        server = _spent(self.server, before.server)
        postgres = _spent(self.postgres, before.postgres)
        client = self.client - before.client
        figures: dict[str, Any] = {"wall_s": round(wall, 1), "cores": os.cpu_count()}
        figures["server"] = _usage(server, wall, orders)
        figures["client"] = _usage(Group(client, 1), wall, orders)
        figures["postgres"] = _usage(postgres, wall, orders)
        if self.machine is not None and before.machine is not None:
            known = client + sum(g.cpu_s for g in (server, postgres) if g)
            figures["other"] = _usage(Group(max(self.machine - before.machine - known, 0.0), 0), wall, orders)
        else:
            figures["other"] = None
        return figures


def _spent(now: Group | None, then: Group | None) -> Group | None:
    if now is None or then is None:
        return None
    return Group(max(now.cpu_s - then.cpu_s, 0.0), now.processes)


def _usage(group: Group | None, wall_s: float, orders: int) -> dict[str, Any] | None:
    if group is None:
        return None
    usage: dict[str, Any] = {
        "cpu_s": round(group.cpu_s, 2),
        "share": round(group.cpu_s / wall_s, 3) if wall_s > 0 else None,
        "ms_per_order": round(group.cpu_s / orders * 1000, 3),
    }
    if group.processes:
        usage["processes"] = group.processes
    return usage


def _cpu_line(cpu: dict[str, Any]) -> str:
    names = {"server": "server", "client": "bench client", "postgres": "postgres", "other": "everything else"}
    parts = []
    for key, name in names.items():
        if usage := cpu[key]:
            parts.append(
                f"{name} {usage['cpu_s']:.1f}s ({usage['share']:.0%} of a core, {usage['ms_per_order']:.2f} ms/order)"
            )
    return f"CPU used while placing and until settled ({cpu['wall_s']:.1f}s): " + ", ".join(parts)


def _process_table() -> dict[int, ProcessStat]:
    """Every process visible in /proc (those that exit while it is read are left out)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _process_stat(entry / "stat")):
            table[int(entry.name)] = stat
    return table


def _process_stat(path: Path) -> ProcessStat | None:
    try:
        text = path.read_text()
        # The fields after the parenthesised name: ppid is the 2nd; utime, stime, cutime, cstime the 12th–15th.
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 1 :].split()
        ticks = sum(int(t) for t in rest[11:15])
        return ProcessStat(int(rest[1]), comm, ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _tree(table: dict[int, ProcessStat], root: int | None) -> set[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    tree: set[int] = set()
    todo = [root] if root is not None else []
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def _group(table: dict[int, ProcessStat], pids: Iterable[int]) -> Group:
    members = [table[p] for p in pids]
    return Group(sum(m.cpu_s for m in members), len(members))


def _machine_busy_s() -> float | None:
    """Non-idle CPU seconds of all cores since boot (/proc/stat)."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return None


def _listener_pid(url: str) -> int | None:
    """The local process listening on the URL's port (via socket inodes in /proc), if visible."""
    parts = urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue  # another user's process, or it just exited
        if links & inodes:
            return int(proc.name)
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    return inodes


# ------------------------------------------------------------------------------------ workload


def _price(item: int) -> int:
    return 5000 + 1000 * item


def _manifest(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "baedal.io/v1",
        "kind": "Restaurant",
        "metadata": {"name": f"bench-r{index}"},
        "spec": {
            "displayName": f"Bench Kitchen {index}",
            "open": True,
            "autoAccept": True,
            "acceptTimeoutSeconds": 300,
            "location": {"lat": 37.5 + index / 1000, "lon": 127.0 + index / 1000},
            "deliveryFee": DELIVERY_FEE,
            "expressFee": EXPRESS_FEE,
            "owners": ["bench-owner"],
            "menu": [{"id": f"item-{k}", "name": f"Item {k}", "price": _price(k)} for k in range(MENU_ITEMS)],
        },
    }


def _order_body(index: int) -> dict[str, Any]:
    """Order ``index``: restaurant round-robin, two distinct lines that vary with the index."""
    first, second = index % MENU_ITEMS, (index + 3) % MENU_ITEMS
    lines = [(f"item-{first}", 1, _price(first)), (f"item-{second}", 2, _price(second))]
    return {
        "restaurant_id": f"bench-r{index % RESTAURANTS}",
        "items": [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in lines],
        "delivery": {"address": "서울 강남구 테헤란로 1", "lat": 37.5, "lon": 127.03, "express": False},
        "payment": {"method": "wallet"},
        "total_price": sum(q * u for _, q, u in lines) + DELIVERY_FEE,
    }


async def _paced(count: int, rate: float, concurrency: int, job: Job) -> None:
    """Run job(i, due) with due = start + i / rate (open loop), with at most ``concurrency`` in flight.
    ``due`` is the schedule, not when the job could start: when the cap or a stalled event loop
    delays a start, the job's latency counted from ``due`` includes that delay (no coordinated
    omission)."""
    slots = asyncio.Semaphore(concurrency)
    start = time.perf_counter()

    async def run(index: int, due: float) -> None:
        try:
            await job(index, due)
        finally:
            slots.release()

    tasks = []
    for index in range(count):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(run(index, due)))
    await asyncio.gather(*tasks)


async def _pool(count: int, concurrency: int, job: Job) -> None:
    """Run job(0..count-1) with at most ``concurrency`` in flight (workers share one iterator); in a
    closed loop a job is due when a worker takes it."""
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            await job(index, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))


async def _load_catalog(client: httpx.AsyncClient, say: Say) -> None:
    for index in range(RESTAURANTS):
        response = raise_if_unusable(await client.post("/admin/restaurants", json=_manifest(index)))
        if not response.is_success:
            raise BenchError(f"manifest bench-r{index} rejected: {response.status_code} {response.text}")
    # The order service validates against its own read store, which catalog events fill asynchronously.
    deadline = time.monotonic() + CATALOG_TIMEOUT_S
    for index in range(RESTAURANTS):
        while (await client.get(f"/restaurants/bench-r{index}/menu")).status_code != 200:
            if time.monotonic() > deadline:
                raise BenchError(f"bench-r{index} did not reach the order service's menu within {CATALOG_TIMEOUT_S}s")
            await asyncio.sleep(0.05)
    say(f"catalog: {RESTAURANTS} auto-accept restaurants with {MENU_ITEMS} items each")


async def _fund(
    client: httpx.AsyncClient, config: BenchConfig, customers: Sequence[str], auth: dict[str, dict[str, str]], say: Say
) -> None:
    funds = _funds(config, customers)
    top_ups = [(c, min(MAX_TOP_UP, left)) for c, total in funds.items() for left in range(total, 0, -MAX_TOP_UP)]

    async def top_up(index: int, _due: float) -> None:
        customer, amount = top_ups[index]
        response = await client.post(f"/wallets/{customer}/top-ups", json={"amount": amount}, headers=auth[customer])
        if response.status_code != 200:
            raise BenchError(f"top-up of {customer} failed: {response.status_code} {response.text}")

    await _pool(len(top_ups), config.concurrency, top_up)
    short = f", {config.underfunded_customers} of them with too little" if config.underfunded_customers else ""
    say(f"funded {len(funds)} customers with {sum(funds.values()):,} KRW{short}")


def _funds(config: BenchConfig, customers: Sequence[str]) -> Counter[str]:
    """Per customer, what their orders cost; the first ``underfunded_customers`` get only
    UNDERFUNDED_SHARE of it (their orders take turns with everyone's, so refusals spread over the run)."""
    needed = Counter[str]()
    for index in range(config.orders):
        needed[customers[index % len(customers)]] += _order_body(index)["total_price"]
    for customer in customers[: config.underfunded_customers]:
        needed[customer] = int(needed[customer] * UNDERFUNDED_SHARE)
    return needed


async def _place(
    url: str,
    config: BenchConfig,
    customers: Sequence[str],
    auth: dict[str, dict[str, str]],
    pid: int | None,
    say: Say,
) -> Placement:
    result = Placement()
    checkpoints = {math.ceil(config.orders * q / 4) for q in (1, 2, 3, 4)}
    started = time.perf_counter()

    # The load itself goes through aiohttp: httpx spent ~4 ms of CPU per order here, more than the
    # server, so on 2 cores the client, not the platform, set the pace.
    connector = aiohttp.TCPConnector(limit=config.concurrency, keepalive_timeout=2.0)
    session = aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120))
    bodies = [orjson.dumps(_order_body(index)) for index in range(config.orders)]

    async def place(index: int, due: float) -> None:
        customer = customers[index % len(customers)]
        headers = {**auth[customer], "Content-Type": "application/json"}
        sent = time.perf_counter()
        try:
            async with session.post("/orders", data=bodies[index], headers=headers) as response:
                await response.read()
                status, location = response.status, response.headers.get("location", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.failures[type(exc).__name__] += 1
        else:
            if status == 202:
                answered = time.perf_counter()
                result.latencies_ms.append((answered - due) * 1000)
                result.service_ms.append((answered - sent) * 1000)
                # The Location header carries the id; cheaper than parsing the body.
                result.order_ids.add(location.rsplit("/", 1)[-1])
            else:
                result.failures[f"HTTP {status}"] += 1
        done = len(result.latencies_ms) + result.errors
        if done in checkpoints:
            result.rss_mb_samples.append(_proc_mb(pid, "VmRSS"))
            elapsed = time.perf_counter() - started
            rss = result.rss_mb_samples[-1]
            say(f"placed {done}/{config.orders} in {elapsed:.1f}s ({done / elapsed:.0f}/s), server RSS {rss} MB")

    async with session:
        if config.rate:
            await _paced(config.orders, config.rate, config.concurrency, place)
        else:
            await _pool(config.orders, config.concurrency, place)
    result.wall_s = time.perf_counter() - started
    if result.failures:
        say(f"placement errors: {dict(result.failures)}")
    return result


@asynccontextmanager
async def _menu_readers(url: str, readers: int) -> AsyncIterator[MenuReads | None]:
    """``readers`` clients reading menus back to back (round-robin over the restaurants) for as long
    as the block runs; None when there are none."""
    if readers < 1:
        yield None
        return
    reads, stop = MenuReads(readers), asyncio.Event()
    connector = aiohttp.TCPConnector(limit=readers, keepalive_timeout=2.0)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        tasks = [asyncio.create_task(_read_menus(session, reader, reads, stop)) for reader in range(readers)]
        try:
            yield reads
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            reads.wall_s = time.perf_counter() - started


async def _read_menus(session: aiohttp.ClientSession, reader: int, reads: MenuReads, stop: asyncio.Event) -> None:
    index = reader
    while not stop.is_set():
        sent = time.perf_counter()
        try:
            async with session.get(f"/restaurants/bench-r{index % RESTAURANTS}/menu") as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reads.failures[type(exc).__name__] += 1
            await asyncio.sleep(POLL_S)  # not a busy loop against a platform that is gone
        else:
            if status == 200:
                reads.latencies_ms.append((time.perf_counter() - sent) * 1000)
            else:
                reads.failures[f"HTTP {status}"] += 1
        index += 1


async def _settle(client: httpx.AsyncClient, order_ids: set[str], say: Say) -> Rows:
    """Wait until no event is due and none of our orders is mid-saga; return their audit rows."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    rows: Rows = []
    last_report = 0.0
    while True:
        # The Dapr gateway has no backlog endpoint (the brokers hold the queues): there, settled
        # means that none of our orders is mid-saga any more.
        backlog = await _get_optional(client, "/admin/backlog") or {"settled": True, "backlog": {}}
        if backlog["settled"]:
            rows = [r for r in await _get(client, "/admin/audit/orders") if r["id"] in order_ids]
            if not any(r["status"] in IN_FLIGHT for r in rows):
                return rows
        if time.monotonic() > deadline:
            say(f"not settled after {SETTLE_TIMEOUT_S:.0f}s; auditing anyway")
            return rows or [r for r in await _get(client, "/admin/audit/orders") if r["id"] in order_ids]
        if time.monotonic() - last_report > 2.0:
            last_report = time.monotonic()
            due = {name: c["due"] for name, c in backlog["backlog"].items()}
            say(f"settling: events due {due}")
        await asyncio.sleep(POLL_S)


async def _get_optional(client: httpx.AsyncClient, path: str) -> Any:
    """Like :func:`_get`, but None when the platform has no such endpoint (404)."""
    response = await client.get(path)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise BenchError(f"GET {path}: {response.status_code} {response.text}")
    return response.json()


async def _get(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    if response.status_code != 200:
        raise BenchError(f"GET {path}: {response.status_code} {response.text}")
    return response.json()


# ------------------------------------------------------------------------------------ figures


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p95/p99 (None when there is nothing to rank)."""
    ranked = sorted(values)

    def rank(p: int) -> float | None:
        return round(ranked[max(math.ceil(p / 100 * len(ranked)) - 1, 0)], 1) if ranked else None

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99)}


@dataclass(frozen=True)
class Sagas:
    """Saga latencies (ms) on each path, and finished sagas per second."""

    accepted_ms: list[float]
    refused_ms: list[float]
    per_s: float | None


def _sagas(rows: Rows) -> Sagas:
    """Per order that reached a final state of its saga, from created_at until then: ACCEPTED
    (accepted_at) or CANCELLED after a refused payment (updated_at, as nothing moves it later); and
    those orders per second of the whole run (first order created → last saga finished)."""
    accepted: list[tuple[datetime, datetime]] = []
    refused: list[tuple[datetime, datetime]] = []
    for row in rows:
        span = _saga_span(row)
        if span is not None:
            (accepted if row["accepted_at"] else refused).append(span)
    finished = accepted + refused
    if not finished:
        return Sagas([], [], None)
    window = (max(end for _, end in finished) - min(parse_iso(r["created_at"]) for r in rows)).total_seconds()
    return Sagas(
        [_ms(span) for span in accepted],
        [_ms(span) for span in refused],
        round(len(finished) / window, 1) if window > 0 else None,
    )


def _saga_span(row: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """(created, finished) of an order whose saga has finished, else None."""
    if row["accepted_at"]:
        return parse_iso(row["created_at"]), parse_iso(row["accepted_at"])
    if row["status"] == REFUSED:
        return parse_iso(row["created_at"]), parse_iso(row["updated_at"])
    return None


def _ms(span: tuple[datetime, datetime]) -> float:
    return (span[1] - span[0]).total_seconds() * 1000


def _result(config: BenchConfig, target: Target, run: Run) -> dict[str, Any]:
    sagas, placement = _sagas(run.rows), run.placement
    return {
        "orders": config.orders,
        "sagas_per_s": sagas.per_s,
        "placement_ms": _percentiles(placement.latencies_ms),
        "service_ms": _percentiles(placement.service_ms),
        "saga_ms": _percentiles(sagas.accepted_ms),
        "refused_saga_ms": _percentiles(sagas.refused_ms),
        "violations": run.violations,
        "peak_rss_mb": target.peak_rss_mb,
        "backend": _backend(config),
        "concurrency": config.concurrency,
        "rate": config.rate,
        "errors": placement.errors,
        "accepted": len(sagas.accepted_ms),
        "refused": len(sagas.refused_ms),
        "underfunded": config.underfunded,
        "underfunded_customers": config.underfunded_customers,
        "placement_s": round(placement.wall_s, 1),
        "rss_mb_samples": placement.rss_mb_samples,
        "menu_reads": run.menu.figures() if run.menu else None,
        "cpu": run.cpu,
    }


def _backend(config: BenchConfig) -> str:
    if config.database_url:
        return "postgresql"
    return "unknown" if config.url else "sqlite"  # a running platform's backend is not visible over HTTP


def _reporter(quiet: bool) -> Say:
    def say(message: str) -> None:
        if not quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    return say
