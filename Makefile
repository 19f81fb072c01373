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

test: lint
	$(BIN)/python -m pytest -q

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
