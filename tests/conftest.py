"""Shared fixtures: every test session starts its own real broker, database, API and Airflow metadata DB.

Nothing here assumes a stack from `make up` is running; ports are picked free, databases are named per
session and dropped at the end, so tests can run beside a running stack.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import LOG_DIR, ApiServer, EmbeddedBroker, airflow_url, free_port, prepare_warehouse

from purchases.settings import Settings, exports, postgres_url

ROOT = Path(__file__).resolve().parents[1]
SESSION = secrets.token_hex(4)
# The Postgres server of the settings (WAREHOUSE_DSN), with databases of this session's own.
SERVER_DSN = Settings().warehouse_dsn
WAREHOUSE_DSN = postgres_url(SERVER_DSN, dbname=f"purchases_test_{SESSION}")
AIRFLOW_DSN = postgres_url(SERVER_DSN, dbname=f"airflow_test_{SESSION}")
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix=f"airflow_test_{SESSION}_"))


BROKER_PORT = free_port()
BROKER = f"127.0.0.1:{BROKER_PORT}"


# Airflow reads its configuration when first imported, so the test environment is set before any test
# module is collected. Connections come from AIRFLOW_CONN_* like in `make up`, derived from the settings.
# Every part's role gets a password of this session's (locally Postgres trusts 127.0.0.1, so they are not
# checked there; in the Docker stack they are).
ROLE_PASSWORDS = {
    name: secrets.token_urlsafe(16)
    for name in (
        "API_DB_PASSWORD",
        "LOADER_DB_PASSWORD",
        "GATE_DB_PASSWORD",
        "DBT_DB_PASSWORD",
        "GRAFANA_READER_PASSWORD",
    )
}
TEST_SETTINGS = Settings(
    **ROLE_PASSWORDS,
    WAREHOUSE_DSN=WAREHOUSE_DSN,
    KAFKA_BOOTSTRAP_SERVERS=BROKER,
    PURCHASES_TOPIC="purchases",
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow_url(AIRFLOW_DSN),
)
TEST_ENV = {
    **exports(TEST_SETTINGS, {}),
    **ROLE_PASSWORDS,
    "PURCHASES_PARTITIONS": "3",
    "JWT_SECRET": secrets.token_urlsafe(32),
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(LOG_DIR / f"airflow_{SESSION}"),
    "DBT_PROFILES_DIR": str(ROOT / "dbt"),
    "DBT_PROJECT_DIR": str(ROOT / "dbt"),
    # The transform DAG renders from a manifest `make up` writes; the tests write their own (transform_manifest).
    "DBT_MANIFEST_PATH": str(AIRFLOW_HOME / "dbt_manifest.json"),
}
os.environ.update(TEST_ENV)
LOG_DIR.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def warehouse_dsn():
    """A fresh warehouse database with the app and staging tables, dropped after the session."""
    from purchases.warehouse import drop_database

    prepare_warehouse(WAREHOUSE_DSN)
    yield WAREHOUSE_DSN
    drop_database(WAREHOUSE_DSN)


@pytest.fixture(scope="session")
def broker():
    """The session's embedded broker with the topic `purchases` (3 partitions); tests that stop or restart a
    broker start one of their own (purchases.processes.EmbeddedBroker)."""
    process = EmbeddedBroker(LOG_DIR / f"broker_{SESSION}.log", port=BROKER_PORT).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api_server(warehouse_dsn, broker):
    """The real ingest API (uvicorn) against the session's broker and warehouse."""
    server = ApiServer(free_port(), dict(os.environ), f"api_{SESSION}.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def transform_manifest():
    """The manifest the transform DAG renders from (LoadMode.DBT_MANIFEST), as `make up` writes it."""
    from purchases.transform import parse_project

    return parse_project()


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata database for `dag.test()` runs in this process."""
    from purchases.warehouse import drop_database, ensure_database, keep_private

    dsn = AIRFLOW_DSN
    ensure_database(dsn)
    keep_private(dsn)  # as `make up` keeps Airflow's database: the warehouse's roles cannot connect
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
    )
    yield dsn
    if "airflow.settings" in sys.modules:  # close the ORM's pooled connections before the drop cuts them
        from sqlalchemy.exc import OperationalError

        try:
            sys.modules["airflow.settings"].dispose_orm()
        except OperationalError:
            pass  # already cut (the soak test restarts Postgres): nothing left to close
    drop_database(dsn)
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
