# Set-up and everyday commands. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Two test workers on two cores: keep BLAS from oversubscribing them.
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,torch]'
	touch $(STAMP)

demo: install
	$(BIN)/python examples/mnist/demo.py

# The whole suite with the representative model-scale tests (marked slow).
test: install
	$(BIN)/lit -q tests/filecheck
	$(BIN)/pytest -q -n 2 --runslow tests

# Also the minutes-long tests marked heavy.
test-all: install
	$(BIN)/lit -q tests/filecheck
	$(BIN)/pytest -q -n 2 --runheavy tests

lint: install
	$(BIN)/ruff check cimc passes isa targets tests bench examples
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
