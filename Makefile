# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
COVERAGE_MIN ?= 95

.PHONY: demo test test-postgres test-browser test-celery lint typecheck migrations-check coverage bench nox package-check docs docs-serve clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.docs-installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[docs]"
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

## Version matrix (noxfile.py): Python 3.11 + Django 5.2 LTS, Python 3.12/3.13 + Django 6.1 where installed.
## NOX_ARGS="-s tests-3.12" for one session.
NOX_ARGS ?= -t tests
nox: $(VENV)/.dev-installed
	$(BIN)/nox $(NOX_ARGS)

## Build sdist and wheel, twine check, install the wheel in a clean venv, `manage.py check` a throwaway project.
package-check: $(VENV)/.dev-installed
	PYTHON=$(BIN)/python BASE_PYTHON=$(PYTHON) scripts/check_package.sh

## Documentation site (MkDocs), warnings are errors; output in site/.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8001

clean:
	rm -rf $(VENV) .nox site build dist *.egg-info .coverage htmlcov artifacts demo.sqlite3 tests/*.sqlite3
