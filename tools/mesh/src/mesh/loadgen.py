"""A small HTTP load generator, for `make bench` on a machine where wrk cannot be had.

It measures what wrk does (requests per second, p50 and p99 latency over a fixed time, through a
fixed number of keep-alive connections), with one thread per connection. It is a slower client than
wrk, so it uses more of the CPU the servers share; its figures are not comparable with wrk's, but
ratios measured in one run are.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from urllib.parse import urlsplit

__all__ = ["measure"]


def measure(url: str, token: str | None, seconds: float, connections: int) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 in milliseconds of GET ``url``; fails on any non-2xx answer."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def worker(own: list[float]) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
        try:
            while time.perf_counter() < deadline and not errors:
                started = time.perf_counter()
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if not 200 <= response.status < 300:
                    errors.append(f"{url} answered {response.status} under load")
                    return
                own.append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{url}: {exc!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(own,)) for own in latencies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    done = sorted(latency for own in latencies for latency in own)
    if len(done) < 2:
        raise RuntimeError(f"{url}: fewer than 2 requests completed in {seconds} s")
    cuts = statistics.quantiles(done, n=100, method="inclusive")
    return len(done) / elapsed, cuts[49] * 1000, cuts[98] * 1000
