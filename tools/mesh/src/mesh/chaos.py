"""`mesh chaos`: the mesh under load while faults are injected, and what its data looks like after.

A mesh of its own (free ports, a PostgreSQL of its own that it may restart), kept by the same
supervisor as `mesh up`. Clients place orders without pause, each with its own Idempotency-Key,
retrying the same key on connection errors, timeouts and 5xx (after Retry-After), as a careful
client does; a few others log in at identity over and over. The faults come one after the other,
each once the mesh serves again:

- a graceful restart of orders (`mesh restart`: new processes first, the old ones drain);
- SIGKILL of one of orders' gunicorn workers (mid-request, under load);
- SIGKILL of catalog's gunicorn master (its workers orphaned; the supervisor restarts it);
- a PostgreSQL restart (every connection cut);
- identity's app frozen (SIGSTOP of its gunicorn master and workers) for a while, then resumed:
  its sidecar answers logins (meshauth.sidecar.stall), and gunicorn keeps its workers on resume.

Per fault: the orders and the logins that ended in its window, their outcomes, latencies, and
how long clients kept seeing failures after the fault. Then the invariants: stock conserved per
sku (on sale + held + sold = the start), nothing sold that is not a confirmed order, every 201
stored, one order per key, no stock held once the bound has passed, no worker killed for a missed
heartbeat, and no process left once it is over.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg2

from mesh.bootstrap import drop_database
from mesh.fleet import Fleet
from mesh.postgres import EmbeddedPostgres
from mesh.registry import Registry
from mesh.supervisor import Supervisor
from mesh.watchdog import guard_postgres
from meshcontract import READYZ

__all__ = ["ChaosConfig", "ChaosReport", "format_report", "run_chaos"]

PASSWORD = "chaos monkey battery staple"  # noqa: S105 - throwaway users of a throwaway database
# Seeded products whose stock the run sets high, so orders are refused for faults, not for stock.
SKUS = ("MUG-001", "PEN-101", "BAG-204")
START_STOCK = 1_000_000


@dataclass(frozen=True)
class ChaosConfig:
    clients: int = 16
    baseline: float = 10.0  # seconds of load before the first fault
    window: float = 20.0  # seconds of load after each fault once the mesh serves again
    freeze: float = 30.0  # seconds identity's app stays frozen
    login_clients: int = 2  # clients logging in at identity, one login every half second each
    identity_gunicorn_timeout: int = 30  # identity's GUNICORN_TIMEOUT: the freeze outlasts it
    stall_timeout: float = 10.0  # identity's sidecar: silence before its app counts as stalled
    reservation_ttl: float = 20.0  # catalog's lease: the bound on stock held by a dead attempt
    catalog_timeout: float = 5.0  # orders' read timeout towards catalog (CATALOG_TIMEOUT)
    give_up_after: float = 180.0  # a client's deadline for one order, retries included
    workers: int = 2


@dataclass
class Attempt:
    started: float
    seconds: float
    outcome: str  # "2xx", "4xx", "5xx", "conn" (refused, reset, closed), "timeout" (the client's, 15 s)
    status: int = 0
    detail: str = ""  # a 5xx's status and body, to tell its cause


FAILURES = ("5xx", "conn", "timeout")


@dataclass
class Outcomes:
    """What one kind of client (placing orders, logging in) saw in one fault's window."""

    at: float
    attempts: list[Attempt] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for a in self.attempts if a.outcome == outcome)

    def percentile(self, q: float) -> float:
        times = sorted(a.seconds for a in self.attempts)
        if not times:
            return 0.0
        return times[min(len(times) - 1, math.ceil(q * len(times)) - 1)] * 1000

    @property
    def recovery(self) -> float:
        """Seconds from the fault to the end of the last failed attempt (0: nobody noticed)."""
        failed = [a.started + a.seconds for a in self.attempts if a.outcome in FAILURES]
        return max(failed) - self.at if failed else 0.0


@dataclass
class Row:
    fault: str
    at: float
    orders: Outcomes
    logins: Outcomes
    lasted: float = 0.0  # seconds the fault itself took (a restart, a freeze); recovery includes them


@dataclass
class ChaosReport:
    rows: list[Row]
    invariants: list[tuple[str, bool, str]]
    orders: int
    seconds: float

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.invariants)


# -- the load ------------------------------------------------------------------------------------


@dataclass
class _Load:
    fleet: Fleet
    config: ChaosConfig
    stop: threading.Event = field(default_factory=threading.Event)
    attempts: list[Attempt] = field(default_factory=list)
    logins: list[Attempt] = field(default_factory=list)
    created: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # key -> order ids
    unfinished: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, started: float, outcome: str, status: int = 0, detail: str = "", kind: str = "order"
    ) -> None:
        attempt = Attempt(started, time.monotonic() - started, outcome, status, detail)
        with self.lock:
            (self.logins if kind == "login" else self.attempts).append(attempt)

    def client(self, token: str) -> None:
        with httpx.Client(timeout=httpx.Timeout(15.0, connect=5.0)) as http:
            while not self.stop.is_set():
                self.place(http, token)

    def place(self, http: httpx.Client, token: str) -> None:
        key = uuid.uuid4().hex
        skus = random.sample(SKUS, random.randint(1, 2))  # noqa: S311 - load shape, not secrets
        body = {"items": [{"sku": sku, "qty": random.randint(1, 3)} for sku in skus]}  # noqa: S311
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
        deadline = time.monotonic() + self.config.give_up_after
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = http.post(f"{self.fleet.url('orders')}/api/v1/orders", json=body, headers=headers)
            except httpx.TimeoutException:
                self.record(started, "timeout")
                continue
            except httpx.TransportError:
                # Refused, reset, closed without an answer: what a careless restart causes.
                self.record(started, "conn")
                time.sleep(0.5)
                continue
            status = response.status_code
            detail = "" if status < 500 else f"{status} {response.text[:120]}"
            self.record(started, f"{status // 100}xx", status, detail)
            if status == 201:
                with self.lock:
                    self.created[key].add(response.json()["id"])
                return
            retry_after = _retry_after(response)
            if status == 409 and "in progress" in response.text:
                time.sleep(retry_after or 1.0)
            elif status >= 500:
                time.sleep(min(retry_after or 0.5, 5.0))
            else:
                return  # a definite no (e.g. out of stock): nothing to retry
        with self.lock:
            self.unfinished.append(key)

    def login(self, credentials: dict[str, str]) -> None:
        """Log in over and over, as users do; a failed login is not retried sooner (a person waits)."""
        with httpx.Client(timeout=httpx.Timeout(15.0, connect=5.0)) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = http.post(f"{self.fleet.url('identity')}/api/v1/auth/token", json=credentials)
                except httpx.TimeoutException:
                    self.record(started, "timeout", kind="login")
                except httpx.TransportError:
                    self.record(started, "conn", kind="login")
                else:
                    status = response.status_code
                    detail = "" if status < 500 else f"{status} {response.text[:120]}"
                    self.record(started, f"{status // 100}xx", status, detail, kind="login")
                self.stop.wait(0.5)


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", "0"))
    except ValueError:
        return 0.0


def _signup(fleet: Fleet) -> dict[str, str]:
    email = f"chaos-{uuid.uuid4().hex[:10]}@example.com"
    credentials = {"email": email, "password": PASSWORD}
    httpx.post(f"{fleet.url('identity')}/api/v1/auth/signup", json=credentials, timeout=30).raise_for_status()
    return credentials


def _login(fleet: Fleet) -> str:
    response = httpx.post(f"{fleet.url('identity')}/api/v1/auth/token", json=_signup(fleet), timeout=30)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


# -- faults --------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command may hold spaces and parentheses: the ppid is the 2nd field after the last ")".
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _kill_worker(fleet: Fleet, name: str) -> None:
    master = fleet.processes[name][0]
    workers = _children(master.pid)
    if not workers:
        raise RuntimeError(f"{name} has no gunicorn worker to kill")
    os.kill(random.choice(workers), signal.SIGKILL)  # noqa: S311


def _freeze_app(fleet: Fleet, name: str, signum: int) -> None:
    # The app container (gunicorn's process group: master and workers), not its sidecar.
    fleet.processes[name][0].kill_group(signum)


# -- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _private_postgres() -> Iterator[EmbeddedPostgres]:
    # Outside pytest's tmp tree, whose mode other sessions reset (PostgreSQL runs as its own user).
    home = Path(tempfile.mkdtemp(prefix="mesh-chaos-"))
    server = EmbeddedPostgres(home)
    watchdog = None
    try:
        server.start()
        watchdog = guard_postgres(home, home / "watchdog.log")
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        if watchdog is not None and watchdog.stdin is not None:
            watchdog.stdin.close()
            watchdog.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def run_chaos(
    registry: Registry, config: ChaosConfig, say: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    started = time.monotonic()
    with _private_postgres() as postgres, tempfile.TemporaryDirectory(prefix="mesh-chaos-run-") as run:
        fleet = Fleet(
            registry=registry,
            admin_url=postgres.admin_url(),
            database="chaos",
            run_dir=Path(run),
            workers=config.workers,
            fixed_ports=False,
            service_env={
                "catalog": {"CATALOG_RESERVATION_TTL": str(config.reservation_ttl)},
                "orders": {"CATALOG_TIMEOUT": str(config.catalog_timeout)},
                "identity": {
                    "GUNICORN_TIMEOUT": str(config.identity_gunicorn_timeout),
                    "MESHAUTH_SIDECAR_STALL_TIMEOUT": str(config.stall_timeout),
                },
            },
        )
        supervisor = Supervisor(fleet, say=say)
        pids: list[int] = []
        try:
            # Hold the ports now: free ephemeral ports left unbound through the bootstrap and the
            # migrations can be taken by any outgoing connection meanwhile.
            fleet.listen()
            say("starting the mesh (its own PostgreSQL, free ports)")
            fleet.up(progress=say, seed=True)
            supervisor = Supervisor(fleet, say=say)
            initial = _prepare_stock(fleet)
            rows, load = _run_faults(fleet, supervisor, postgres, config, say)
            pids = _pids(fleet)
            say("load stopped; waiting for held stock to come back (the lease bound)")
            invariants = _check(fleet, initial, load, config, supervisor)
            invariants.append(_no_worker_timeout(Path(run)))
        finally:
            pids = pids or _pids(fleet)
            supervisor.stop()
            with contextlib.suppress(Exception):
                drop_database(fleet.admin_url, fleet.database)
        left = [pid for pid in pids if _alive(pid, deadline=time.monotonic() + 30)]
        invariants.append(("no process left behind", not left, f"{len(pids)} started, {len(left)} left"))
    orders = sum(len(ids) for ids in load.created.values())
    return ChaosReport(rows, invariants, orders, time.monotonic() - started)


def _run_faults(
    fleet: Fleet,
    supervisor: Supervisor,
    postgres: EmbeddedPostgres,
    config: ChaosConfig,
    say: Callable[[str], None],
) -> tuple[list[Row], _Load]:
    load = _Load(fleet, config)
    tokens = [_login(fleet) for _ in range(config.clients)]
    threads = [threading.Thread(target=load.client, args=(token,), daemon=True) for token in tokens]
    users = [_signup(fleet) for _ in range(config.login_clients)]
    threads += [threading.Thread(target=load.login, args=(user,), daemon=True) for user in users]
    for thread in threads:
        thread.start()
    say(f"{config.clients} clients placing orders, {config.login_clients} logging in")

    def during(seconds: float) -> None:
        # The supervisor runs on this thread (it starts the processes); the clients on theirs.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            supervisor.tick()
            time.sleep(0.2)

    def serving() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            supervisor.tick()
            if all(_ready(fleet.url(s.name)) for s in fleet.services):
                return
            time.sleep(0.2)

    def graceful() -> None:
        supervisor.replace("orders")

    def freeze() -> None:
        _freeze_app(fleet, "identity", signal.SIGSTOP)
        try:
            during(config.freeze)
        finally:
            _freeze_app(fleet, "identity", signal.SIGCONT)

    faults: list[tuple[str, Callable[[], None]]] = [
        ("baseline (no fault)", lambda: None),
        ("graceful restart of orders", graceful),
        ("SIGKILL an orders worker", lambda: _kill_worker(fleet, "orders")),
        ("SIGKILL catalog's master", lambda: os.kill(fleet.processes["catalog"][0].pid, signal.SIGKILL)),
        ("PostgreSQL restart", postgres.restart),
        (f"identity's app frozen {config.freeze:.0f} s", freeze),
    ]
    rows = []
    try:
        during(config.baseline)
        for name, inject in faults:
            say(f"fault: {name}")
            at = time.monotonic()
            row = Row(name, at, Outcomes(at), Outcomes(at))
            inject()
            row.lasted = time.monotonic() - at
            serving()
            during(config.window)
            rows.append(row)
    finally:
        load.stop.set()
        for thread in threads:
            # A client may be sleeping out a Retry-After or finishing its retries.
            thread.join(config.give_up_after + 30)
    ends = [row.at for row in rows[1:]] + [math.inf]
    # An attempt counts where it ended: one in flight when a fault struck belongs to that fault.
    for row, end in zip(rows, ends, strict=True):
        row.orders.attempts = [a for a in load.attempts if row.at <= a.started + a.seconds < end]
        row.logins.attempts = [a for a in load.logins if row.at <= a.started + a.seconds < end]
    return rows, load


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}{READYZ}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- the data ------------------------------------------------------------------------------------


def _database_url(fleet: Fleet) -> str:
    return fleet.admin_url.rsplit("/", 1)[0] + "/" + fleet.database


def _query(fleet: Fleet, statement: str, *params: object) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(_database_url(fleet))
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            rows: list[tuple[object, ...]] = cursor.fetchall() if cursor.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def _prepare_stock(fleet: Fleet) -> dict[str, int]:
    _query(
        fleet,
        "UPDATE catalog.products_product SET stock = %s WHERE sku = ANY(%s) RETURNING sku",
        START_STOCK,
        list(SKUS),
    )
    return {sku: START_STOCK for sku in SKUS}


def _per_sku(fleet: Fleet, statement: str, *params: object) -> dict[str, int]:
    return {str(sku): int(str(qty)) for sku, qty in _query(fleet, statement, *params, list(SKUS))}


def _held(fleet: Fleet, status: str) -> dict[str, int]:
    return _per_sku(
        fleet,
        "SELECT l.sku, SUM(l.qty) FROM catalog.products_reservationline l "
        "JOIN catalog.products_reservation r ON r.id = l.reservation_id "
        "WHERE r.status = %s AND l.sku = ANY(%s) GROUP BY l.sku",
        status,
    )


def _check(
    fleet: Fleet, initial: dict[str, int], load: _Load, config: ChaosConfig, supervisor: Supervisor
) -> list[tuple[str, bool, str]]:
    # Reads at catalog take expired leases back; wait out the bound plus the takeover of stale claims.
    deadline = time.monotonic() + config.reservation_ttl + 15
    while True:
        supervisor.tick()
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{fleet.url('catalog')}/api/v1/products", timeout=5)
        held = _held(fleet, "reserved")
        if not any(held.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    stock = _per_sku(fleet, "SELECT sku, stock FROM catalog.products_product WHERE sku = ANY(%s)")
    sold = _held(fleet, "committed")
    ordered = _per_sku(
        fleet,
        "SELECT l.sku, SUM(l.qty) FROM orders.shop_orderline l JOIN orders.shop_order o ON o.id = l.order_id "
        "WHERE o.status = 'confirmed' AND l.sku = ANY(%s) GROUP BY l.sku",
    )
    confirmed = {
        str(row[0]) for row in _query(fleet, "SELECT id FROM orders.shop_order WHERE status = 'confirmed'")
    }
    answered = {order for ids in load.created.values() for order in ids}
    duplicate_keys = _query(
        fleet,
        "SELECT user_id, idempotency_key FROM orders.shop_order GROUP BY 1, 2 HAVING COUNT(*) > 1",
    )
    conserved = all(stock.get(s, 0) + held.get(s, 0) + sold.get(s, 0) == initial[s] for s in SKUS)
    return [
        (
            "stock conserved per sku (on sale + held + sold = start)",
            conserved,
            ", ".join(f"{s}: {stock.get(s, 0)}+{held.get(s, 0)}+{sold.get(s, 0)}" for s in SKUS),
        ),
        ("nothing sold without a confirmed order", sold == ordered, f"sold {sold}, ordered {ordered}"),
        (
            "every 201 stored",
            answered <= confirmed,
            f"{len(answered)} answered, {len(answered - confirmed)} missing",
        ),
        (
            "one order per key",
            not duplicate_keys and all(len(ids) == 1 for ids in load.created.values()),
            f"{len(load.created)} keys",
        ),
        (
            f"no stock held {config.reservation_ttl:.0f} s (the lease) after the load",
            not any(held.values()),
            f"held {held}",
        ),
        (
            "every order finished (201 or a definite 4xx)",
            not load.unfinished,
            f"{len(load.unfinished)} gave up",
        ),
    ]


def _no_worker_timeout(run_dir: Path) -> tuple[str, bool, str]:
    # gunicorn logs "WORKER TIMEOUT" when it kills a worker for a missed heartbeat; no fault here
    # leaves a worker stuck, so each would be a healthy worker killed (as on resuming a pause).
    timeouts = {
        log.parent.name: count
        for log in sorted(run_dir.glob("*/app.log"))
        if (count := log.read_text(errors="replace").count("WORKER TIMEOUT"))
    }
    return ("no worker killed for a missed heartbeat", not timeouts, f"WORKER TIMEOUT lines: {timeouts or 0}")


def _pids(fleet: Fleet) -> list[int]:
    found: list[int] = []
    for procs in fleet.processes.values():
        for proc in procs:
            if proc.alive():
                found.append(proc.pid)
                found.extend(_children(proc.pid))
    return found


def _alive(pid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False  # exited; its parent has yet to reap it
        time.sleep(0.2)
    return True


def format_report(report: ChaosReport) -> str:
    lines = ["orders (POST /api/v1/orders, retried with the same Idempotency-Key)"]
    lines += _table([(row, row.orders) for row in report.rows], ok="201")
    lines += ["", "logins (POST /api/v1/auth/token at identity)"]
    lines += _table([(row, row.logins) for row in report.rows], ok="200")
    lines.append("")
    for row in report.rows:
        for kind, outcomes in (("orders", row.orders), ("logins", row.logins)):
            for cause in sorted({a.detail for a in outcomes.attempts if a.detail}):
                lines.append(f"  {row.fault}, {kind}: {cause}")
    lines.append("")
    for name, passed, detail in report.invariants:
        lines.append(f"  {'ok    ' if passed else 'FAILED'}  {name}  ({detail})")
    lines.append(f"\n{report.orders} orders placed in {report.seconds:.0f} s")
    return "\n".join(lines)


def _table(rows: list[tuple[Row, Outcomes]], ok: str) -> list[str]:
    header = (
        "fault",
        "fault s",
        "attempts",
        ok,
        "4xx",
        "5xx",
        "conn err",
        "timeouts",
        "p50 ms",
        "p99 ms",
        "recovery s",
    )
    cells = [header]
    for row, outcomes in rows:
        cells.append(
            (
                row.fault,
                f"{row.lasted:.1f}",
                str(len(outcomes.attempts)),
                str(outcomes.count("2xx")),
                str(outcomes.count("4xx")),
                str(outcomes.count("5xx")),
                str(outcomes.count("conn")),
                str(outcomes.count("timeout")),
                f"{outcomes.percentile(0.5):.0f}",
                f"{outcomes.percentile(0.99):.0f}",
                f"{outcomes.recovery:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, line in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
