# The two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser demo test lint typecheck unit bench screenshots clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "keysentry needs Python 3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Browser tests drive Debian's chromium (browsers cannot be downloaded here: no `playwright install`).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

unit: install browser
	$(PY) -m pytest

test: lint typecheck unit

demo: install
	$(PY) -m keysentry demo

bench: install
	$(PY) bench/sim_throughput.py

# The README's and docs/web.md's screenshots, taken by the browser tests (a plain run keeps them in /tmp).
screenshots: install browser
	KEYSENTRY_UPDATE_SCREENSHOTS=1 $(PY) -m pytest tests/e2e/test_web.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
