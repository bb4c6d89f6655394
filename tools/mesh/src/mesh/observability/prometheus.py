"""A real Prometheus on loopback, scraping a running fleet the way the charts' ServiceMonitor does.

Every service is one job (``job="<service>"``) with two endpoints: the app's ``/metrics`` and the
sidecar's ``/metrics/sidecar``, each on its internal metrics port (never the public one), scraped
every second.
The rule files are the charts' own ``files/rules.yaml``, loaded unchanged.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mesh.fleet import Fleet
from mesh.observability.yamltext import dump
from mesh.postgres import free_port
from mesh.processes import ManagedProcess, wait_for_http

__all__ = ["LocalPrometheus", "find_prometheus", "scrape_config"]

SCRAPE_INTERVAL = "1s"


def find_prometheus() -> str | None:
    """The Prometheus server binary (Debian package ``prometheus``), or None."""
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None


def scrape_config(fleet: Fleet, rule_files: list[Path]) -> dict[str, Any]:
    """Prometheus configuration scraping every service of ``fleet`` (app and sidecar endpoints)."""
    jobs: list[dict[str, Any]] = []
    for service in fleet.services:
        endpoints = ["app", "sidecar"] if fleet.mode == "sidecar" else ["app"]
        for endpoint in endpoints:
            url = urlsplit(fleet.metrics_url(service.name, endpoint))
            address, path = url.netloc, url.path
            jobs.append(
                {
                    "job_name": f"{service.name}-{endpoint}",
                    "metrics_path": path,
                    # `endpoint` keeps the two targets of one address apart (their `up` would clash).
                    "static_configs": [{"targets": [address], "labels": {"endpoint": endpoint}}],
                    # One job per service, as the ServiceMonitor's jobLabel makes it in a cluster.
                    "relabel_configs": [{"target_label": "job", "replacement": service.name}],
                }
            )
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": jobs,
    }


@dataclass
class LocalPrometheus:
    """One Prometheus process with its configuration and data under ``directory``."""

    fleet: Fleet
    directory: Path
    rule_files: list[Path] = field(default_factory=list)
    binary: str | None = None
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        binary = self.binary or find_prometheus()
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (Debian package prometheus)")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(dump(scrape_config(self.fleet, self.rule_files)))
        self.port = self.port or free_port()
        self.process = ManagedProcess(
            name="prometheus",
            argv=[
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            env={"PATH": "/usr/bin:/bin"},
            log_path=self.directory / "prometheus.log",
            cwd=self.directory,
        )
        self.process.start()
        wait_for_http(f"{self.url}/-/ready", timeout=timeout, watch=[self.process])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    # -- HTTP API -------------------------------------------------------------------------------

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query (raises with Prometheus's message on a bad query)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._get("/api/v1/query", params)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return self._get("/api/v1/query_range", params)

    def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30.0)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"{params['query']!r}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10.0)
        active: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
        return active

    def wait_for_targets(self, timeout: float = 30.0) -> None:
        """Until every target was scraped successfully once."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            down = [
                t["scrapeUrl"] + ": " + (t.get("lastError") or t["health"])
                for t in targets
                if t["health"] != "up"
            ]
            if targets and not down:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets not up after {timeout:.0f} s: {down}")
            time.sleep(0.5)

    def wait_for_sample(self, expr: str, minimum: float, timeout: float = 30.0) -> float:
        """Until ``expr`` (one series) reaches ``minimum``; its last value."""
        deadline = time.monotonic() + timeout
        value = math.nan
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                value = float(result[0]["value"][1])
                if value >= minimum:
                    return value
            time.sleep(0.5)
        raise TimeoutError(f"{expr} stayed at {value}, below {minimum}, for {timeout:.0f} s")

    def wait_for_jobs(self, expr: str, jobs: set[str], timeout: float = 45.0) -> None:
        """Until ``expr`` returns a series for every job in ``jobs``."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = {series["metric"].get("job", "") for series in self.query(expr)}
            if jobs <= seen:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{expr}: no series for {sorted(jobs - seen)} after {timeout:.0f} s")
