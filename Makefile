# deskpilot developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
BIN := $(VENV)/bin
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install install-dev demo serve test test-fast lint typecheck bench migrate clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv>=0.5,<1"

install: $(UV) ## Create .venv with the runtime dependencies from uv.lock
	$(UV) sync --frozen --inexact

install-dev: $(UV) ## Create .venv with every extra and the dev tools from uv.lock
	$(UV) sync --frozen --extra dev

demo: install ## Migrate a SQLite file, load sample data and serve the console on :8000
	$(BIN)/deskpilot demo

serve: install ## Serve the API and console with the current settings
	$(BIN)/deskpilot serve

migrate: install ## Apply migrations to DESKPILOT_DATABASE__URL (default ./deskpilot.db)
	$(BIN)/deskpilot migrate

test: install-dev lint typecheck ## Lint, type-check and run the whole test suite
	$(BIN)/pytest

test-fast: install-dev ## Run the tests that need no PostgreSQL, Redis or browser
	$(BIN)/pytest -m "not postgres and not redis and not browser"

lint: install-dev ## ruff
	$(BIN)/ruff check src tests bench migrations

typecheck: install-dev ## mypy --strict on src/
	$(BIN)/mypy

bench: install-dev ## Run bench/ and append the figures to BENCHMARKS.md
	$(BIN)/python -m bench.run

clean: ## Remove the virtualenvs and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
