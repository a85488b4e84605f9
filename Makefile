# The README's commands. `make demo` runs the product on the embedded default;
# `make test` runs every test (what .ci/run calls). Both set up what they need first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo worker dashboard dispatcher test test-deps lint typecheck bench stop clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
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

bench: install
	VENV=$(VENV) bash bench/install_deps.sh
	$(PY) -m bench

## Stop the embedded PostgreSQL (it outlives `make demo` so the next start is instant).
stop: install
	$(PY) -c "from core import embedded_pg; embedded_pg.stop()"

clean: stop
	rm -rf .pgdata .data
