# The two commands of the README. Each creates .venv and installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint typecheck check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

up: $(STAMP)  ## run the whole platform on http://127.0.0.1:8000
	$(BIN)/baedal up $(ARGS)

test: $(STAMP)  ## lint, type-check and run the test suite
	$(BIN)/ruff check services tests
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)  ## the throughput benchmark (see docs/benchmarks.md)
	$(BIN)/baedal bench $(ARGS)

clean:
	rm -rf $(VENV) .baedal .pytest_cache .mypy_cache .ruff_cache
