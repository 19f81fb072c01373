# The two commands a new user runs: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
