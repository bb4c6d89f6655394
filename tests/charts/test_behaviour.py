"""What the library chart renders for a service, scenario by scenario."""

from __future__ import annotations

import json

import pytest
import yaml
from chartlib import CHARTS, Rendered, Renderer, app_chart_names, scenario_values

SELECTOR = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def pod(rendered: Rendered, kind: str = "Deployment") -> dict:
    return rendered.one(kind)["spec"]["template"]


def app(rendered: Rendered) -> dict:
    return pod(rendered)["spec"]["containers"][0]


def env(rendered: Rendered) -> dict:
    data = dict(rendered.configmap(app(rendered)["envFrom"][0]["configMapRef"]["name"])["data"])
    data.update({e["name"]: e.get("value", e.get("valueFrom")) for e in app(rendered)["env"]})
    return data


@pytest.mark.parametrize("chart", app_chart_names())
def test_selectors_hold_only_name_and_instance(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(
        chart, yaml.safe_load((CHARTS / chart / "ci/production-values.yaml").read_text())
    )
    assert set(rendered.one("Deployment")["spec"]["selector"]["matchLabels"]) == SELECTOR
    assert set(rendered.one("Service")["spec"]["selector"]) == SELECTOR
    assert set(rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]) == SELECTOR
    service_selector = rendered.one("Service")["spec"]["selector"]
    job_labels = pod(rendered, "Job")["metadata"]["labels"]
    assert not service_selector.items() <= job_labels.items(), "the Service would route to the migration pod"
    assert service_selector.items() <= pod(rendered)["metadata"]["labels"].items()


def test_checksum_follows_the_configuration(renderer: Renderer) -> None:
    base = pod(renderer.render("identity"))["metadata"]["annotations"]["checksum/config"]
    same = pod(renderer.render("identity", {"podLabels": {"team": "a"}}))["metadata"]["annotations"][
        "checksum/config"
    ]
    changed = pod(renderer.render("identity", {"django": {"logLevel": "DEBUG"}}))["metadata"]["annotations"][
        "checksum/config"
    ]
    assert base == same
    assert base != changed


def test_autoscaling_owns_the_replica_count(renderer: Renderer) -> None:
    fixed = renderer.render("identity", {"replicaCount": 3})
    assert fixed.one("Deployment")["spec"]["replicas"] == 3
    assert not fixed.kind("HorizontalPodAutoscaler")
    scaled = renderer.render(
        "identity", {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 7}}
    )
    assert "replicas" not in scaled.one("Deployment")["spec"]
    hpa = scaled.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 7)
    assert hpa["scaleTargetRef"]["name"] == scaled.one("Deployment")["metadata"]["name"]


@pytest.mark.parametrize("chart", app_chart_names())
def test_migration_hook(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart)
    job = rendered.one("Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    assert job["spec"]["backoffLimit"] >= 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["django-admin", "migrate_locked"]
    assert container["image"] == app(rendered)["image"]
    job_env = {e["name"] for e in container["env"]}
    assert {"DATABASE_URL", "SECRET_KEY"} <= job_env
    # the hook runs before the release's ConfigMap exists: it must not need it
    assert "envFrom" not in container
    assert not renderer.render(chart, {"migrations": {"enabled": False}}).kind("Job")


@pytest.mark.parametrize("chart", app_chart_names())
def test_no_secret_values_and_images_pinned(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart)
    assert not rendered.kind("Secret")
    e = env(rendered)
    for name in ("DATABASE_URL", "SECRET_KEY"):
        assert "secretKeyRef" in e[name]
    version = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())["appVersion"]
    spec = pod(rendered)["spec"]
    for container in [*spec["initContainers"], *spec["containers"]]:
        assert container["image"].endswith(f":{version}")
    digest = "sha256:" + "a" * 64
    pinned = renderer.render(chart, {"image": {"tag": "1.2.3", "digest": digest}})
    assert app(pinned)["image"] == f"ghcr.io/django-mesh/{chart}:1.2.3@{digest}"


@pytest.mark.parametrize("chart", app_chart_names())
def test_graceful_shutdown_fits_the_grace_period(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart)
    spec = pod(rendered)["spec"]
    sleep = int(app(rendered)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert int(env(rendered)["GUNICORN_GRACEFUL_TIMEOUT"]) + sleep < spec["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("chart", app_chart_names())
def test_memory_volumes_for_tmp_and_metrics(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart)
    spec = pod(rendered)["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in app(rendered)["volumeMounts"]}
    metrics_dir = env(rendered)["PROMETHEUS_MULTIPROC_DIR"]
    for path in ("/tmp", metrics_dir):  # noqa: S108
        assert volumes[mounts[path]]["emptyDir"]["medium"] == "Memory"
    # the principal secret is shared through memory: written by the pod's first init container
    # before anything reads it, read-only for the sidecar and the app
    secret_file = env(rendered)["MESHAUTH_PRINCIPAL_SECRET_FILE"]
    shared = next(m for m in app(rendered)["volumeMounts"] if secret_file.startswith(m["mountPath"] + "/"))
    assert shared["readOnly"] is True
    assert volumes[shared["name"]]["emptyDir"]["medium"] == "Memory"
    writer, sidecar = spec["initContainers"]
    assert writer["name"] == "principal-secret"
    assert writer["command"] == ["meshauth-principal-secret", secret_file]
    assert any(m["name"] == shared["name"] and not m.get("readOnly") for m in writer["volumeMounts"])
    assert sidecar["name"] == "meshauth"
    assert any(m["name"] == shared["name"] and m.get("readOnly") for m in sidecar["volumeMounts"])


def test_a_service_client_shares_its_tokens_in_a_memory_volume_of_the_app(renderer: Renderer) -> None:
    # orders calls catalog: its workers share their service tokens, so one recycled while identity is
    # down still calls. The directory is memory-backed, writable by the app, seen by no other container.
    rendered = renderer.render("orders")
    spec = pod(rendered)["spec"]
    token_dir = env(rendered)["MESHAUTH_TOKEN_CACHE_DIR"]
    (mount,) = [m for m in app(rendered)["volumeMounts"] if m["mountPath"] == token_dir]
    assert not mount.get("readOnly")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory"
    others = [c for c in spec["initContainers"] + spec["containers"] if c["name"] != "app"]
    assert [c["name"] for c in others] == ["principal-secret", "meshauth"]
    assert [c["name"] for c in others if mount["name"] in {m["name"] for m in c["volumeMounts"]}] == []
    # A service without client credentials has no tokens to share.
    assert "MESHAUTH_TOKEN_CACHE_DIR" not in env(renderer.render("catalog"))


@pytest.mark.parametrize("chart", app_chart_names())
def test_sidecar_as_an_ordinary_container_for_runtimes_without_native_sidecars(
    renderer: Renderer, chart: str
) -> None:
    native = pod(renderer.render(chart))["spec"]
    plain = pod(renderer.render(chart, {"auth": {"sidecar": {"native": False}}}))["spec"]
    assert native["initContainers"][1]["restartPolicy"] == "Always"
    # the secret writer stays first; the sidecar moves beside the app, the same container otherwise
    assert [c["name"] for c in plain["initContainers"]] == ["principal-secret"]
    assert [c["name"] for c in plain["containers"]] == ["app", "meshauth"]
    moved = dict(native["initContainers"][1])
    del moved["restartPolicy"]
    assert plain["containers"][1] == moved
    assert plain["containers"][0] == native["containers"][0]


@pytest.mark.parametrize("engine", ["python", "haproxy"])
def test_the_sidecar_engine_is_told_to_the_sidecar_only(renderer: Renderer, engine: str) -> None:
    # The pods suite (tests/pods) runs the HAProxy engine from the sidecar image.
    rendered = renderer.render("orders", {"auth": {"sidecar": {"engine": engine}}})
    spec = pod(rendered)["spec"]
    containers = {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}
    sidecar = {e["name"]: e.get("value") for e in containers["meshauth"]["env"]}
    assert sidecar["MESHAUTH_SIDECAR_ENGINE"] == engine
    assert "MESHAUTH_SIDECAR_ENGINE" not in env(rendered)


def test_in_process_mode_has_no_sidecar(renderer: Renderer) -> None:
    rendered = renderer.render("identity", {"auth": {"mode": "inprocess"}})
    assert "initContainers" not in pod(rendered)["spec"]
    assert env(rendered)["MESHAUTH_MODE"] == "inprocess"
    sidecar = renderer.render("identity")
    assert env(sidecar)["MESHAUTH_MODE"] == "sidecar"


@pytest.mark.parametrize(
    ("mode", "access_log", "expected"),
    [
        ("sidecar", None, "false"),
        ("inprocess", None, "true"),
        ("sidecar", True, "true"),
        ("inprocess", False, "false"),
    ],
)
def test_gunicorn_leaves_the_access_log_to_the_sidecar_unless_told(
    renderer: Renderer, mode: str, access_log: bool | None, expected: str
) -> None:
    # The sidecar's line is the pod's access log; gunicorn's would repeat it (docs/observability.md).
    gunicorn = {} if access_log is None else {"gunicorn": {"accessLog": access_log}}
    rendered = renderer.render("catalog", {"auth": {"mode": mode}, **gunicorn})
    assert env(rendered)["GUNICORN_ACCESS_LOG"] == expected


def test_network_policy_allows_what_the_service_needs(renderer: Renderer) -> None:
    orders = renderer.render("orders")
    policy = next(p for p in orders.kind("NetworkPolicy") if p["metadata"]["name"] == "orders")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    peers = [peer for rule in policy["egress"] for peer in rule["to"]]
    called = {p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") for p in peers}
    assert {"identity", "catalog", "postgresql", None} >= called >= {"identity", "catalog", "postgresql"}
    ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert ports == {53, 5432, 8000}
    # The service port for the mesh and the ingress controller; the internal ports for Prometheus only.
    sources = {tuple(port["port"] for port in rule["ports"]): rule["from"] for rule in policy["ingress"]}
    assert set(sources) == {(8000,), (9090, 9091)}
    scraper = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {},
    }
    assert sources[(9090, 9091)] == [scraper]
    assert scraper not in sources[(8000,)]
    managed = renderer.render("orders", {"networkPolicy": {"database": {"cidrs": ["10.0.0.0/24"]}}})
    policy = next(p for p in managed.kind("NetworkPolicy") if p["metadata"]["name"] == "orders")["spec"]
    assert {"ipBlock": {"cidr": "10.0.0.0/24"}} in [peer for rule in policy["egress"] for peer in rule["to"]]
    assert not renderer.render("orders", {"networkPolicy": {"enabled": False}}).kind("NetworkPolicy")


@pytest.mark.parametrize("chart", app_chart_names())
def test_monitoring_objects(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(
        chart,
        {
            "monitoring": {
                "releaseLabel": "kps",
                "serviceMonitor": {"enabled": True},
                "prometheusRule": {"enabled": True},
                "dashboard": {"enabled": True},
            }
        },
    )
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert rendered.one(kind)["metadata"]["labels"]["release"] == "kps"
    assert rendered.one("ServiceMonitor")["spec"]["jobLabel"] == "app.kubernetes.io/name"
    rules = yaml.safe_load((CHARTS / chart / "files/rules.yaml").read_text())
    assert rendered.one("PrometheusRule")["spec"]["groups"] == rules["groups"]
    dashboard = next(
        c
        for c in rendered.kind("ConfigMap")
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    )
    content = json.loads(dashboard["data"][f"{chart}.json"])
    assert content == json.loads((CHARTS / chart / "files/dashboard.json").read_text())
    assert dashboard["metadata"]["annotations"]["grafana_folder"]
    assert "Dashboard: Grafana folder" in rendered.notes
    off = renderer.render(chart)
    assert not off.kind("ServiceMonitor")
    assert not off.kind("PrometheusRule")


@pytest.mark.parametrize("chart", app_chart_names())
def test_notes_tell_how_to_reach_the_service(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart)
    assert f"http://{chart}.mesh.svc.cluster.local:8000/" in rendered.notes
    assert f"port-forward service/{chart} 8000:8000" in rendered.notes
    assert "Dashboard:" in rendered.notes


def test_orders_gets_its_callees_url_and_its_read_only_database(renderer: Renderer) -> None:
    variables = env(renderer.render("orders"))
    assert variables["CATALOG_URL"] == "http://catalog:8000"
    assert variables["CATALOG_READ_DATABASE_URL"] == {
        "secretKeyRef": {"name": "orders-secrets", "key": "CATALOG_READ_DATABASE_URL"}
    }
    # Service tokens name the service; end users' tokens carry the mesh-wide audience.
    assert variables["MESHAUTH_AUDIENCE"] == "orders,mesh"
    assert "CATALOG_URL" not in env(renderer.render("catalog"))


def test_app_and_sidecar_scrape_targets_are_told_apart(renderer: Renderer) -> None:
    rendered = renderer.render("orders", {"monitoring": {"serviceMonitor": {"enabled": True}}})
    endpoints = rendered.one("ServiceMonitor")["spec"]["endpoints"]
    labels = {e["path"]: e["relabelings"][0]["replacement"] for e in endpoints}
    assert labels == {"/metrics": "app", "/metrics/sidecar": "sidecar"}
    assert {e["path"]: e["port"] for e in endpoints} == {
        "/metrics": "metrics",
        "/metrics/sidecar": "sidecar-metrics",
    }


@pytest.mark.parametrize("mode", ["sidecar", "inprocess"])
@pytest.mark.parametrize("chart", app_chart_names())
def test_metrics_and_the_admin_are_off_the_ingress(renderer: Renderer, chart: str, mode: str) -> None:
    values = {**scenario_values(chart, "production"), "auth": {"mode": mode}}
    values["ingress"] = {**values["ingress"], "trustedProxies": ["10.1.0.0/16"]}
    rendered = renderer.render(chart, values)
    backends = [
        path["backend"]["service"]["port"]
        for rule in rendered.one("Ingress")["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends
    assert all(port == {"name": "http"} for port in backends)
    ports = {port["name"]: port for port in rendered.one("Service")["spec"]["ports"]}
    assert ports["http"]["targetPort"] == "http"
    monitored = {e["port"] for e in rendered.one("ServiceMonitor")["spec"]["endpoints"]}
    assert monitored == ({"metrics", "sidecar-metrics"} if mode == "sidecar" else {"metrics"})
    assert monitored <= set(ports) - {"http"}
    app = env(rendered)
    assert app["METRICS_BIND"] == "0.0.0.0:9090"
    assert app["DJANGO_ADMIN_PUBLIC"] == "false"
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}
    # The public port (named http) is the sidecar's in sidecar mode, gunicorn's in-process.
    front = containers["meshauth" if mode == "sidecar" else "app"]
    assert {p["name"]: p["containerPort"] for p in front["ports"]}["http"] == 8000
    if mode == "sidecar":
        sidecar = {e["name"]: e["value"] for e in containers["meshauth"]["env"]}
        assert "/metrics" not in sidecar["MESHAUTH_PUBLIC_PATHS"].split(",")
        assert sidecar["MESHAUTH_SIDECAR_METRICS_LISTEN"] == "0.0.0.0:9091"
        assert sidecar["MESHAUTH_SIDECAR_TRUSTED_PROXIES"] == "10.1.0.0/16"
    else:
        assert app["GUNICORN_FORWARDED_ALLOW_IPS"] == "127.0.0.1,10.1.0.0/16"


@pytest.mark.parametrize("chart", app_chart_names())
def test_in_process_the_ingress_buffers_request_bodies(renderer: Renderer, chart: str) -> None:
    # In-process, no sidecar reads the body before a gunicorn worker is taken: the ingress must.
    values = scenario_values(chart, "production")
    annotation = "nginx.ingress.kubernetes.io/proxy-request-buffering"
    inprocess = renderer.render(chart, {**values, "auth": {"mode": "inprocess"}})
    annotations = inprocess.one("Ingress")["metadata"]["annotations"]
    assert annotations[annotation] == "on"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"  # the user's stay
    sidecar = renderer.render(chart, {**values, "auth": {"mode": "sidecar"}})
    assert annotation not in sidecar.one("Ingress")["metadata"]["annotations"]  # the sidecar buffers
