# Fresh-machine entry points. `make quickstart` sets up and runs the main job; `make test` sets
# up and runs the tests. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# On the project's machines these come from local disk; elsewhere pip downloads them.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The exact versions the suite passed with; `make lock` refreshes it on purpose.
CONSTRAINTS ?= constraints.txt
PYTEST_ARGS ?=

.PHONY: setup quickstart critique-example test lint bench lock browser clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) $(TORCH_SPEC)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The main job: the whole system, learning, offline (about 7-10 minutes on 2 CPU cores).
quickstart: setup
	$(VENV)/bin/rationalrewards demo --out runs/demo
	@echo "open runs/demo/report.html; numbers in runs/demo/summary.json"

# Critique the example image with a tiny random model (shows an honest parse failure).
critique-example: setup
	$(PY) -m rationalrewards.quickstart

# Debian's chromium + chromedriver for the browser tests (no browser download at run time).
# Outside CI a machine without root may skip it: the browser tests then skip with the reason.
browser:
	bash .ci/browser-setup || [ -z "$$CI" ]

test: setup browser
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench

bench: setup
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# Re-resolve every dependency to the newest allowed version and pin the result. Run `make test`
# afterwards and commit constraints.txt only if it passes.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q $(TORCH_SPEC)
	.venv-lock/bin/pip install -q -e ".[dev]"
	( echo "# Exact versions the test suite passed with. Refresh on purpose: make lock && make test"; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^pip==' ) > $(CONSTRAINTS)
	rm -rf .venv-lock
	@echo "constraints.txt refreshed; now run: make test"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
