# Two entry points (see README.md): `make demo` and `make test`. Both install what they
# need first: system packages (PostgreSQL, Java, Maven) and a virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test services-down

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/runstream demo

test: install
	$(BIN)/python -m pytest

services-down:
	-$(BIN)/runstream services down
	-$(BIN)/runstream services down --state-dir .state/test-stack
