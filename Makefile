# Two entry points (see README.md): `make demo` and `make test`. Both install what they
# need first: system packages (PostgreSQL, Java, Maven, Chromium, Node.js), a virtualenv
# in .venv and the web UI built into ui/dist (npm ci + npm run build in ui/).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint services-down

install: $(VENV)/.installed ui/dist/index.html

$(VENV)/.installed: pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The web UI: npm ci when the lockfile changed, a build when any source did.
UI_SOURCES := $(shell find ui/src -type f 2>/dev/null) ui/build.mjs ui/tsconfig.json
ui/node_modules/.package-lock.json: ui/package.json ui/package-lock.json | $(VENV)/.installed
	cd ui && npm ci --ignore-scripts --no-audit --no-fund

ui/dist/index.html: ui/node_modules/.package-lock.json $(UI_SOURCES)
	cd ui && npm run build

demo: install
	$(BIN)/runstream demo

test: install
	$(BIN)/python -m pytest

# Static checks (ruff, vulture, import-linter); CI runs them before the tests.
lint: install
	bash scripts/lint.sh

services-down:
	-$(BIN)/runstream services down
	-$(BIN)/runstream services down --state-dir .state/test-stack
	-$(BIN)/runstream services down --state-dir .state/test-stack-faults
	-$(BIN)/runstream services down --state-dir .state/test-stack-cluster
