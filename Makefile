# densenet_lit developer commands. Every target that needs the environment
# creates .venv in the checkout when it is missing, so a fresh machine needs
# nothing but `make test` (or `make demo`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format demo bench gpu-check table clean

help: ## List every target
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

test: $(STAMP) ## Run the whole test suite, slow tests included (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(STAMP) ## Train and test a small DenseNet-BC on the bundled digits (CPU, about a minute)
	$(BIN)/python -m densenet_lit.demo

bench: $(STAMP) ## Run the benchmark suite and write bench_results/
	$(BIN)/python -m densenet_lit.bench

# A lent GPU machine is offline: use .venv where there is one, else $(PYTHON); install nothing.
gpu-check: ## Check a lent GPU in one command (within 8 min: a 7-minute budget): one report in bench_results/
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m densenet_lit.gpu_check

table: $(STAMP) ## Print parameters and FLOPs of every paper model beside the paper's numbers
	$(BIN)/python -m densenet_lit.analysis.costs

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
