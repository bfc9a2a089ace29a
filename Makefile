# Everyday commands. `make demo` and `make test` set everything up themselves (a virtualenv in
# .venv with the dev extras, and the npm dev tools: anvil and solc).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NPM_STAMP := node_modules/.installed-stamp

.PHONY: demo test lint format bench install contracts clean

install: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The demo and the benchmark are tooling (devchain/, not in the wheel), run from this directory.
demo: install
	$(BIN)/python -m devchain.demo

bench: install
	$(BIN)/python -m devchain.bench

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy verifier chains devchain tests

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Rebuild contracts/artifacts from contracts/*.sol with the pinned solc (the artifacts are
# committed; this is only needed after changing a contract).
contracts: $(NPM_STAMP)
	npm run --silent build:contracts

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
