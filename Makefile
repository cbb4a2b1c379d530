# The two set-up commands of the README: `make serve` and `make test`. Both create .venv when it
# is missing and (re)install when pyproject.toml changed, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install serve test lint typecheck pytest postgres coverage

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/opsgate serve --blueprints blueprints --policies policies

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy

postgres:
	@bash .ci/ensure-postgres

# pytest's exit code 5 ("no tests collected") is a failure like any other non-zero code.
pytest: install postgres
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Branch coverage of the whole suite (kept out of `make test`, whose last line is pytest's).
coverage: install postgres
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage report --skip-covered --skip-empty
