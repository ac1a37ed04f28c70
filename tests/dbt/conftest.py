"""Fixtures for the dbt tests: a warehouse database and a copy of the dbt project of their own.

The marts are checked to the cent against known purchases, so these tests do not share staging with the
other test folders: `dbt_database` is a sibling of the session's warehouse database. The project is
copied so its seed can carry the test's threshold overrides; everything else is the real project.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
import pytest
from dbt_test_data import SEED_THRESHOLDS_CSV
from psycopg.conninfo import conninfo_to_dict
from support import prepare_warehouse, warehouse_environment

from purchases import transform

ROOT = Path(__file__).resolve().parents[2]

# Cosmos reports usage to a remote endpoint unless told not to (and there is no network here anyway).
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def dbt_database(warehouse_dsn, tmp_path_factory):
    """This folder's warehouse database and project copy (created once), and the environment naming them."""
    from purchases.settings import postgres_url
    from purchases.warehouse import drop_database

    name = conninfo_to_dict(warehouse_dsn)["dbname"] + "_dbt"
    dsn = prepare_warehouse(postgres_url(warehouse_dsn, dbname=name))

    base = tmp_path_factory.mktemp("dbt")
    project = base / "project"
    shutil.copytree(ROOT / "dbt", project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    (project / "seeds" / "spend_thresholds.csv").write_text(SEED_THRESHOLDS_CSV)
    environment = {
        **warehouse_environment(dsn),
        "DBT_PROJECT_DIR": str(project),
        "DBT_PROFILES_DIR": str(ROOT / "dbt"),
        "DBT_MANIFEST_PATH": str(base / "manifest" / "manifest.json"),
        "DBT_DOCS_DIR": str(base / "docs"),
    }
    yield {"dsn": dsn, "project": project, "environment": environment}
    drop_database(dsn)


@pytest.fixture(scope="module", autouse=True)
def dbt_env(dbt_database):
    """Points dbt, the DAG and the docs at this folder's database and project copy for one test module,
    then restores the session's environment for the other folders' tests."""
    overrides = dbt_database["environment"]
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield {"dsn": dbt_database["dsn"], "project": dbt_database["project"], **overrides}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def dbt_dsn(dbt_env) -> str:
    return dbt_env["dsn"]


@pytest.fixture
def db(dbt_dsn):
    with psycopg.connect(dbt_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def manifest(dbt_env) -> Path:
    return transform.parse_project()
