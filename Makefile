# Fresh-machine entry points. `make quickstart` sets up and runs the main job; `make test` sets
# up and runs the tests. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# On the project's machines these come from local disk; elsewhere pip downloads them.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup quickstart critique-example test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The main job: the whole system, learning, offline (about 7-10 minutes on 2 CPU cores).
quickstart: setup
	$(VENV)/bin/rationalrewards demo --out runs/demo
	@echo "open runs/demo/report.html; numbers in runs/demo/summary.json"

# Critique the example image with a tiny random model (shows an honest parse failure).
critique-example: setup
	$(PY) -m rationalrewards.quickstart

test: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench

bench: setup
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
