"""Throughput of one endpoint in-process vs behind the sidecar (same gunicorn, same token).

Run: ``uv run --python 3.11 python libs/meshauth/bench/sidecar_bench.py [seconds]`` from the root.
Starts a stand-in identity, gunicorn (the tests' Django project) in each mode and the sidecar,
all on loopback, and drives each with an aiohttp client at fixed concurrency.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from meshauth_testkit import AUDIENCE, ISSUER, PRINCIPAL_SECRET, FakeIdentity, free_port, wait_until  # noqa: E402


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


async def _drive(url: str, token: str, seconds: float, concurrency: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    identity = FakeIdentity()
    token = identity.token()
    base = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{Path(__file__).parent}",
        "DJANGO_SETTINGS_MODULE": "bench_settings",
        "MESHAUTH_ISSUER": ISSUER,
        "MESHAUTH_AUDIENCE": AUDIENCE,
        "MESHAUTH_JWKS_URL": identity.jwks_url,
        "MESHAUTH_PRINCIPAL_SECRET": PRINCIPAL_SECRET,
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        results = {}
        for mode in ("inprocess", "sidecar"):
            app_port, public = free_port(), free_port()
            env = {**base, "MESHAUTH_MODE": mode}
            # The same worker shape meshkit's gunicorn config gives (keep-alive 5 s).
            gunicorn = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "4"]
            gunicorn += [
                "--keep-alive",
                "5",
                "-b",
                f"127.0.0.1:{app_port}",
                "meshauth_testproject.wsgi:application",
            ]
            procs.append(subprocess.Popen(gunicorn, env=env, stderr=subprocess.DEVNULL))  # noqa: S603
            url = f"http://127.0.0.1:{app_port}/account"
            if mode == "sidecar":
                env = {
                    **env,
                    "MESHAUTH_SIDECAR_LISTEN": f"127.0.0.1:{public}",
                    "MESHAUTH_SIDECAR_UPSTREAM": f"http://127.0.0.1:{app_port}",
                    "LOG_LEVEL": "WARNING",
                }
                procs.append(subprocess.Popen([sys.executable, "-m", "meshauth.sidecar"], env=env))
                url = f"http://127.0.0.1:{public}/account"
            wait_until(lambda u=url: _up(u), timeout=30)
            asyncio.run(_drive(url, token, 1.0, 16))  # warm-up
            results[mode] = asyncio.run(_drive(url, token, seconds, 16))
            print(f"{mode:9} {results[mode]:8,.0f} req/s")
        print(f"sidecar / in-process = {results['sidecar'] / results['inprocess']:.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        identity.stop()


if __name__ == "__main__":
    main()
