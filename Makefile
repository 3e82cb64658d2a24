# The two commands a newcomer types: `make demo` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UI_STAMP := $(VENV)/.installed-ui

.PHONY: test test-ui test-push chromium demo bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest

# Browser tests of the UI (tests/ui): a real Airflow + headless Debian Chromium driven by Playwright.
# Playwright never downloads a browser of its own; Debian's chromium is installed when missing.
$(UI_STAMP): $(STAMP)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e '.[test,ui]'
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

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .airflow .pytest_cache ui-screenshots
