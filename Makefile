# The two commands that matter: `make up` runs the mesh, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON := 3.11
export UV_PYTHON_DOWNLOADS := never
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: help up test lint format bench sync uv db-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

uv: ## install uv from PyPI when it is missing
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==$(UV_VERSION)" \
		|| python3 -m pip install --quiet --user --break-system-packages "uv==$(UV_VERSION)"

sync: uv ## install every workspace package and tool into .venv (from uv.lock)
	@$(UV) sync --all-packages --locked --quiet

up: sync ## run the whole mesh locally: PostgreSQL, every service under gunicorn behind its sidecar
	@$(UV) run --no-sync mesh up $(ARGS)

test: sync lint ## run every test suite, each in its own pytest process, against real PostgreSQL
	@$(UV) run --no-sync mesh test

# The Django plugin imports a service's settings: placeholders satisfy them (nothing connects), one
# read-only URL per `reads` entry of mesh.toml. Expanded when the recipe runs, after `sync`.
LINT_SETTINGS_ENV = MESH_LOCAL_DEV=1 DATABASE_URL=postgres://lint@127.0.0.1:9/lint $(shell $(UV) run --no-sync \
	python -c 'from mesh.registry import load_registry; from meshcontract import read_database_url_variable as url; \
	print(" ".join(f"{url(o)}=postgres://lint@127.0.0.1:9/lint" for s in load_registry() for o in s.reads))')

lint: sync ## ruff, mypy strict (libs, tools, each service with the Django plugin), deptry, generated files (mesh generate --check)
	@$(UV) run --no-sync ruff check .
	@$(UV) run --no-sync ruff format --check .
	@$(UV) run --no-sync mypy
	@for service in services/*/; do \
		(cd $$service && $(LINT_SETTINGS_ENV) $(UV) run --no-sync mypy) || exit 1; done
	@for package in libs/*/ services/*/ tools/*/; do \
		(cd $$package && $(UV) run --no-sync deptry src) || exit 1; done
	@$(UV) run --no-sync mesh generate --check
	@$(UV) run --no-sync python -m meshcontract --check
	@$(UV) run --no-sync pre-commit validate-config .pre-commit-config.yaml

format: sync ## apply ruff's fixes and formatting
	@$(UV) run --no-sync ruff check --fix .
	@$(UV) run --no-sync ruff format .

bench: sync ## auth cost side by side: req/s, latency, CPU per request (ARGS="--json bench.json")
	@$(UV) run --no-sync mesh bench $(ARGS)

.PHONY: chaos
chaos: sync ## load plus faults (restarts, kills, a PostgreSQL restart, identity's app frozen): what clients saw, and the invariants
	@$(UV) run --no-sync mesh chaos $(ARGS)

db-stop: sync ## stop the embedded PostgreSQL if it is still running
	@$(UV) run --no-sync mesh db stop

clean: ## remove local state (.mesh/: database, logs) and caches
	rm -rf .mesh .pytest_cache .mypy_cache .ruff_cache

.PHONY: generate
generate: sync ## write every per-service file (charts, workflows, skaffold.yaml, k8s bootstrap, dashboards) from mesh.toml and the templates
	@$(UV) run --no-sync mesh generate

.PHONY: dashboards
dashboards: generate ## regenerate everything (dashboards and alert rules too), then draw PNG previews into docs/dashboards/
	@$(UV) run --no-sync python -m mesh.observability render

.PHONY: new-service
new-service: sync ## add a fully wired service: make new-service NAME=payments [ARGS="--port 8004 --reads catalog"]
	@test -n "$(NAME)" || { echo 'usage: make new-service NAME=payments [ARGS="--port 8004 --reads catalog"]'; exit 2; }
	@$(UV) run --no-sync mesh new-service "$(NAME)" $(ARGS)
	@$(UV) sync --all-packages --locked --quiet

.PHONY: images pods
images: sync ## build the four images with podman (django-mesh/<name>:dev); stand-in bases when none can be pulled
	@$(UV) run --no-sync mesh images $(ARGS)

pods: sync ## run the charts' pods from those images under podman kube play, on 127.0.0.1:8001-8003
	@$(UV) run --no-sync mesh pods $(ARGS)

.PHONY: chart-readmes
chart-readmes: sync ## regenerate the app charts' READMEs from values.yaml's ## @param comments (bitnami readme-generator, npm)
	@$(UV) run --no-sync python tests/charts/readmes.py
