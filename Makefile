# Apiary developer and CI entry points. `make help` lists the targets.
#
# Python tooling: a bootstrap venv in .tools/ holds uv; `uv sync --frozen` builds .venv/
# from uv.lock. Tests need PostgreSQL and Redis server binaries (Debian packages); they
# are started as throwaway processes by scripts/services.sh, never as system services.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# The interpreter .venv is built on: the distribution's own /usr/bin/python3 when it is new
# enough (Debian builds it with PGO and LTO and links libpython into it), else the first one
# uv finds. A default source build (pyenv's, `--enable-shared` without optimizations) runs
# Apiary's Python code measurably slower: see docs/benchmarks.md, "Interpreter".
VENV_PYTHON ?= $(shell /usr/bin/python3 -c 'import sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null)
UV := .tools/bin/uv
VENV := .venv
# Stamp written after a successful `uv sync`; it lives inside .venv so deleting .venv
# forces a resync, and it is older than uv.lock/pyproject.toml whenever they change.
SYNC_STAMP := $(VENV)/.apiary-sync-stamp

# Extra arguments for both pytest passes of `make test`, e.g. PYTEST_ARGS="-x -k tenants".
PYTEST_ARGS ?=

# Prefix for commands that need root: nothing when we are root, else sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: help venv deps-test deps-prometheus lint run test clean node web web-api graphql-schema test-web deps-web
.PHONY: deploy-lint image check-image

# The dashboard (web/): npm installs from package-lock.json; the build is redone when any
# of its sources is newer than web/dist/index.html.
NPM_STAMP := web/node_modules/.apiary-npm-stamp
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) web/index.html \
	web/vite.config.ts web/tailwind.config.js web/postcss.config.js web/tsconfig.json

# List the targets with their `##` descriptions.
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

# Create/refresh .venv; a no-op while uv.lock and pyproject.toml are unchanged.
venv: $(SYNC_STAMP) ## Create or update .venv from uv.lock (fast when up to date)

$(UV):
	rm -rf .tools
	@# Debian's python3 needs python3-venv for `-m venv`; install it once if missing.
	$(PYTHON) -m venv .tools || { \
		rm -rf .tools; \
		echo "python3 -m venv failed; installing python3-venv"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends python3-venv; \
		$(PYTHON) -m venv .tools; \
	}
	.tools/bin/pip install --quiet uv

$(SYNC_STAMP): uv.lock pyproject.toml Makefile | $(UV)
	@# llama-cpp-python builds from source; GGML_NATIVE=OFF keeps the build portable across CPUs.
	@# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI and this machine) every
	@# process would otherwise compile each module it imports, every time it starts.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(UV) sync --frozen --compile-bytecode \
		$(if $(VENV_PYTHON),--python $(VENV_PYTHON))
	touch $@

# Prometheus's promtool and Alertmanager's amtool check deploy/prometheus (deploy-lint), and
# the observability tests run a real Prometheus: Debian's packages, installed when missing
# (apt does not start them here; the tests start their own).
deps-prometheus: ## Install prometheus and prometheus-alertmanager (apt) if missing
	@pkgs=""; \
	{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || pkgs="$$pkgs prometheus"; \
	command -v amtool >/dev/null 2>&1 || pkgs="$$pkgs prometheus-alertmanager"; \
	if [ -z "$$pkgs" ]; then \
		echo "deps-prometheus: prometheus and prometheus-alertmanager already present"; \
	else \
		echo "deps-prometheus: installing$$pkgs"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends $$pkgs; \
	fi

# Install the PostgreSQL and Redis servers (and Prometheus), but only when they are missing.
deps-test: deps-prometheus ## Install postgresql and redis-server (apt) if their binaries are missing
	@pkgs=""; \
	have_pg=""; \
	for d in /usr/lib/postgresql/*/bin; do \
		if [ -x "$$d/pg_ctl" ] && [ -x "$$d/initdb" ]; then have_pg=1; fi; \
	done; \
	[ -n "$$have_pg" ] || pkgs="$$pkgs postgresql"; \
	{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 \
		|| pkgs="$$pkgs redis-server"; \
	if [ -z "$$pkgs" ]; then \
		echo "deps-test: postgresql and redis-server already present"; \
	else \
		echo "deps-test: installing$$pkgs"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends $$pkgs; \
	fi

# Node.js and npm for the dashboard: Debian's packages when the machine has none.
node: ## Install nodejs and npm (apt) if missing
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		echo "node: $$(node --version), npm $$(npm --version)"; \
	else \
		echo "node: installing nodejs npm"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends nodejs npm; \
	fi

$(NPM_STAMP): web/package.json web/package-lock.json | node
	cd web && npm ci --no-audit --no-fund
	touch $@

web/dist/index.html: $(NPM_STAMP) $(WEB_SOURCES)
	cd web && npm run build

web: web/dist/index.html ## Build the dashboard into web/dist (when missing or stale)

# Regenerate the OpenAPI spec and the dashboard's typed client after an API change.
web-api: venv $(NPM_STAMP) ## Regenerate web/openapi.json, web/src/api/schema.d.ts and constraints.ts
	$(VENV)/bin/apiary openapi --output web/openapi.json
	cd web && npm run gen:api

# Regenerate the committed GraphQL schema (SDL) after a change to apiary/graphql.
graphql-schema: venv ## Regenerate docs/schema.graphql
	$(VENV)/bin/apiary graphql-schema --output docs/schema.graphql

# Debian's Chromium for the end-to-end tests (driven by playwright-core).
deps-web: node ## Install chromium (apt) if /usr/bin/chromium is missing
	@if [ -x /usr/bin/chromium ]; then \
		echo "deps-web: chromium already present"; \
	else \
		echo "deps-web: installing chromium"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium; \
	fi

# Lint, typecheck, unit tests, the generated client's freshness, then the browser tests
# against a real `apiary serve` (which serves the fresh build).
test-web: venv deps-web web ## Dashboard: biome, tsc, vitest, client freshness, e2e in Chromium
	cd web && npm run lint && npm run typecheck && npm test && npm run check:api
	cd web && npm run e2e

# Static checks; runs all three tools and fails if any of them fails.
lint: venv ## Run ruff check, ruff format --check and mypy
	@status=0; \
	echo "+ ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "+ ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "+ mypy"; $(VENV)/bin/mypy || status=1; \
	exit $$status

# Initialise (migrate; first run creates the super admin and prints its one-time
# password), then serve in the foreground.
run: venv web ## Build the dashboard, initialise the database and serve Apiary (prints the URL)
	$(VENV)/bin/apiary init
	exec $(VENV)/bin/apiary serve

# Lint, the deployment checks, then both pytest passes against throwaway PostgreSQL/Redis
# (see scripts/test.sh).
test: venv deps-test lint deploy-lint ## Lint, deploy-lint, pytest on PostgreSQL+Redis and SQLite, test-web
	scripts/test.sh $(PYTEST_ARGS)
	$(MAKE) test-web

# The production topology (tests/topology/harness.py): two `apiary serve` replicas and two
# `apiary worker` processes over a PostgreSQL and a Redis of their own, with processes,
# Redis and PostgreSQL failing mid-run. The same scenarios run in pass 1 of `make test`.
.PHONY: prod-check
prod-check: venv deps-test ## Production-topology scenarios: replicas, workers, faults (a few minutes)
	@mkdir -p .test-services; \
	dir=$$(mktemp -d "$(CURDIR)/.test-services/run.XXXXXX"); \
	echo $$$$ >"$$dir.owner"; \
	trap 'scripts/services.sh stop "'"$$dir"'" >/dev/null 2>&1; rm -f "'"$$dir"'.owner"' EXIT; \
	scripts/services.sh start "$$dir" >/dev/null && set -a && . "$$dir/env" && set +a && \
	$(VENV)/bin/pytest tests/topology -rA $(PYTEST_ARGS)

# Remove everything the targets above create.
clean: ## Remove .venv, .tools, stamps and .test-services
	@for d in .test-services/run.*; do \
		[ -d "$$d" ] && scripts/services.sh stop "$$d" || true; \
	done
	rm -rf $(VENV) .tools .test-services .deploy-tools .image-build

# Apiary vs LiteLLM's proxy vs the upstream called directly, on this machine (a few
# minutes; the first run also installs LiteLLM into bench/.litellm-venv). See docs/benchmarks.md.
.PHONY: bench-gateway
bench-gateway: venv ## Benchmark /v1/chat/completions against LiteLLM's proxy (BENCH_ARGS=--quick)
	$(VENV)/bin/python bench/gateway.py $(BENCH_ARGS)

# --- Deployment (deploy/) -------------------------------------------------------------
# The deployment checks run from their own venv, built from a pinned requirements file so
# uv.lock carries none of them; it is rebuilt when that file changes.
DEPLOY_TOOLS := .deploy-tools
DEPLOY_STAMP := $(DEPLOY_TOOLS)/.apiary-stamp

$(DEPLOY_STAMP): deploy/lint/requirements.txt
	rm -rf $(DEPLOY_TOOLS)
	$(PYTHON) -m venv $(DEPLOY_TOOLS) || { \
		rm -rf $(DEPLOY_TOOLS); \
		echo "python3 -m venv failed; installing python3-venv"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends python3-venv; \
		$(PYTHON) -m venv $(DEPLOY_TOOLS); \
	}
	$(DEPLOY_TOOLS)/bin/pip install --quiet --disable-pip-version-check \
		--requirement deploy/lint/requirements.txt
	touch $@

# Offline checks of the chart, CRD objects, Compose, Terraform, Dockerfile and pipelines;
# fails on any finding. DEPLOY_LINT_STEPS="helm render k8s" runs some steps only. terraform is
# not installed here: without it that step says NOT RUN (a failure with DEPLOY_LINT_REQUIRE_ALL=1).
deploy-lint: $(DEPLOY_STAMP) deps-prometheus ## Validate deploy/ (chart, CRDs, checkov, compose, terraform, pipelines, alert rules)
	$(DEPLOY_TOOLS)/bin/python deploy/lint/deploy_lint.py $(DEPLOY_LINT_STEPS)

# The image, built with podman from a Debian base made offline (deploy/docker/build-image.sh;
# BASE_IMAGE=... builds on another base). Not part of `make test`: llama.cpp compiles for
# several minutes. check-image runs it against host PostgreSQL and Redis (deploy/check-image.sh).
IMAGE ?= localhost/apiary:dev

image: ## Build the container image with podman (IMAGE=localhost/apiary:dev)
	@missing=""; \
	for tool in podman buildah debootstrap runc catatonit; do \
		command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "image: installing$$missing"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends $$missing; \
	fi
	deploy/docker/build-image.sh $(IMAGE)

# catatonit: the pause process `podman kube play` needs (check-image, step 7).
check-image: deps-test $(DEPLOY_STAMP) ## Check the image (init, serve, worker, /v1, a swarm run, the chart under kube play)
	@command -v catatonit >/dev/null 2>&1 || { \
		echo "check-image: installing catatonit"; \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends catatonit; \
	}
	deploy/check-image.sh $(IMAGE)
