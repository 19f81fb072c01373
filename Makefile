# The two commands a new user runs: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench costs clean

SPEC ?= ../shared/spec

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cli]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipedrive_channels demo

lint: $(STAMP)
	$(BIN)/ruff check pipedrive_channels tests benchmarks
	$(BIN)/mypy --strict pipedrive_channels

test: lint redis-server
	$(BIN)/python -m pytest -q

# The Redis budget's tests start their own redis-server (tests/redis_server.py); install it when missing.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "redis-server is missing and cannot be installed (not root, no passwordless sudo):" \
	    "install it (apt-get install redis-server) and run make test again" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; }

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead_bench.py
	$(BIN)/python benchmarks/budget_bench.py
	$(BIN)/python benchmarks/faults_bench.py
	$(BIN)/python benchmarks/backfill_bench.py

# Regenerate the operation-cost table from Pipedrive's OpenAPI files.
costs: $(STAMP)
	$(BIN)/python -m pipedrive_channels.costs $(SPEC)/openapi.yaml $(SPEC)/openapi-v2.yaml > pipedrive_channels/costs.json.tmp
	mv pipedrive_channels/costs.json.tmp pipedrive_channels/costs.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
