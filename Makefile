# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
COVERAGE_MIN ?= 95

.PHONY: demo test test-postgres test-browser test-celery lint typecheck migrations-check coverage bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

## Run the demo on http://127.0.0.1:8000 (SQLite + the Manychat sandbox).
demo: $(VENV)/.demo-installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_setup
	$(BIN)/python manage.py runserver 127.0.0.1:8000

## Run the test suite (SQLite; set DATABASE_URL for PostgreSQL), with branch coverage.
test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -m "not browser and not celery" --cov --cov-report=term --cov-fail-under=$(COVERAGE_MIN) $(PYTEST_ARGS)

test-postgres: $(VENV)/.dev-installed
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} $(MAKE) test

test-browser: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -m browser -p no:randomly $(PYTEST_ARGS)

test-celery: $(VENV)/.dev-installed
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} $(BIN)/python -m pytest -m celery $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy manychat_oauth

migrations-check: $(VENV)/.dev-installed
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m django makemigrations --check --dry-run

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/refresh_throughput.py

clean:
	rm -rf $(VENV) build dist *.egg-info .coverage htmlcov artifacts demo.sqlite3 tests/*.sqlite3
