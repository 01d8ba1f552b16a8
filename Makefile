# The two commands of the README. Each creates .venv and installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := services tests scripts

.PHONY: up test services lint typecheck check bench clean daprd e2e-dapr

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

up: $(STAMP)  ## run the whole platform on http://127.0.0.1:8000
	$(BIN)/baedal up $(ARGS)

services:  ## make sure PostgreSQL and Redis answer on 127.0.0.1 (installs and starts them if needed)
	$(PYTHON) scripts/backing_services.py $(SERVICES)

# The backing services are started when this machine allows it; where it does not, their tests
# skip and say how to provide them (.ci/run requires them instead).
test: $(STAMP)  ## lint, type-check and run the test suite
	$(PYTHON) scripts/backing_services.py --best-effort $(SERVICES)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

bench: $(STAMP)  ## the throughput benchmark (see docs/benchmarks.md)
	$(BIN)/baedal bench $(ARGS)

# Builds daprd from its pinned Go module (tools/daprd) into ~/.cache/baedal-engines, once per version;
# see docs/dapr.md, "Building daprd". BAEDAL_ENGINES_DIR moves the cache.
daprd:  ## build the Dapr sidecar from source (first time: many minutes), reused afterwards
	nice -n 19 $(PYTHON) scripts/build_engine.py daprd

# Every service, the gateway and the operator each behind its own real daprd, on Redis and PostgreSQL
# (tests/daprd; docs/dapr.md, "End to end on daprd"). Builds daprd first when it is not built yet.
e2e-dapr: $(STAMP)  ## the end-to-end suite on real Dapr sidecars
	$(MAKE) services
	$(MAKE) daprd
	BAEDAL_REQUIRE_DAPRD=1 $(BIN)/pytest -m daprd tests/daprd $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .baedal .pytest_cache .mypy_cache .ruff_cache
