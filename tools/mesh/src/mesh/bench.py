"""`make bench`: what authentication costs, measured side by side in one run on this machine.

orders' ``GET /api/v1/whoami`` (no database, no business logic) and ``GET /api/v1/orders`` (a real
endpoint), served by the same gunicorn configuration in several modes, each driven by ``wrk`` on
loopback:

* baseline: no token at all (anonymous; nothing to verify);
* in-process: meshauth's middleware verifies the JWT against cached keys;
* sidecar: the meshauth sidecar verifies it and forwards signed principal headers;
* introspect: the talk's design, a call to identity's introspection endpoint per request;
* nginx (a reference, when nginx is installed or installable): the in-process app behind nginx,
  which only forwards. What a proxy hop written in C costs on the same machine in the same run: the
  floor under any sidecar's figures here.

Two kinds of figure per mode and round:

* speed: requests/s, p50 and p99 (from wrk);
* cost: CPU microseconds per request of every process that served it (the sidecar, the gunicorn
  master and its workers, identity for introspection; wrk excluded), read from ``/proc`` before
  and after the round. A process waiting for a core is not charged for the wait, so cost moves far
  less than speed when neighbours compete for the CPU.

Rounds are interleaved (A B C ... A B C ...), so a noisy neighbour hurts every mode alike; ratios
are taken within a round, then the median and the min-max of every figure across rounds reported.
Also measured: raw ``Verifier`` throughput on one core.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mesh import loadgen
from mesh.bootstrap import drop_database
from mesh.cpu import cpu_ticks, spent
from mesh.fleet import Fleet
from mesh.local import admin_url
from mesh.postgres import free_port
from mesh.processes import ManagedProcess, python_module, wait_for_http
from mesh.registry import Registry
from mesh.tooling import ensure_haproxy, ensure_nginx, ensure_wrk
from meshcontract import READYZ

__all__ = ["run_bench"]

ENDPOINT = "/api/v1/whoami"
REAL_ENDPOINT = "/api/v1/orders"
WORKERS = 2
THREADS = 4
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway account in a throwaway database
#: Default shape of a run: 8 modes x ROUNDS x SECONDS (about 4 minutes of load), each mode's SECONDS
#: in a round measured as one-second slices taking turns with the other modes on its endpoint. The
#: host's speed swings within seconds: 5 s runs one after another kept the orders ratio within
#: +-18 % across six rounds here, alternating 1 s slices within +-6 % (see the README).
SECONDS = 5
ROUNDS = 5
SLICE_SECONDS = 1
CONNECTIONS = 8
WARMUP_SECONDS = 1


@dataclass
class Round:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    cpu_us_per_request: dict[str, float]
    #: The smallest share of the app's work any one gunicorn worker did (0.5 is even, with two).
    worker_share: float = 0.0
    #: Runs it took to get one that reached every worker (see :func:`measure`), over all its slices.
    attempts: int = 1
    #: Slices the round was measured in (see :func:`measure_round`).
    slices: int = 1


@dataclass
class Mode:
    """One way of serving a request, and the processes that do the work."""

    key: str
    label: str
    url: str
    token: str | None
    processes: dict[str, list[int]]
    rounds: list[Round] = field(default_factory=list)

    @property
    def path(self) -> str:
        return REAL_ENDPOINT if self.url.endswith(REAL_ENDPOINT) else ENDPOINT

    def figure(self, pick: Callable[[Round], float]) -> dict[str, float]:
        return _spread([pick(r) for r in self.rounds])


@dataclass(frozen=True)
class Ratio:
    key: str
    text: str
    numerator: str
    denominator: str
    target: float | None = None


RATIOS = (
    Ratio("inprocess_over_baseline", "in-process / baseline req/s", "inprocess", "baseline", 0.90),
    Ratio("sidecar_over_inprocess", "sidecar / in-process req/s (whoami)", "sidecar", "inprocess", 0.75),
    Ratio(
        "sidecar_over_inprocess_real",
        f"sidecar / in-process req/s ({REAL_ENDPOINT})",
        "sidecar_real",
        "inprocess_real",
        0.95,
    ),
    Ratio("inprocess_over_introspect", "in-process / introspection req/s", "inprocess", "introspect", 5.0),
)
#: The sidecar with HAProxy serving its port (MESHAUTH_SIDECAR_ENGINE=haproxy), against the same
#: targets (measured when HAProxy is there).
ENGINE_RATIOS = (
    Ratio(
        "sidecar_haproxy_over_inprocess",
        "sidecar (HAProxy) / in-process req/s (whoami)",
        "sidecar_haproxy",
        "inprocess",
        0.75,
    ),
    Ratio(
        "sidecar_haproxy_over_inprocess_real",
        f"sidecar (HAProxy) / in-process req/s ({REAL_ENDPOINT})",
        "sidecar_haproxy_real",
        "inprocess_real",
        0.95,
    ),
)
#: The reference: the same hop through nginx (no target; measured when nginx is there).
REFERENCE_RATIOS = (
    Ratio("nginx_over_inprocess", "nginx / in-process req/s (whoami)", "nginx", "inprocess"),
    Ratio(
        "nginx_over_inprocess_real",
        f"nginx / in-process req/s ({REAL_ENDPOINT})",
        "nginx_real",
        "inprocess_real",
    ),
)
#: The sidecar's own CPU per proxied whoami request: Istio publishes ~0.20 vCPU per 1,000 req/s for
#: Envoy (~200 us); within 1.5x of that.
SIDECAR_CPU_TARGET_US = 300.0


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if match is None:
        raise ValueError(f"wrk printed a latency we cannot read: {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def find_wrk() -> str | None:
    """The wrk binary, or None."""
    return shutil.which("wrk")


def wrk(url: str, token: str | None, seconds: int, connections: int) -> tuple[float, float, float, int]:
    """Requests/s, p50 and p99 in milliseconds, and the request count; fails on any non-2xx answer."""
    # A generous timeout: on a loaded machine a slow answer is a figure, not an error.
    argv = [find_wrk() or "wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    argv += ["--timeout", "30s"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    run = subprocess.run(  # noqa: S603 - wrk with arguments built here
        [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    )
    out = run.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{url} answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p50, p99, requests


#: A load generator: (url, token, seconds, connections) -> (req/s, p50 ms, p99 ms[, requests]).
Load = Callable[[str, str | None, int, int], tuple[float, ...]]


def measure(mode: Mode, load: Load, seconds: int, connections: int) -> Round:
    """One load run against ``mode``, with the CPU its processes spent meanwhile.

    wrk opens its connections all at once, and one gunicorn worker often accepts every one of them
    before the other wakes up (seen here in about a third of the runs straight at gunicorn): that
    run measures one core and one worker's GIL, not the pod, at half the speed. Such a run (a worker
    doing less than :data:`MIN_WORKER_SHARE` of its fair share) is measured again, up to
    :data:`ATTEMPTS` times; the round records its worker share and how many runs it took.
    """
    for attempt in range(1, ATTEMPTS + 1):
        before = cpu_ticks(mode.processes)
        figures = load(mode.url, mode.token, seconds, connections)
        after = cpu_ticks(mode.processes)
        share = _smallest_worker_share(mode.processes["app"], before["app"], after["app"])
        if share >= MIN_WORKER_SHARE or attempt == ATTEMPTS:
            break
        print(f"[bench]   one gunicorn worker took every connection (share {share:.2f}): again", flush=True)
    rps, p50, p99 = figures[:3]
    # wrk counts the requests it made; the Python generator reports its rate over the run.
    requests = int(figures[3]) if len(figures) > 3 else max(1, round(rps * seconds))
    used = {name: spent(before[name], after[name]) for name in mode.processes}
    per_request = {name: seconds_ * 1e6 / requests for name, seconds_ in used.items()}
    per_request["total"] = sum(per_request.values())
    return Round(rps, p50, p99, requests, per_request, share, attempt)


#: A run counts when every worker did at least half its fair share of the app's CPU.
MIN_WORKER_SHARE = 0.5 / WORKERS
ATTEMPTS = 8


def measure_round(group: Sequence[Mode], load: Load, seconds: int, connections: int) -> None:
    """One round of every mode in ``group`` (one endpoint), in one-second slices taking turns.

    The host's speed swings within seconds (every process's CPU per request moving by half between
    neighbouring 5 s runs): two modes measured one after the other meet different hosts, and their
    ratio swings with it. Taking turns every second, both sides of a ratio meet the same swings. A
    mode alone runs once: slices would only cost it more runs measured again (each wrk start is a
    new chance for one worker to take every connection).
    """
    if len(group) == 1:
        group[0].rounds.append(measure(group[0], load, seconds, connections))
        return
    slices: dict[str, list[Round]] = {mode.key: [] for mode in group}
    for _ in range(max(1, seconds // SLICE_SECONDS)):
        for mode in group:
            slices[mode.key].append(measure(mode, load, SLICE_SECONDS, connections))
    for mode in group:
        mode.rounds.append(combine(slices[mode.key]))


def combine(slices: Sequence[Round]) -> Round:
    """One round from its slices: rates over the whole time, CPU over every request.

    wrk reports percentiles, not samples: the round's p50 and p99 are the medians of its slices'.
    """
    requests = sum(s.requests for s in slices)
    elapsed = sum(s.requests / s.rps for s in slices if s.rps)
    cpu = {
        name: sum(s.cpu_us_per_request[name] * s.requests for s in slices) / requests
        for name in slices[0].cpu_us_per_request
    }
    return Round(
        rps=requests / elapsed if elapsed else 0.0,
        p50_ms=statistics.median(s.p50_ms for s in slices),
        p99_ms=statistics.median(s.p99_ms for s in slices),
        requests=requests,
        cpu_us_per_request=cpu,
        worker_share=min(s.worker_share for s in slices),
        attempts=sum(s.attempts for s in slices),
        slices=sum(s.slices for s in slices),
    )


def _smallest_worker_share(
    masters: Sequence[int], before: Mapping[int, int], after: Mapping[int, int]
) -> float:
    """The smallest fraction of the workers' CPU that one worker used (the masters' children)."""
    used = {pid: ticks - before.get(pid, 0) for pid, ticks in after.items() if pid not in masters}
    total = sum(used.values())
    return min(used.values()) / total if used and total else 0.0


def load_generator() -> Load:
    """wrk when it is on PATH or can be installed; otherwise the slower Python load generator."""
    if ensure_wrk():
        return wrk
    print(
        "[bench] wrk is not available (and not installable here): measuring with mesh.loadgen, a slower"
        " Python client; compare the ratios, not the figures",
        flush=True,
    )
    return loadgen.measure


def verifier_throughput(seconds: float = 2.0) -> tuple[float, float]:
    """Verifications per second on one core: fresh tokens, and a token seen before (cached)."""
    from meshauth.jwks import JWKSCache
    from meshauth.keys import generate_private_key, key_id, public_jwk, sign
    from meshauth.verifier import Verifier

    key = generate_private_key("RS256")
    kid = key_id(key)
    jwks = JWKSCache("bench:local", loader=lambda: {"keys": [public_jwk(key, kid)]})
    verifier = Verifier(issuer="bench", audience="bench", jwks=jwks)
    now = int(time.time())

    def token(n: int) -> str:
        claims = {"iss": "bench", "aud": "bench", "sub": str(n), "iat": now, "nbf": now, "exp": now + 600}
        return sign({**claims, "jti": uuid.uuid4().hex, "scope": "profile", "token_use": "access"}, key, kid)

    fresh = [token(n) for n in range(3000)]

    def rate(verify: Callable[[int], object]) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds and done < len(fresh):
            verify(done)
            done += 1
        return done / (time.perf_counter() - start)

    cold = rate(lambda n: verifier.verify(fresh[n]))
    warm = rate(lambda n: verifier.verify(fresh[0]))
    return cold, warm


def run_bench(
    registry: Registry,
    seconds: int = SECONDS,
    rounds: int = ROUNDS,
    connections: int = CONNECTIONS,
    json_path: Path | None = None,
    upstream: str = "unix",
    reference: bool = True,
) -> int:
    if seconds < 1 or rounds < 1 or connections < 1:
        print("bench: --seconds, --rounds and --connections must be at least 1", file=sys.stderr)
        return 2
    load = load_generator()
    load_before = os.getloadavg()
    print("raw Verifier (RS256, one core) ...", flush=True)
    cold, warm = verifier_throughput(min(2.0, float(seconds)))
    url, started_db = admin_url(registry.root)
    run_dir = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    fleet = Fleet(
        registry=registry,
        admin_url=url,
        database=f"bench_{uuid.uuid4().hex[:8]}",
        run_dir=run_dir,
        mode="sidecar",
        fixed_ports=False,
        workers=WORKERS,
        only=("identity", "orders"),
        transport=upstream,
        # Recycling (max_requests) would restart workers mid-run, taking their CPU time with them:
        # measure steady state. Every mode gets the same workers.
        service_env={"orders": {"GUNICORN_THREADS": str(THREADS), "GUNICORN_MAX_REQUESTS": "0"}},
    )
    extra: list[ManagedProcess] = []
    try:
        fleet.up(progress=lambda line: print(f"[bench] {line}", flush=True), seed=True)
        modes = _modes(fleet, _user_token(fleet), run_dir, registry, extra)
        haproxy = ensure_haproxy()
        if haproxy is not None:
            whoami, real = _haproxy_modes(fleet, modes, run_dir, extra)
            modes.insert(modes.index(_mode(modes, "sidecar")) + 1, whoami)
            modes.insert(modes.index(_mode(modes, "sidecar_real")) + 1, real)
        else:
            print(
                "[bench] HAProxy is not available (and not installable here): no HAProxy engine", flush=True
            )
        nginx = ensure_nginx() if reference else None
        if nginx is not None:
            # Each next to the mode it is compared with, so a ratio's two runs are seconds apart.
            whoami, real = _reference_modes(nginx, modes, run_dir, extra)
            modes.insert(modes.index(_mode(modes, "sidecar")) + 1, whoami)
            modes.insert(modes.index(_mode(modes, "sidecar_real")) + 1, real)
        elif reference:
            print("[bench] nginx is not available (and not installable here): no reference proxy", flush=True)
        for mode in modes:  # every mode answers correctly before it is timed, then warms up
            _check(mode)
            load(mode.url, mode.token, WARMUP_SECONDS, connections)
        # Modes whose ratios are compared take turns; remote introspection (an order of magnitude
        # off its target, which no swing of the host can flip) runs alone, once per round.
        introspect = _mode(modes, "introspect")
        groups = [
            [mode for mode in modes if mode.path == ENDPOINT and mode is not introspect],
            [introspect],
            [mode for mode in modes if mode.path == REAL_ENDPOINT],
        ]
        for round_ in range(1, rounds + 1):
            for group in groups:
                names = ", ".join(mode.label for mode in group)
                print(f"[bench] round {round_}/{rounds}, {group[0].path}: {names}", flush=True)
                measure_round(group, load, seconds, connections)
        report = _report(
            {mode.key: mode for mode in modes},
            verifier=(cold, warm),
            config={
                "seconds": seconds,
                "slice_seconds": SLICE_SECONDS,
                "rounds": rounds,
                "connections": connections,
                "gunicorn_workers": WORKERS,
                "gunicorn_threads": THREADS,
                "sidecar_upstream": upstream,
                "reference_proxy": nginx and _nginx_version(nginx),
                "haproxy": haproxy and _haproxy_version(haproxy),
                "cpus": os.cpu_count(),
                "loadavg_before": list(load_before),
                "loadavg_after": list(os.getloadavg()),
            },
        )
        if json_path is not None:
            json_path.write_text(json.dumps(report, indent=2) + "\n")
            print(f"\nevery figure written to {json_path}")
    finally:
        for proc in extra:
            proc.stop()
        fleet.stop()
        drop_database(url, fleet.database)
        shutil.rmtree(run_dir, ignore_errors=True)
        if started_db:
            from mesh.local import embedded_postgres

            embedded_postgres(registry.root).stop()
    return 0


def _modes(
    fleet: Fleet, token: str, run_dir: Path, registry: Registry, extra: list[ManagedProcess]
) -> list[Mode]:
    """Start orders once more per extra auth mode (same gunicorn settings) and list what to time."""
    orders = fleet.registry["orders"]
    targets: dict[str, tuple[str, int]] = {}
    for auth in ("inprocess", "introspect"):
        port = free_port()
        proc = ManagedProcess(
            name=f"orders-{auth}",
            argv=python_module("gunicorn", "--config", "python:meshkit.gunicorn", "orders.wsgi"),
            env={
                **fleet.env(orders),
                "MESHAUTH_MODE": auth,
                "GUNICORN_BIND": f"127.0.0.1:{port}",
                # Its own internal port: the fleet's orders holds the one in fleet.env().
                "METRICS_BIND": f"127.0.0.1:{free_port()}",
            },
            log_path=run_dir / f"orders-{auth}.log",
            cwd=registry.service_dir("orders"),
        )
        proc.start()
        extra.append(proc)
        targets[auth] = (f"http://127.0.0.1:{port}", proc.pid)
        wait_for_http(f"http://127.0.0.1:{port}{READYZ}", watch=[proc])
    app, sidecar = (proc.pid for proc in fleet.processes["orders"])
    identity = [proc.pid for proc in fleet.processes["identity"]]
    inproc_url, inproc_pid = targets["inprocess"]
    remote_url, remote_pid = targets["introspect"]
    side_url = fleet.url("orders")
    behind = {"sidecar": [sidecar], "app": [app]}
    return [
        Mode("baseline", "no auth (baseline)", inproc_url + ENDPOINT, None, {"app": [inproc_pid]}),
        Mode("inprocess", "in-process", inproc_url + ENDPOINT, token, {"app": [inproc_pid]}),
        Mode("sidecar", "sidecar", side_url + ENDPOINT, token, behind),
        Mode(
            "introspect",
            "remote introspection",
            remote_url + ENDPOINT,
            token,
            {"app": [remote_pid], "identity": identity},
        ),
        # The caller's orders (session lookup, two queries, JSON): what the sidecar's hop costs
        # when the app does actual work.
        Mode("inprocess_real", "in-process, real", inproc_url + REAL_ENDPOINT, token, {"app": [inproc_pid]}),
        Mode("sidecar_real", "sidecar, real", side_url + REAL_ENDPOINT, token, behind),
    ]


def _haproxy_modes(
    fleet: Fleet, modes: Sequence[Mode], run_dir: Path, extra: list[ManagedProcess]
) -> tuple[Mode, Mode]:
    """A second sidecar in front of the same app, with HAProxy serving its port."""
    orders = fleet.registry["orders"]
    port = free_port()
    # As the fleet's sidecar (fleet.sidecar_process), on ports of its own.
    env = {k: v for k, v in fleet.env(orders).items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = ManagedProcess(
        name="orders-sidecar-haproxy",
        argv=python_module("meshauth.sidecar"),
        env={
            **env,
            "MESHAUTH_SIDECAR_ENGINE": "haproxy",
            "MESHAUTH_SIDECAR_LISTEN": f"127.0.0.1:{port}",
            "MESHAUTH_SIDECAR_UPSTREAM": fleet.upstream(orders),
            "MESHAUTH_SIDECAR_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        },
        log_path=run_dir / "orders-sidecar-haproxy.log",
    )
    proc.start()
    extra.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + READYZ, watch=[proc])
    sidecar = _mode(modes, "sidecar")
    # The sidecar process and its HAProxy (master and worker: its children), in front of the same app.
    processes = {"sidecar": [proc.pid], "app": sidecar.processes["app"]}
    return (
        Mode("sidecar_haproxy", "sidecar (HAProxy)", url + ENDPOINT, sidecar.token, processes),
        Mode(
            "sidecar_haproxy_real", "sidecar (HAProxy), real", url + REAL_ENDPOINT, sidecar.token, processes
        ),
    )


def _haproxy_version(haproxy: str) -> str:
    run = subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=False)  # noqa: S603
    return run.stdout.split("\n", 1)[0].removeprefix("HAProxy version ").split(" ", 1)[0]


def _mode(modes: Sequence[Mode], key: str) -> Mode:
    return next(mode for mode in modes if mode.key == key)


def _reference_modes(
    nginx: str, modes: Sequence[Mode], run_dir: Path, extra: list[ManagedProcess]
) -> tuple[Mode, Mode]:
    """nginx in front of the in-process app: a proxy hop that costs as little as C makes it."""
    inprocess = _mode(modes, "inprocess")
    port = free_port()
    conf = run_dir / "nginx" / "nginx.conf"
    conf.parent.mkdir()
    conf.write_text(NGINX_CONF.format(run=conf.parent, listen=port, app=urlsplit(inprocess.url).netloc))
    # One process (no master), as the sidecar is one: its CPU is the proxy's and nothing else's.
    proc = ManagedProcess(
        name="nginx",
        argv=[nginx, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf)],
        env={"PATH": os.environ.get("PATH", "")},
        log_path=run_dir / "nginx.log",
    )
    proc.start()
    extra.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}{READYZ}", watch=[proc])
    processes = {"app": inprocess.processes["app"], "nginx": [proc.pid]}
    return (
        Mode("nginx", "nginx (reference)", url + ENDPOINT, inprocess.token, processes),
        Mode("nginx_real", "nginx, real (reference)", url + REAL_ENDPOINT, inprocess.token, processes),
    )


# What the sidecar does too, minus the token: keep-alive connections to the app, the request id and
# forwarded headers set, an access log written in buffered batches.
NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log {run}/access.log combined buffer=64k flush=1s;
  client_body_temp_path {run}/body;
  proxy_temp_path {run}/proxy;
  fastcgi_temp_path {run}/fastcgi;
  uwsgi_temp_path {run}/uwsgi;
  scgi_temp_path {run}/scgi;
  upstream app {{ server {app}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Request-ID $request_id;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"""


def _nginx_version(nginx: str) -> str:
    run = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)  # noqa: S603
    return run.stderr.strip().removeprefix("nginx version: ")


def _check(mode: Mode) -> None:
    headers = {"Authorization": f"Bearer {mode.token}"} if mode.token else {}
    # A worker's first request loads the app and the keys: on a loaded machine that takes seconds.
    answer = httpx.get(mode.url, headers=headers, timeout=60)
    if answer.status_code != 200:
        raise RuntimeError(f"{mode.label}: {mode.url} answered {answer.status_code} {answer.text[:200]}")
    if mode.url.endswith(ENDPOINT) and answer.json()["authenticated"] is not bool(mode.token):
        raise RuntimeError(f"{mode.url} answered {answer.text} (token sent: {bool(mode.token)})")


def _user_token(fleet: Fleet) -> str:
    identity = fleet.url("identity")
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    account = {"email": email, "password": PASSWORD}
    # Password hashing on a loaded machine: seconds, not an error.
    httpx.post(f"{identity}/api/v1/auth/signup", json=account, timeout=60).raise_for_status()
    tokens = httpx.post(f"{identity}/api/v1/auth/token", json=account, timeout=60)
    tokens.raise_for_status()
    return str(tokens.json()["access_token"])


def _report(
    modes: Mapping[str, Mode], verifier: tuple[float, float], config: dict[str, Any]
) -> dict[str, Any]:
    """Print the tables and return every figure (the ``--json`` document)."""
    shape = (
        f"gunicorn {WORKERS} workers x {THREADS} threads; wrk 1 thread, {config['connections']} connections;"
        f" sidecar to gunicorn over {config['sidecar_upstream']}"
    )
    load = ", ".join(f"{value:.1f}" for value in config["loadavg_before"])
    print(f"\nGET {ENDPOINT} (and GET {REAL_ENDPOINT}: 'real') on orders, {shape};")
    print(
        f"{config['rounds']} rounds of {config['seconds']} s per mode, modes on one endpoint taking turns"
        f" every {config['slice_seconds']} s; load average before: {load}."
    )
    print("Each figure: median [min-max] across rounds. CPU: microseconds per request, per process.\n")
    document: dict[str, Any] = {"config": config, "modes": {}, "ratios": {}, "spread": {}, "targets": {}}
    print(f"  {'mode':<22} {'req/s':>18} {'p50 ms':>8} {'p99 ms':>8}   CPU us/request")
    for key, mode in modes.items():
        rps, p50, p99 = (
            mode.figure(lambda r: r.rps),
            mode.figure(lambda r: r.p50_ms),
            mode.figure(lambda r: r.p99_ms),
        )
        cpu = {name: mode.figure(_cpu_of(name)) for name in mode.rounds[0].cpu_us_per_request}
        cost = "  ".join(f"{name} {_range(figure, 0)}" for name, figure in cpu.items())
        print(f"  {mode.label:<22} {_range(rps, 0):>18} {p50['median']:>8.2f} {p99['median']:>8.2f}   {cost}")
        document["modes"][key] = {
            "label": mode.label,
            "url_path": mode.path,
            "rps": rps["median"],
            "p50_ms": p50["median"],
            "p99_ms": p99["median"],
            "cpu_us_per_request": {name: figure["median"] for name, figure in cpu.items()},
            "spread": {
                "rps": rps,
                "p50_ms": p50,
                "p99_ms": p99,
                "cpu_us_per_request": cpu,
            },
            "rounds": [vars(r) for r in mode.rounds],
        }
    print()
    ratios = [
        r
        for r in (*RATIOS, *ENGINE_RATIOS, *REFERENCE_RATIOS)
        if r.numerator in modes and r.denominator in modes
    ]
    for ratio in ratios:
        top, bottom = modes[ratio.numerator].rounds, modes[ratio.denominator].rounds
        # Within a round both modes met the same neighbours: ratio per round, then the spread.
        figure = _spread([a.rps / b.rps for a, b in zip(top, bottom, strict=True)])
        document["ratios"][ratio.key] = figure["median"]
        document["spread"][ratio.key] = {**figure, "half_range_percent": _half_range(figure)}
        if ratio.target is not None:
            document["targets"][ratio.key] = _target(figure["median"], ratio.target, at_least=True)
        goal = f"(target >= {ratio.target:g})" if ratio.target is not None else "(reference)"
        print(
            f"  {ratio.text:<42} {figure['median']:>6.2f}  [{figure['min']:.2f}-{figure['max']:.2f},"
            f" +-{_half_range(figure):.0f} %]   {goal}"
        )
    # The same ratios by cost: CPU per request of every process involved, the throughput ratio a
    # CPU-bound machine converges to. It barely moves with the neighbours, unlike req/s.
    print("  by CPU (total CPU per request of the denominator / of the numerator):")
    for ratio in ratios:
        top, bottom = modes[ratio.numerator].rounds, modes[ratio.denominator].rounds
        costs = [
            b.cpu_us_per_request["total"] / a.cpu_us_per_request["total"]
            for a, b in zip(top, bottom, strict=True)
        ]
        figure = _spread(costs)
        key = f"{ratio.key}_by_cpu"
        document["ratios"][key] = figure["median"]
        document["spread"][key] = {**figure, "half_range_percent": _half_range(figure)}
        print(
            f"    {ratio.text.replace(' req/s', ''):<40} {figure['median']:>6.2f}"
            f"  [{figure['min']:.2f}-{figure['max']:.2f}, +-{_half_range(figure):.0f} %]"
        )
    sidecar_cpu = document["modes"]["sidecar"]["spread"]["cpu_us_per_request"]["sidecar"]
    document["targets"]["sidecar_cpu_us_per_request"] = _target(
        sidecar_cpu["median"], SIDECAR_CPU_TARGET_US, at_least=False
    )
    _print_proxy_cpu("sidecar", sidecar_cpu, f"(target <= {SIDECAR_CPU_TARGET_US:g})")
    if "sidecar_haproxy" in modes:
        engine_cpu = document["modes"]["sidecar_haproxy"]["spread"]["cpu_us_per_request"]["sidecar"]
        document["targets"]["sidecar_haproxy_cpu_us_per_request"] = _target(
            engine_cpu["median"], SIDECAR_CPU_TARGET_US, at_least=False
        )
        _print_proxy_cpu("sidecar (HAProxy)", engine_cpu, f"(target <= {SIDECAR_CPU_TARGET_US:g})")
    if "nginx" in modes:
        nginx_cpu = document["modes"]["nginx"]["spread"]["cpu_us_per_request"]["nginx"]
        _print_proxy_cpu("nginx", nginx_cpu, "(reference)")
    again = sum(r.attempts - r.slices for mode in modes.values() for r in mode.rounds)
    document["runs_measured_again"] = again
    print(f"  runs measured again because one gunicorn worker took every connection: {again}")
    cold, warm = verifier
    document["verifier"] = {"fresh_tokens_per_s": cold, "cached_token_per_s": warm}
    print(f"\n  raw Verifier, one core: {cold:,.0f} fresh tokens/s, {warm:,.0f} repeated token/s (cached)")
    missed = [name for name, target in document["targets"].items() if not target["met"]]
    print(
        f"  targets missed in this run: {', '.join(missed)}" if missed else "  every target met in this run"
    )
    return document


def _print_proxy_cpu(proxy: str, figure: Mapping[str, float], goal: str) -> None:
    label = f"{proxy} CPU per proxied whoami request"
    spread = f"[{figure['min']:.0f}-{figure['max']:.0f}, +-{_half_range(figure):.0f} %]"
    print(f"  {label:<42} {figure['median']:>6.0f}  {spread} us   {goal}")


def _cpu_of(process: str) -> Callable[[Round], float]:
    """Picks one process's CPU per request from a round (a named function: mypy cannot type the lambda)."""
    return lambda r: r.cpu_us_per_request[process]


def _range(figure: Mapping[str, float], digits: int) -> str:
    return f"{figure['median']:.{digits}f} [{figure['min']:.{digits}f}-{figure['max']:.{digits}f}]"


def _half_range(figure: Mapping[str, float]) -> float:
    return (figure["max"] - figure["min"]) / 2 / figure["median"] * 100 if figure["median"] else 0.0


def _target(value: float, target: float, *, at_least: bool) -> dict[str, Any]:
    met = value >= target if at_least else value <= target
    return {"value": value, "target": target, "at_least": at_least, "met": met}
