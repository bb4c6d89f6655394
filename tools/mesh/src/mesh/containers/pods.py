"""`mesh pods`: the whole mesh as the charts' pods, from the real images, under `podman kube play`.

What `helm install` would do, in its order: the k8s/ bootstrap Job against the database, each chart's
pre-install migration hook, then each Deployment (identity first: the others fetch its keys at
start). Demo data is seeded by one-off pods from the same images, as `make up` seeds it. Every pod
uses the host's network on 127.0.0.1 (kube.ADAPTATIONS lists what differs from a cluster and why).
Stopping (Ctrl-C, SIGTERM, or a failure) removes every pod, volume and secret this run created.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import yaml

from mesh.bootstrap import create_database, service_url
from mesh.containers.images import BOOTSTRAP, build_images
from mesh.containers.kube import (
    ADAPTATIONS,
    ChartRenderer,
    Doc,
    PodPorts,
    adapt_env_map,
    adapt_pod_spec,
    address_replacements,
    dump,
    job_as_pod,
    pod_values,
)
from mesh.containers.podman import Podman, PodmanError
from mesh.journey import JOURNEY
from mesh.postgres import EmbeddedPostgres
from mesh.registry import Registry, Service
from meshcontract import READYZ, read_database_url_variable

__all__ = ["PodsRun", "run_pods"]

Progress = Callable[[str], None]
READY_TIMEOUT = 180.0
JOB_TIMEOUT = 300.0


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: stop where we are and clean up."""


@dataclass
class PodsRun:
    """One run of the mesh as pods: what it started, so that it can remove exactly that."""

    registry: Registry
    podman: Podman
    mode: str = "sidecar"
    engine: str = "python"
    port_offset: int = 0
    database: str = "mesh_pods"
    state_dir: Path | None = None
    progress: Progress = lambda _: None
    ports: dict[str, PodPorts] = field(default_factory=dict)
    pods: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    played: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    server: EmbeddedPostgres | None = None
    started_server: bool = False
    admin_url: str = ""
    _work: Path | None = None

    def __post_init__(self) -> None:
        for service in self.services:
            self.ports[service.name] = PodPorts.of(service, self.port_offset)
        self.role_passwords = {role: secrets.token_urlsafe(18) for role in self._roles()}
        self.client_secrets = {s.name: secrets.token_urlsafe(24) for s in self.services if s.calls}

    @property
    def services(self) -> list[Service]:
        # identity first: every other service fetches its JWKS at start.
        return sorted(self.registry, key=lambda s: (s.name != "identity", s.name))

    def _roles(self) -> list[str]:
        roles = []
        for service in self.services:
            roles.append(service.role)
            if service.reads:
                roles.append(service.reader_role)
        return roles

    def name(self, base: str) -> str:
        """A machine-wide podman name: a second mesh (a port offset) gets its own."""
        return f"{base}-{self.port_offset}" if self.port_offset else base

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service].public}"

    # -- database -----------------------------------------------------------------------------

    def start_database(self) -> None:
        home = (self.state_dir or self.registry.root / ".mesh" / "pods") / "postgres"
        self.server = EmbeddedPostgres(home)
        self.progress(f"starting PostgreSQL (embedded, data in {home})")
        self.started_server = self.server.start()
        self.admin_url = self.server.admin_url()
        create_database(self.admin_url, self.database)

    @property
    def db_port(self) -> int:
        port = self.server.running_port() if self.server is not None else None
        if port is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        return port

    def _url(self, role: str) -> str:
        return service_url(self.admin_url, self.database, role, self.role_passwords[role])

    # -- secrets (the operator's part of `helm install`) ----------------------------------------

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        """A podman secret in the form `kube play` reads for secretKeyRef: JSON of base64 values.

        (podman 4's own Secret documents are stored in a form its secretKeyRef cannot read.)
        """
        payload = json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
        self.podman.run("secret", "rm", name, check=False)
        self.podman.run("secret", "create", name, "-", input_bytes=payload.encode())
        self.secrets.append(name)

    def create_secrets(self) -> None:
        admin_password = _superuser_password(self.admin_url)
        self.create_secret(self.name("postgres-admin"), {"POSTGRES_PASSWORD": admin_password})
        self.create_secret(self.name("mesh-db-roles"), self.role_passwords)
        for service in self.services:
            data = {
                "DATABASE_URL": self._url(service.role),
                "SECRET_KEY": secrets.token_urlsafe(50),
            }
            if service.name in self.client_secrets:
                data["MESHAUTH_CLIENT_SECRET"] = self.client_secrets[service.name]
            for owner in service.reads:
                data[read_database_url_variable(owner)] = self._url(service.reader_role)
            self.create_secret(f"{self.name(service.name)}-secrets", data)

    def _secret_names(self, spec: Doc) -> Doc:
        """Secret references follow the run's names (see `name`)."""
        renames = {n: self.name(n) for n in ("postgres-admin", "mesh-db-roles")}
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in renames:
                    ref["name"] = renames[ref["name"]]
        return spec

    # -- playing YAML ---------------------------------------------------------------------------

    @property
    def work(self) -> Path:
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix="mesh-pods-"))
        return self._work

    def _own_volumes(self, spec: Doc, prefix: str) -> Doc:
        """podman names an emptyDir volume after the pod's volume, machine-wide: prefix it per pod."""
        renames = {v["name"]: f"{prefix}-{v['name']}" for v in spec.get("volumes", [])}
        for volume in spec.get("volumes", []):
            volume["name"] = renames[volume["name"]]
            if "emptyDir" in volume:
                self.volumes.append(volume["name"])
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            for mount in container.get("volumeMounts", []):
                mount["name"] = renames.get(mount["name"], mount["name"])
        return spec

    def play(self, docs: list[Doc], label: str) -> None:
        path = self.work / f"{label}.yaml"
        path.write_text(dump(docs))
        self.played.append(path)
        for doc in docs:
            if doc["kind"] == "Pod":
                self.pods.append(doc["metadata"]["name"])
            elif doc["kind"] == "Deployment":
                self.pods.append(f"{doc['metadata']['name']}-pod-0")
        self.podman.run("kube", "play", str(path), timeout=JOB_TIMEOUT)

    def run_pod(self, pod: Doc, extra: list[Doc], *, backoff_limit: int = 0) -> str:
        """Play a Job's pod and wait until its container succeeds; returns its output."""
        name = pod["metadata"]["name"]
        container = f"{name}-{pod['spec']['containers'][0]['name']}"
        self.play([*extra, pod], name)
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            state = self.podman.inspect("container", container)
            restarts = int(state.get("RestartCount", 0))
            if state["State"]["Status"] == "exited":
                succeeded = state["State"]["ExitCode"] == 0
                # OnFailure (the bootstrap Job) restarts a failed container, like the Job's retries.
                if succeeded or pod["spec"].get("restartPolicy") == "Never" or restarts >= backoff_limit:
                    logs = self.podman.run("logs", container, check=False)
                    if succeeded:
                        return logs.stdout + logs.stderr
                    raise RuntimeError(f"pod {name} failed:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        raise TimeoutError(f"pod {name} did not finish within {JOB_TIMEOUT:.0f} s")

    def remove_pod(self, name: str) -> None:
        self.podman.run("pod", "rm", "--force", "--time", "5", name, check=False)

    # -- the release steps ------------------------------------------------------------------------

    def bootstrap_job(self) -> None:
        docs = [d for d in yaml.safe_load_all((self.registry.root / BOOTSTRAP).read_text()) if d]
        configmap = next(d for d in docs if d["kind"] == "ConfigMap")
        job = next(d for d in docs if d["kind"] == "Job")
        pod = job_as_pod(job, self.name("db-bootstrap"))
        # podman makes a configMap volume a machine-wide volume named after the ConfigMap.
        sql = self.name(configmap["metadata"]["name"])
        for volume in pod["spec"]["volumes"]:
            if volume.get("configMap", {}).get("name") == configmap["metadata"]["name"]:
                volume["configMap"]["name"] = sql
        configmap["metadata"]["name"] = sql
        self.volumes.append(sql)
        spec = self._own_volumes(
            self._secret_names(adapt_pod_spec(pod["spec"], {}, {})), pod["metadata"]["name"]
        )
        for container in spec["containers"]:
            env = {e["name"]: e for e in container["env"]}
            env["PGHOST"]["value"] = "127.0.0.1"
            env["PGDATABASE"]["value"] = self.database
            container["env"].append({"name": "PGPORT", "value": str(self.db_port)})
        pod["spec"] = spec
        self.progress("db-bootstrap: the k8s/ Job's pod (psql) creates schemas, roles and grants")
        self.run_pod(pod, [configmap], backoff_limit=job["spec"].get("backoffLimit", 0))
        self.remove_pod(pod["metadata"]["name"])

    def render(self, renderer: ChartRenderer, service: Service) -> list[Doc]:
        release = self.name(service.name)
        return renderer.render(service.name, release, pod_values(service, self.mode, self.engine))

    def migration_job(self, service: Service, docs: list[Doc]) -> None:
        job = next(d for d in docs if d["kind"] == "Job")
        pod = job_as_pod(job, f"{job['metadata']['name']}")
        self._adapt(service, pod)
        command = " ".join(pod["spec"]["containers"][0]["command"])
        self.progress(f"{service.name}: the chart's migration hook ({command})")
        self.run_pod(pod, [], backoff_limit=0)
        self.remove_pod(pod["metadata"]["name"])

    def seed(self, service: Service, docs: list[Doc]) -> None:
        """Demo data, as `make up` seeds it: `django-admin seed_demo` in a one-off pod of the image."""
        job = next(d for d in docs if d["kind"] == "Job")
        pod = job_as_pod(job, f"{self.name(service.name)}-seed")
        container = pod["spec"]["containers"][0]
        container["name"] = "seed"
        container["command"] = ["django-admin", "seed_demo"]
        container["env"] += [{"name": "MESH_LOCAL_DEV", "value": "1"}]
        if service.name == "identity":
            clients = {
                name: {"audiences": sorted({*self.registry[name].calls, "identity"}), "secret": secret}
                for name, secret in self.client_secrets.items()
            }
            container["env"].append({"name": "MESH_SERVICE_CLIENTS", "value": json.dumps(clients)})
        self._adapt(service, pod)
        try:
            output = self.run_pod(pod, [])
        except RuntimeError as exc:
            if "Unknown command" not in str(exc):
                raise
            output = ""  # the service has no demo data
        finally:
            self.remove_pod(pod["metadata"]["name"])
        for line in output.splitlines():
            if line.strip():
                self.progress(f"{service.name}: {line.strip()}")

    def _port_map(self, service: Service) -> dict[int, int]:
        return self.ports[service.name].port_map()

    def _adapt(self, service: Service, pod: Doc) -> None:
        replacements = address_replacements(self.registry, self.ports, service.name)
        spec = adapt_pod_spec(pod["spec"], replacements, self._port_map(service))
        pod["spec"] = self._own_volumes(spec, pod["metadata"]["name"])

    def deployment(self, service: Service, docs: list[Doc]) -> None:
        replacements = address_replacements(self.registry, self.ports, service.name)
        configmaps = [d for d in docs if d["kind"] == "ConfigMap" and "data" in d]
        for configmap in configmaps:
            configmap["data"] = adapt_env_map(configmap["data"], replacements)
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        template = deployment["spec"]["template"]
        spec = adapt_pod_spec(template["spec"], replacements, self._port_map(service))
        template["spec"] = self._own_volumes(spec, deployment["metadata"]["name"])
        started = time.monotonic()
        engine = f", {self.engine} sidecar" if self.mode == "sidecar" else ""
        self.progress(f"{service.name}: playing its Deployment ({self.mode} mode{engine})")
        self.play([*configmaps, deployment], f"{service.name}-deployment")
        self.wait_ready(service, f"{deployment['metadata']['name']}-pod-0")
        self.timings[service.name] = time.monotonic() - started
        self.progress(
            f"{service.name}: ready on {self.url(service.name)} ({self.timings[service.name]:.1f} s)"
        )

    def wait_ready(self, service: Service, pod: str) -> None:
        url = f"{self.url(service.name)}{READYZ}"
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                # A worker loads the app on its first request: slow on a busy machine.
                response = httpx.get(url, timeout=10.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(0.5)
        logs = "\n".join(self.container_logs(pod))
        raise TimeoutError(f"{url} was not ready within {READY_TIMEOUT:.0f} s (last: {last})\n{logs}")

    def container_logs(self, pod: str, lines: int = 30) -> list[str]:
        out = []
        for container in self.containers(pod):
            result = self.podman.run("logs", "--tail", str(lines), container, check=False)
            out.append(f"--- {container}\n{result.stdout}{result.stderr}")
        return out

    def containers(self, pod: str) -> list[str]:
        """The pod's own containers (not its infra container)."""
        result = self.podman.run(
            "ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}} {{.IsInfra}}", check=False
        )
        return [line.split()[0] for line in result.stdout.splitlines() if line.endswith("false")]

    # -- lifecycle ----------------------------------------------------------------------------------

    def up(self, renderer: ChartRenderer) -> None:
        started = time.monotonic()
        self.start_database()
        self.create_secrets()
        self.bootstrap_job()
        rendered = {service.name: self.render(renderer, service) for service in self.services}

        # Releases are independent of each other: each one's hook, then its seed, side by side.
        def migrate_and_seed(service: Service) -> None:
            self.migration_job(service, rendered[service.name])
            self.seed(service, rendered[service.name])

        self._each(migrate_and_seed)
        # identity first: the others' sidecars and apps fetch its keys at start.
        first, *rest = self.services
        self.deployment(first, rendered[first.name])
        self._each(lambda s: self.deployment(s, rendered[s.name]), rest)
        self.timings["all ready"] = time.monotonic() - started

    def _each(self, step: Callable[[Service], object], services: list[Service] | None = None) -> None:
        """Run ``step`` for every service at once; the first failure is raised once all are done."""
        chosen = self.services if services is None else services
        with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
            futures = [pool.submit(step, service) for service in chosen]
        for future in futures:
            future.result()

    def down(self) -> None:
        """Remove every pod, volume and secret this run created (and the server, if it started it)."""
        for path in reversed(self.played):
            self.podman.run("kube", "down", str(path), check=False)
        for pod in reversed(self.pods):
            if self.podman.run("pod", "exists", pod, check=False).returncode == 0:
                self.remove_pod(pod)
        for volume in self.volumes:
            if self.podman.run("volume", "exists", volume, check=False).returncode == 0:
                self.podman.run("volume", "rm", "--force", volume, check=False)
        for name in self.secrets:
            self.podman.run("secret", "rm", name, check=False)
        if self.started_server and self.server is not None:
            self.server.stop()
        if self._work is not None:
            for path in self._work.iterdir():
                path.unlink()
            self._work.rmdir()


def _superuser_password(admin_url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(admin_url).password or "")


def print_summary(run: PodsRun) -> None:
    print()
    print("  pods (podman kube play, host network on 127.0.0.1):")
    for pod in run.pods:
        if run.podman.run("pod", "exists", pod, check=False).returncode == 0:
            print(f"    {pod:<22} {', '.join(run.containers(pod))}")
    print()
    for service in run.services:
        ports = run.ports[service.name]
        internal = f"metrics :{ports.metrics}" + (
            f", sidecar metrics :{ports.sidecar_metrics}" if run.mode == "sidecar" else ""
        )
        print(
            f"  {service.name:<10} {run.url(service.name)}  ({internal}; "
            f"ready after {run.timings[service.name]:.1f} s)"
        )
    print(f"\n  all ready {run.timings['all ready']:.1f} s after start\n")
    if {"identity", "catalog", "orders"} <= set(run.ports):
        print(
            JOURNEY.format(identity=run.url("identity"), catalog=run.url("catalog"), orders=run.url("orders"))
        )
    print("  differences from `helm install` (mesh pods --explain):", flush=True)


def run_pods(registry: Registry, args: argparse.Namespace, progress: Progress) -> int:
    if getattr(args, "explain", False):
        for what, why in ADAPTATIONS:
            print(f"- {what}\n    because {why}")
        return 0
    podman = Podman(registry.root)
    run = PodsRun(
        registry=registry,
        podman=podman,
        mode=args.mode,
        engine=args.sidecar_engine,
        port_offset=args.port_offset,
        database=args.database,
        state_dir=Path(args.state_dir) if getattr(args, "state_dir", None) else None,
        progress=progress,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise Stopped

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        if not args.no_build:
            progress("images: building (cached layers are reused)")
            build_images(podman, registry, progress=progress)
        with tempfile.TemporaryDirectory(prefix="mesh-charts-") as tmp:
            renderer = ChartRenderer(registry.root, Path(tmp))
            run.up(renderer)
        print_summary(run)
        for what, _why in ADAPTATIONS:
            print(f"    - {what}")
        progress("press Ctrl-C to stop (every pod, volume and secret is removed)")
        while not stop.is_set():
            stop.wait(1.0)
    except Stopped:
        progress("stopping")
    except (RuntimeError, TimeoutError, PodmanError, subprocess.SubprocessError) as exc:
        progress(f"failed: {exc}")
        code = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        progress("removing pods, volumes and secrets")
        run.down()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        progress("stopped")
    return code
