# The two commands of the README. Both set up everything they need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test lint bench

$(BIN)/peerplane: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

dev: $(BIN)/peerplane
	$(BIN)/peerplane dev

test: $(BIN)/peerplane
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(BIN)/peerplane
	$(BIN)/ruff check .
