# The two commands a newcomer types: `make demo` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
# `make test AIRFLOW_VERSION=3.1.8` runs the suite on another supported Airflow, in its own venv
# (.venv-3.1.8); the default version keeps the plain .venv that `make demo` and `make test` use.
DEFAULT_AIRFLOW_VERSION := 3.3.2
AIRFLOW_VERSION ?= $(DEFAULT_AIRFLOW_VERSION)
ifeq ($(AIRFLOW_VERSION),$(DEFAULT_AIRFLOW_VERSION))
VENV := .venv
else
VENV := .venv-$(AIRFLOW_VERSION)
endif
# Pins a version needs on top of its own requirements (constraints/airflow-<version>.txt), when there are any.
CONSTRAINTS := $(wildcard constraints/airflow-$(AIRFLOW_VERSION).txt)
PIN := 'apache-airflow==$(AIRFLOW_VERSION)' $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UI_STAMP := $(VENV)/.installed-ui
PROD_STAMP := $(VENV)/.installed-prod
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: test test-ui test-push test-prod test-package chromium prod-servers demo bench lint docs clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' $(PIN)
	touch $(STAMP)

# ruff (with Airflow's AIR rules), bandit (medium severity and up) and mypy (Airflow's settings, [tool.mypy]; its
# cache in .mypy_cache makes a rerun take seconds). mypy checks the types against one Airflow, the default: the
# version gates in utils/version_compat.py are typed for it, and the side-by-side CI runs of the other versions
# would share the cache.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/bandit -c pyproject.toml -q -r airflow_provider_m2m -ll
ifeq ($(AIRFLOW_VERSION),$(DEFAULT_AIRFLOW_VERSION))
	$(BIN)/mypy
endif

test: $(STAMP) lint
	$(BIN)/python -m pytest

# The release files (tests/package): build the wheel and sdist, twine check, install the wheel into a clean venv
# and ask that venv's `airflow providers` about it. Dependencies come from pip's cache after the first run.
test-package: $(STAMP)
	$(BIN)/python -m pytest tests/package -v

# Browser tests of the UI (tests/ui): a real Airflow + headless Debian Chromium driven by Playwright.
# Playwright never downloads a browser of its own; Debian's chromium is installed when missing.
$(UI_STAMP): $(STAMP)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e '.[test,ui]' $(PIN)
	touch $(UI_STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		echo "chromium not found: installing Debian's chromium package"; \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-liberation; }
	@command -v chromium >/dev/null 2>&1 || { echo "chromium is still missing: the UI tests cannot run" >&2; exit 1; }

test-ui: $(UI_STAMP) chromium
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 M2M_UI_CHROMIUM="$$(command -v chromium)" $(BIN)/python -m pytest tests/ui tests/push -v

# The push receiver in a real api-server (tests/push, about 2 min; also part of test-ui). No browser needed.
test-push: $(STAMP)
	$(BIN)/python -m pytest tests/push -v -s

# The production stack (tests/prod, README "Production deployment"): PostgreSQL, Redis + two Celery workers,
# api-server, scheduler, dag-processor, triggerer, moto's S3 and the sandbox, started and stopped by the tests.
# Debian's postgresql and redis-server are installed when missing; the tests never use their system services.
$(PROD_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[prod-test]' $(PIN)
	touch $(PROD_STAMP)

prod-servers:
	@{ ls /usr/lib/postgresql/*/bin/initdb && command -v redis-server; } >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		echo "PostgreSQL or Redis not found: installing Debian's postgresql and redis-server packages"; \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql redis-server; }
	@{ ls /usr/lib/postgresql/*/bin/initdb && command -v redis-server; } >/dev/null 2>&1 || { \
		echo "postgresql or redis-server is still missing: the production tests cannot run" >&2; exit 1; }

test-prod: $(PROD_STAMP) prod-servers
	$(BIN)/python -m pytest tests/prod -v -s

# The docs site (docs/, Sphinx + MyST + Furo) into docs/_build/html: a fresh build, every warning an error
# (-W --keep-going: all of them listed; -n: every cross-reference must resolve), then every internal link and
# #anchor of the built HTML checked (docs/check_links.py; external links are not fetched). The code the pages
# show is run by tests/docs (part of `make test`).
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]' $(PIN)
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf docs/_build
	$(BIN)/python -m sphinx -W --keep-going -n -q -b html docs docs/_build/html
	$(BIN)/python docs/check_links.py docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf .venv .venv-* .airflow .pytest_cache .mypy_cache ui-screenshots docs/_build
