# The two set-up commands of the README: `make serve` and `make test`. Both create .venv when it
# is missing and (re)install when pyproject.toml changed, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install serve lab test lint typecheck pytest postgres ipmi-sim npm-tools coverage

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Streamable HTTP on 127.0.0.1:8765 for a person at a terminal: mints a token on first use and
# prints how to connect (stdio is for clients that spawn `opsgate serve` themselves).
serve: install
	$(BIN)/opsgate serve --blueprints blueprints --policies policies --transport http \
		--host 127.0.0.1 --port 8765 --welcome

# The local lab on 127.0.0.1 (docs/lab.md): SSH hosts, MaaS API, BMCs, a health service, in
# the background until `opsgate lab down`; it prints the inventory to use.
lab: install
	$(BIN)/opsgate lab up

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy

postgres:
	@bash .ci/ensure-postgres

# The BMC simulator the ipmi tests talk to (OpenIPMI's ipmi_sim, Debian package openipmi).
ipmi-sim:
	@command -v ipmi_sim >/dev/null || { apt-get update -qq && apt-get install -y -qq openipmi; }

# The MCP Inspector CLI, the conformance suite and Node 22, pinned in tests/server/npm/, into
# .npm-tools/ (npm ci, only when the lock changed); the tests would install them too.
npm-tools: install
	@$(BIN)/python -m tests.server.npm_tools >/dev/null

# pytest's exit code 5 ("no tests collected") is a failure like any other non-zero code.
pytest: install postgres ipmi-sim npm-tools
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Branch coverage of the whole suite (kept out of `make test`, whose last line is pytest's).
coverage: install postgres ipmi-sim
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage report --skip-covered --skip-empty
