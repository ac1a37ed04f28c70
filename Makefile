# Purchases Recorder. `make up` runs the whole pipeline locally; `make test` runs the tests.
# Both install what they need themselves (into .venv). Settings: purchases/settings.py (docs/operations.md).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
ENV := source scripts/env.sh
STAMP := $(VENV)/.installed

.PHONY: help venv up down status test lint warehouse test-fast bench bench-ingest bench-loader bench-dbt bench-e2e bench-executors fuzz soak replay clean

help:
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): requirements.txt pyproject.toml
	scripts/install.sh
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the pinned requirements

up: $(STAMP) ## start broker, Airflow, ingest API in the background; wait until healthy
	$(ENV); scripts/up.sh

down: ## stop what `make up` started: API first, drain the broker into staging, then it (FORCE=1: no drain)
	$(ENV); scripts/down.sh

status: ## what runs, by pid (honcho's processes and the broker)
	$(ENV); scripts/status.sh

test: $(STAMP) lint ## the linters, then every test against real components it starts itself
	scripts/install_test_tools.sh
	$(ENV); $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) warehouse ## ruff (Python, with Airflow's AIR rules; formatting too) and sqlfluff (the dbt project)
	$(ENV); $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/sqlfluff lint dbt

# sqlfluff's dbt templater compiles the project as dbt's role, which connects to the warehouse: on a new
# machine neither the database nor the role exists until this (idempotent) runs.
warehouse: $(STAMP) ## create the warehouse database, migrate it and set up its roles (WAREHOUSE_DSN)
	$(ENV); $(PY) -m purchases.cli bootstrap-warehouse && $(PY) -m purchases.roles

test-fast: $(STAMP) ## unit tests only
	$(ENV); $(PY) -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

bench-ingest: $(STAMP) ## API throughput vs a bare FastAPI endpoint
	$(ENV); $(PY) -m bench.bench_ingest

bench-loader: $(STAMP) ## loader events/s vs raw COPY
	$(ENV); $(PY) -m bench.bench_loader

bench-dbt: $(STAMP) ## incremental dbt build on big vs small history
	$(ENV); $(PY) -m bench.bench_dbt

bench-e2e: $(STAMP) ## freshness from 202 to listed / to counted in spend
	$(ENV); $(PY) -m bench.bench_e2e

bench-executors: $(STAMP) ## quality gate and dbt build task times on the LocalExecutor and on Celery workers
	$(ENV); $(PY) -m bench.bench_executors

bench: bench-ingest bench-loader bench-dbt bench-e2e bench-executors ## every benchmark, then the report
	$(ENV); $(PY) -m bench.report

fuzz: $(STAMP) ## the generated-input tests with many more examples (HYPOTHESIS_PROFILE=fuzz)
	$(ENV); HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/loader/test_fuzz.py tests/loader/test_validation.py tests/test_generated_purchases.py tests/api/test_api_units.py $(PYTEST_ARGS)

soak: $(STAMP) ## 100,000 purchases with retries, loader kills and a Postgres restart
	$(ENV); SOAK_PURCHASES=$${SOAK_PURCHASES:-100000} $(PY) -m pytest tests/test_soak.py -s

replay: $(STAMP) ## re-drive rejected events: make replay REASON="unknown customer" [DRY_RUN=1]
	$(ENV); $(PY) -m purchases.load.replay --reason-contains "$${REASON:-}" $${DRY_RUN:+--dry-run}

clean: down
	rm -rf $(VENV) .run logs .airflow dbt/target dbt/logs
