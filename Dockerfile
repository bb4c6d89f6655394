# syntax=docker/dockerfile:1
# Every deployable image of the mesh, built from the repository root (one uv workspace, one uv.lock).
# A service's image is the `service` target with its name; the meshauth sidecar's is `sidecar`:
#   docker build --target service --build-arg SERVICE=identity -t ghcr.io/django-mesh/identity:0.1.0 .
#   docker build --target sidecar -t ghcr.io/django-mesh/meshauth:0.1.0 .
# A new service needs no Dockerfile of its own: its mesh.toml entry and package are enough.
# Runs as user 10001 with a read-only root filesystem; the chart mounts memory-backed /tmp (and
# PROMETHEUS_MULTIPROC_DIR for a service). docs/runtime-contract.md lists the environment it reads.

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# The workspace and uv, shared by every image's build.
FROM python:3.11.14-slim-bookworm AS workspace
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode compiled at build time: the running container cannot write .pyc files.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY . .

# One service and what it declares: no dev groups, workspace members installed as wheels
# (--no-editable), so the final image needs /app alone and no source tree.
FROM workspace AS service-build
ARG SERVICE
# The CA bundle uv trusts for its downloads (`mesh images` passes the image's system bundle, which
# holds a TLS-intercepting proxy's CA on machines that have one); unset, uv uses its built-in roots.
ARG SSL_CERT_FILE
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package "${SERVICE:?build with --build-arg SERVICE=<name>}"
ENV DJANGO_SETTINGS_MODULE=${SERVICE}.settings \
    STATIC_ROOT=/app/staticfiles
# collectstatic imports the settings but serves nothing: MESHKIT_BUILD=1 lets it run without the
# runtime's configuration (no secret, no database address), and is set for this one step only.
RUN MESHKIT_BUILD=1 /app/.venv/bin/django-admin collectstatic --noinput

# meshauth alone (no Django extra): the sidecar is an asyncio proxy (uvloop, httptools).
FROM workspace AS sidecar-build
ARG SSL_CERT_FILE
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package meshauth

# What every image runs on: the app user, no build tool, no source tree. /app is copied in owned by
# root: the app user can read and run its code, not change it.
FROM python:3.11.14-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
EXPOSE 8000

# The meshauth sidecar: verifies tokens and forwards to the app on 127.0.0.1 in the same pod.
# HAProxy (Debian's 2.6) serves the port instead of the Python proxy with MESHAUTH_SIDECAR_ENGINE=haproxy
# (the charts' auth.sidecar.engine); the sidecar process then configures and watches it.
FROM runtime AS sidecar
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends 'haproxy=2.6.*' \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log
COPY --from=sidecar-build /app /app
USER 10001:10001
ENTRYPOINT ["meshauth-sidecar"]

# A service: gunicorn with the shared configuration, serving the WSGI module next to the settings
# DJANGO_SETTINGS_MODULE names (meshkit.gunicorn's wsgi_app), so the command holds no service name.
# Last, so a build without --target makes a service image.
FROM runtime AS service
ARG SERVICE
COPY --from=service-build /app /app
ENV DJANGO_SETTINGS_MODULE=${SERVICE}.settings \
    STATIC_ROOT=/app/staticfiles
USER 10001:10001
ENTRYPOINT ["gunicorn", "--config", "python:meshkit.gunicorn"]
