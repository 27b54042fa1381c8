# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint unit integration bench clean browser prometheus installed

PIP := $(PY) -m pip --disable-pip-version-check

$(STAMP): pyproject.toml
	@echo "make: installing redrive and its dev tools into $(VENV) (about 15 s the first time) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "make: installed"

# Says "already installed" when there is nothing to do, so the demo's first line is never a wait.
installed:
	@if [ -f $(STAMP) ]; then echo "make: redrive already installed in $(VENV)"; \
	  else $(MAKE) --no-print-directory $(STAMP); fi

demo: installed
	@$(PY) -m redrive lab

test: $(STAMP) lint browser prometheus
	$(PY) -m pytest

# The lab's HTML report is checked in a real headless browser: Debian's chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (apt-get)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The metrics are scraped by a real Prometheus server and the alert rules checked with
# promtool: Debian's prometheus package has both.
prometheus:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
	  echo "installing prometheus (apt-get)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null; }

lint: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

bench: $(STAMP)
	$(PIP) install --quiet -e '.[bench]'
	$(PY) -m redrive bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
