"""`make bench`: what authentication costs, measured side by side in one run on this machine.

One endpoint (orders' ``GET /api/v1/whoami``: no database, no business logic) served by the same
gunicorn configuration in four ways, each driven by ``wrk`` on loopback:

* baseline: no token at all (anonymous; nothing to verify);
* in-process: meshauth's middleware verifies the JWT against cached keys;
* sidecar: the meshauth sidecar verifies it and forwards signed principal headers;
* introspect: the talk's design, a call to identity's introspection endpoint per request.

Rounds are interleaved (A B C D A B C D ...) and the median taken, so a noisy neighbour on a
shared machine hurts every mode alike. Also measured: raw ``Verifier`` throughput on one core.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from mesh import loadgen
from mesh.bootstrap import drop_database
from mesh.fleet import Fleet
from mesh.local import admin_url
from mesh.postgres import free_port
from mesh.processes import ManagedProcess, python_module, wait_for_http
from mesh.registry import Registry
from mesh.tooling import ensure_wrk

__all__ = ["run_bench"]

ENDPOINT = "/api/v1/whoami"
REAL_ENDPOINT = "/api/v1/orders"
WORKERS = 2
THREADS = 4
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway account in a throwaway database


@dataclass
class Result:
    name: str
    rps: list[float]
    p50_ms: list[float]
    p99_ms: list[float]

    @property
    def median_rps(self) -> float:
        return statistics.median(self.rps)


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if match is None:
        raise ValueError(f"wrk printed a latency we cannot read: {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, token: str | None, seconds: int, connections: int) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 in milliseconds; fails on any non-2xx answer."""
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    run = subprocess.run(  # noqa: S603 - wrk with arguments built here
        [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    )
    out = run.stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"{url} answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return rps, p50, p99


def load_generator() -> Callable[[str, str | None, int, int], tuple[float, float, float]]:
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


def run_bench(registry: Registry, seconds: int = 5, rounds: int = 3, connections: int = 8) -> int:
    measure = load_generator()
    print("raw Verifier (RS256, one core) ...", flush=True)
    cold, warm = verifier_throughput()
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
        # gthread workers keep connections alive (sync workers close each one), so what is measured
        # is the request, not TCP set-up; every mode gets the same workers.
        # Recycling (max_requests) would restart workers mid-run; measure steady state.
        service_env={"orders": {"GUNICORN_THREADS": str(THREADS), "GUNICORN_MAX_REQUESTS": "0"}},
    )
    extra: list[ManagedProcess] = []
    try:
        fleet.up(progress=lambda line: print(f"[bench] {line}", flush=True), seed=True)
        token = _user_token(fleet)
        orders = fleet.registry["orders"]
        targets = {"sidecar": fleet.url("orders")}
        for mode in ("inprocess", "introspect"):
            port = free_port()
            proc = ManagedProcess(
                name=f"orders-{mode}",
                argv=python_module("gunicorn", "--config", "python:meshkit.gunicorn", "orders.wsgi"),
                env={**fleet.env(orders), "MESHAUTH_MODE": mode, "GUNICORN_BIND": f"127.0.0.1:{port}"},
                log_path=run_dir / f"orders-{mode}.log",
                cwd=registry.service_dir("orders"),
            )
            proc.start()
            extra.append(proc)
            targets[mode] = f"http://127.0.0.1:{port}"
            wait_for_http(f"http://127.0.0.1:{port}/readyz", watch=[proc])
        plan = [
            ("no auth (baseline)", targets["inprocess"] + ENDPOINT, None),
            ("in-process", targets["inprocess"] + ENDPOINT, token),
            ("sidecar", targets["sidecar"] + ENDPOINT, token),
            ("remote introspection", targets["introspect"] + ENDPOINT, token),
            # A real endpoint (the caller's orders: session lookup, two queries, JSON): what the
            # sidecar's hop costs when the app does actual work.
            ("in-process, real", targets["inprocess"] + REAL_ENDPOINT, token),
            ("sidecar, real", targets["sidecar"] + REAL_ENDPOINT, token),
        ]
        for name, target, bearer in plan:  # every mode answers correctly before it is timed
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            answer = httpx.get(target, headers=headers)
            if answer.status_code != 200:
                raise RuntimeError(f"{name}: {target} answered {answer.status_code} {answer.text[:200]}")
            if target.endswith(ENDPOINT) and answer.json()["authenticated"] is not bool(bearer):
                raise RuntimeError(f"{target} answered {answer.text} (token sent: {bool(bearer)})")
        results = {name: Result(name, [], [], []) for name, _, _ in plan}
        for round_ in range(1, rounds + 1):
            for name, target, bearer in plan:
                print(f"[bench] round {round_}/{rounds}: {name}", flush=True)
                rps, p50, p99 = measure(target, bearer, seconds, connections)
                results[name].rps.append(rps)
                results[name].p50_ms.append(p50)
                results[name].p99_ms.append(p99)
        _report(results, cold, warm, seconds, rounds, connections)
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


def _user_token(fleet: Fleet) -> str:
    identity = fleet.url("identity")
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    httpx.post(
        f"{identity}/api/v1/auth/signup", json={"email": email, "password": PASSWORD}
    ).raise_for_status()
    tokens = httpx.post(f"{identity}/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    tokens.raise_for_status()
    return str(tokens.json()["access_token"])


def _report(
    results: dict[str, Result], cold: float, warm: float, seconds: int, rounds: int, conns: int
) -> None:
    shape = f"gunicorn {WORKERS} workers x {THREADS} threads; wrk 1 thread, {conns} connections"
    print(f"\nGET {ENDPOINT} (and GET {REAL_ENDPOINT}: 'real') on orders, {shape},")
    print(f"{rounds} interleaved rounds of {seconds} s each; medians.\n")
    print(f"  {'mode':<24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for result in results.values():
        print(
            f"  {result.name:<24} {result.median_rps:>9.0f} {statistics.median(result.p50_ms):>8.2f}"
            f" {statistics.median(result.p99_ms):>8.2f}"
        )
    base = results["no auth (baseline)"].median_rps
    inproc = results["in-process"].median_rps
    sidecar = results["sidecar"].median_rps
    remote = results["remote introspection"].median_rps
    print()
    print(f"  in-process / baseline     {inproc / base:.2f}   (target >= 0.90)")
    print(f"  sidecar / in-process      {sidecar / inproc:.2f}   (target >= 0.75; whoami: no work at all)")
    real = results["sidecar, real"].median_rps / results["in-process, real"].median_rps
    print(f"  sidecar / in-process      {real:.2f}   (on {REAL_ENDPOINT})")
    slower = inproc / remote
    print(f"  in-process / introspection {slower:.1f}x  (how much slower the talk's per-request call is)")
    print(f"\n  raw Verifier, one core: {cold:,.0f} fresh tokens/s, {warm:,.0f} repeated token/s (cached)")
