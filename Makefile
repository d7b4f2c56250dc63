# Set-up and everyday commands. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The exact versions every install uses; `make lock` refreshes them.
LOCK := constraints.txt
PIP_VERSION := 26.3
# Two test workers on two cores: keep BLAS from oversubscribing them.
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: install lock demo test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev,torch,sweep]'
	$(BIN)/pip check
	touch $(STAMP)

# Re-resolve the newest releases pyproject.toml allows into $(LOCK) (then run make test).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet pip==$(PIP_VERSION)
	.venv-lock/bin/pip install --quiet -e '.[dev,torch,sweep]'
	{ sed -n '1,2p' $(LOCK); .venv-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock

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

# mypy cannot follow the editable install's folder mapping (passes/ is cimc.passes, ...),
# so it checks a tree of links laid out as the installed package is.
TYPECHECK := build/typecheck
lint: install
	$(BIN)/ruff check cimc passes isa targets tests bench examples
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/cimc
	ln -s $(CURDIR)/cimc/* $(TYPECHECK)/cimc/
	for p in passes isa targets; do ln -s $(CURDIR)/$$p $(TYPECHECK)/cimc/$$p; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p cimc

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-lock build *.egg-info .pytest_cache .mypy_cache .ruff_cache
