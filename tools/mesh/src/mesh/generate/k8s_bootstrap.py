"""k8s/db-bootstrap's generated manifests, from mesh.toml: one source for schemas, roles and read grants.

- ``bootstrap.yaml``: the SQL (from `mesh.bootstrap`, the same statements `mesh db bootstrap` runs on a
  laptop) in a ConfigMap, and the Job that runs it with psql. It is idempotent, and takes every
  password from the environment through psql's \\getenv, so no password is ever part of the ConfigMap
  or the Job's command line.
- ``dev-secrets.yaml``: the development-only Secrets a local cluster needs.

Written by `make generate` (:mod:`mesh.generate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mesh.bootstrap import password_variable, psql_script
from mesh.bootstrap import roles as mesh_roles
from mesh.registry import Registry, Service
from meshkit.contract import variable

__all__ = ["DIRECTORY", "files"]

DIRECTORY = Path("k8s/db-bootstrap")
POSTGRES_IMAGE = "postgres:17.6-bookworm"


def render_sql(services: Iterable[Service]) -> str:
    """The psql script: exactly the statements `mesh db bootstrap` runs locally (mesh.bootstrap)."""
    return psql_script(list(services))


def roles(services: Iterable[Service]) -> list[str]:
    return mesh_roles(list(services))


def _yaml_block(text: str, indent: int) -> str:
    pad = " " * indent
    return "\n".join(pad + line if line else "" for line in text.splitlines())


def render(services: list[Service]) -> str:
    sql = render_sql(services)
    env = "\n".join(
        f"""            - name: {password_variable(role)}
              valueFrom:
                secretKeyRef:
                  name: mesh-db-roles
                  key: {role}"""
        for role in roles(services)
    )
    labels = "app.kubernetes.io/name: db-bootstrap\napp.kubernetes.io/part-of: django-mesh"
    return f"""# Creates the schemas, login roles and read grants of every service in mesh.toml.
# Needs the Secrets postgres-admin (POSTGRES_PASSWORD of the `postgres` superuser) and mesh-db-roles (one key
# per role below). Re-run after mesh.toml changes: kubectl delete job db-bootstrap; kubectl apply -k k8s
# Roles: {", ".join(roles(services))}
apiVersion: v1
kind: ConfigMap
metadata:
  name: db-bootstrap-sql
  namespace: mesh
  labels:
{_yaml_block(labels, 4)}
data:
  bootstrap.sql: |
{_yaml_block(sql, 4)}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: db-bootstrap
  namespace: mesh
  labels:
{_yaml_block(labels, 4)}
spec:
  backoffLimit: 6
  activeDeadlineSeconds: 600
  template:
    metadata:
      labels:
{_yaml_block(labels, 8)}
    spec:
      restartPolicy: OnFailure
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: psql
          image: {POSTGRES_IMAGE}
          imagePullPolicy: IfNotPresent
          command: ["psql", "--no-psqlrc", "--file", "/sql/bootstrap.sql"]
          env:
            - name: PGHOST
              value: postgres
            - name: PGDATABASE
              value: mesh
            - name: PGUSER
              value: postgres
            - name: PGCONNECT_TIMEOUT
              value: "5"
            - name: PGPASSWORD
              valueFrom:
                secretKeyRef:
                  name: postgres-admin
                  key: POSTGRES_PASSWORD
{env}
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              cpu: 500m
              memory: 128Mi
          securityContext:
            runAsNonRoot: true
            runAsUser: 10001
            runAsGroup: 10001
            privileged: false
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop:
                - ALL
            seccompProfile:
              type: RuntimeDefault
          volumeMounts:
            - name: sql
              mountPath: /sql
              readOnly: true
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: sql
          configMap:
            name: db-bootstrap-sql
        - name: tmp
          emptyDir:
            medium: Memory
            sizeLimit: 16Mi
"""


def _secret(name: str, data: dict[str, str]) -> str:
    items = "\n".join(f"  {key}: {value}" for key, value in data.items())
    return f"""apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: mesh
  labels:
    app.kubernetes.io/part-of: django-mesh
type: Opaque
stringData:
{items}
"""


def render_dev_secrets(services: list[Service]) -> str:
    """DEVELOPMENT-ONLY Secrets: role passwords and each chart's default existingSecret (<svc>-secrets)."""
    docs = [_secret("mesh-db-roles", {role: f"dev-only-{role}" for role in roles(services)})]
    read_url = variable("<OWNER>_READ_DATABASE_URL")
    for service in sorted(services, key=lambda s: s.name):
        name = service.name
        data = {
            "DATABASE_URL": f"postgres://{name}:dev-only-{name}@postgres:5432/mesh",
            "SECRET_KEY": f"dev-only-{name}-secret-key-never-use-in-production",
        }
        if service.calls:
            data["MESHAUTH_CLIENT_SECRET"] = f"dev-only-{name}-client-secret"
        for owner in service.reads:
            reader = service.reader_role
            data[read_url.named(owner)] = f"postgres://{reader}:dev-only-{reader}@postgres:5432/mesh"
        docs.append(_secret(f"{name}-secrets", data))
    return (
        "# DEVELOPMENT-ONLY credentials for a local cluster: every value says so. Production creates\n"
        + "# mesh-db-roles and each <service>-secrets from its secret store instead.\n"
        + "---\n".join(docs)
    )


def files(registry: Registry) -> dict[Path, str]:
    """Every generated file of k8s/db-bootstrap (relative to the repository) and its content."""
    services = list(registry)
    return {
        DIRECTORY / "bootstrap.yaml": render(services),
        DIRECTORY / "dev-secrets.yaml": render_dev_secrets(services),
    }
