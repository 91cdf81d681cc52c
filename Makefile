# Two entry points: `make demo` (the main job, end to end) and `make test` (the whole suite).
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the extras installed into .venv: `make test EXTRAS=test,ray` adds Ray (tests/agent/test_ray.py)
EXTRAS ?= test

.PHONY: demo test test-fast lint mypy bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python scripts/demo.py

test: $(BIN)/.installed
	$(BIN)/pytest -q

test-fast: $(BIN)/.installed
	$(BIN)/pytest -q -m "not editor"

# ruff (lint and format check) and mypy; .ci/run runs it before the tests.
lint: $(BIN)/.installed mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package as it installs: handoff_pkg/ as handoff, agent/ and server/ inside it.
MYPY_TREE := .mypy_tree
mypy: $(BIN)/.installed
	rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/handoff
	for f in handoff_pkg/*.py; do ln -s ../../$$f $(MYPY_TREE)/handoff/; done
	ln -s ../../agent $(MYPY_TREE)/handoff/agent && ln -s ../../server $(MYPY_TREE)/handoff/server
	cd $(MYPY_TREE) && ../$(BIN)/mypy --config-file ../pyproject.toml

bench: $(BIN)/.installed
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache $(MYPY_TREE)
