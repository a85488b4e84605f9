# The README's commands. `make demo` runs the product on the embedded default;
# `make test` runs every test (what .ci/run calls). Both set up what they need first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo worker dashboard dispatcher test test-deps lint typecheck screenshots \
	bench stop clean

# pip -qq: errors only. Its warnings here (a machine's index settings, setuptools' notes on
# editable installs) are nothing a user of the project can act on.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the project and its dev dependencies into $(VENV)"
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## Run the worker (with its local dispatcher) and the dashboard on the embedded database.
demo: install
	$(PY) -m worker.demo

worker: install
	$(PY) -m worker

dispatcher: install
	$(PY) -m worker.dispatcher

dashboard: install
	$(PY) -m dashboard

## Test-only peers (Cloud Tasks emulator, Chromium, ...): each scripts/test-deps.d/*.sh
## installs one, idempotently.
test-deps: install
	@for f in scripts/test-deps.d/*.sh; do [ -e "$$f" ] || continue; echo "== $$f"; VENV=$(VENV) bash "$$f" || exit 1; done

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy

# Four test processes (pytest-xdist), one file each at a time: most tests wait on servers
# and timers rather than the CPU. PYTEST_ARGS="-n 0" runs them in one process.
# Tests marked serial (timing-sensitive) run alone afterwards; none may be marked (pytest's
# exit status 5, no tests collected, is then not a failure).
PYTEST_ARGS ?= -n 4 --dist loadfile -m "not serial"

test: test-deps lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) -m pytest -n 0 -m serial || [ $$? -eq 5 ]

## Rewrite docs/screenshots/*.png (the pictures the README shows) from the browser tests;
## `make test` writes its screenshots to pytest's temporary folder instead.
screenshots: test-deps
	WRITE_SCREENSHOTS=1 $(PY) -m pytest -n 0 -p no:cacheprovider \
		tests/dashboard/test_browser.py tests/dashboard/test_browser_batch.py
	@git status --short docs/screenshots 2>/dev/null || true

bench: install
	VENV=$(VENV) bash bench/install_deps.sh
	$(PY) -m bench

## Stop the embedded PostgreSQL in .pgdata/ (the tests leave it running so the next run
## starts at once), whatever processes started or still use it.
stop: install
	$(PY) -m core.db.stop_embedded

clean: stop
	rm -rf .pgdata .data
