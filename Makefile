# Set-up and everyday commands. Every target creates or reuses the virtual environment in .venv/
# and installs torchslim into it with the exact versions in constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.torchslim-installed

.PHONY: demo test test-fast lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

## demo: measure, inspect and optimise the bundled reference model (no arguments needed)
demo: $(STAMP)
	$(BIN)/torchslim demo

## test: lint, type-check and run the whole test suite (slow tests included)
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not executorch and not ray and not predict"
	$(BIN)/python -m pytest -q -m executorch
	$(BIN)/python -m pytest -q -m predict
	$(BIN)/python -m pytest -q -m ray

## test-fast: the suite without tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-out
