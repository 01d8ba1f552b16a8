# The two commands of the README. Each creates .venv and installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := services tests scripts loadtest

.PHONY: up test services lint typecheck check bench loadtest clean daprd chart-test kube-apiserver e2e-k8s openapi e2e-dapr

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
# skip and say how to provide them (.ci/run requires them instead). The suites on real engines
# (tests/kube, tests/daprd) run here when the engines are built, else skip saying how to build
# them; ENGINES=0 leaves them out (.ci/run does, and runs make e2e-k8s and make e2e-dapr after).
ENGINES ?= 1
test: $(STAMP)  ## lint, type-check and run the test suite
	$(PYTHON) scripts/backing_services.py --best-effort $(SERVICES)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/pytest -q $(if $(filter 0,$(ENGINES)),-m "not kube and not daprd") $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

openapi: $(STAMP)  ## regenerate docs/openapi.json from the code (tests/project/test_openapi.py checks it)
	$(BIN)/baedal openapi > docs/openapi.json

bench: $(STAMP)  ## the throughput benchmark (see docs/benchmarks.md)
	$(BIN)/baedal bench $(ARGS)

# The lunch rush (docs/loadtest.md): without HOST, starts baedal up on a temporary data dir, runs the
# 10-minute lunch shape with the SLO gate, stops it and prints where the reports are. HOST=https://...
# drives a deployment instead (tokens: BAEDAL_JWT_SECRET). ARGS=--smoke: the 60-second variant.
loadtest: $(STAMP)  ## the lunch-rush load test with its SLO gate (docs/loadtest.md)
	$(BIN)/python -m loadtest.run $(if $(HOST),--host $(HOST)) $(ARGS)

# Builds daprd from its pinned Go module (tools/daprd) into ~/.cache/baedal-engines, once per version;
# see docs/dapr.md, "Building daprd". BAEDAL_ENGINES_DIR moves the cache.
daprd:  ## build the Dapr sidecar from source (first time: many minutes), reused afterwards
	nice -n 19 $(PYTHON) scripts/build_engine.py daprd

# The image and the Helm chart without a cluster (docs/kubernetes.md, "How it is tested"); `make test`
# runs these too.
chart-test: $(STAMP)  ## hadolint, helm lint, schema validation, checkov, skaffold checks
	nice -n 19 $(BIN)/pytest -q tests/chart tests/dapr/test_dapr_components.py $(PYTEST_ARGS)

# Builds kube-apiserver (tools/kube-apiserver: k8s.io/kubernetes) and etcd (tools/etcd:
# go.etcd.io/etcd/server/v3) from their pinned Go modules into the same cache; see docs/kubernetes-e2e.md.
kube-apiserver:  ## build kube-apiserver and etcd from source (first time: many minutes), reused afterwards
	nice -n 19 $(PYTHON) scripts/build_engine.py etcd
	nice -n 19 $(PYTHON) scripts/build_engine.py kube-apiserver

# The CRD and the operator against a real kube-apiserver + etcd (tests/kube); builds them first.
e2e-k8s: $(STAMP) kube-apiserver  ## the operator against a real Kubernetes API server
	BAEDAL_REQUIRE_KUBE=1 $(BIN)/pytest -q tests/kube $(PYTEST_ARGS)

# Every service, the gateway and the operator each behind its own real daprd, on Redis and PostgreSQL
# (tests/daprd; docs/dapr.md, "End to end on daprd"). Builds daprd first when it is not built yet.
e2e-dapr: $(STAMP)  ## the end-to-end suite on real Dapr sidecars
	$(MAKE) services
	$(MAKE) daprd
	BAEDAL_REQUIRE_DAPRD=1 $(BIN)/pytest -m daprd tests/daprd $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .baedal .pytest_cache .mypy_cache .ruff_cache
