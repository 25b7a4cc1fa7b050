# The two commands of the README. Both set up everything they need on a fresh machine.
# The distribution's CPython when it is 3.11+ and can make a venv: Debian builds it with PGO and
# LTO, linked statically, and it ran peerplane's servers with 10-30 % less CPU per write than an
# unoptimised --enable-shared build of the same 3.11 (pyenv's default; bench numbers in the
# README). Otherwise the first python3 on PATH. `make PY=...` overrides either.
SYSTEM_PY := /usr/bin/python3
PY ?= $(shell $(SYSTEM_PY) -c 'import sys, ensurepip; assert sys.version_info >= (3, 11)' \
	>/dev/null 2>&1 && echo $(SYSTEM_PY) || echo python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test lint bench screenshot

$(BIN)/peerplane: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# ACL rules: build python-hcl2's parser cache once here, not inside a running agent.
	$(BIN)/python -c "import hcl2; hcl2.loads('acl = \"read\"')"
	touch $@

dev: $(BIN)/peerplane
	$(BIN)/peerplane dev

test: $(BIN)/peerplane
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(BIN)/peerplane
	$(BIN)/ruff check .

# A PNG of the dashboard (/ui/) of two freshly peered local clusters, shot by headless Chromium
# (apt-get install chromium). SCREENSHOT=path.png to choose the file; URL=... for a running one.
SCREENSHOT ?= dashboard.png
screenshot: $(BIN)/peerplane
	$(BIN)/python bench/dashboard_screenshot.py --out $(SCREENSHOT) $(if $(URL),--url $(URL))
