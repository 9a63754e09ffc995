# Everything bootstraps from nothing but python3: `make test` creates .venv,
# installs the pinned tool chain and the package (editable), lints, type-checks, tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv lint test bench demo clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/mypy --strict src

test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python benchmarks/run.py

demo: venv
	$(BIN)/python examples/support_assistant/main.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache
