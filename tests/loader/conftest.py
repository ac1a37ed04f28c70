"""Fixtures for the loader tests: a warehouse database and a topic of their own, and customers.

The loader tests get their own warehouse database (dropped at the end), so that the rows, customers and
offsets they make never show up in another folder's tests (the end-to-end test counts all of staging).
Each test also gets a fresh topic, so its offsets, staging rows and rejections are its own.
"""

from __future__ import annotations

import uuid

import pytest
from support import prepare_warehouse, warehouse_environment

from .helpers import Staged, add_customers, create_topic


@pytest.fixture(scope="session")
def warehouse_dsn(warehouse_dsn):
    """Overrides the session's warehouse for tests/loader with a database of its own, same schema."""
    from psycopg.conninfo import conninfo_to_dict

    from purchases.settings import postgres_url
    from purchases.warehouse import drop_database

    dsn = prepare_warehouse(postgres_url(warehouse_dsn, dbname=conninfo_to_dict(warehouse_dsn)["dbname"] + "_loader"))
    yield dsn
    drop_database(dsn)


@pytest.fixture(autouse=True)
def airflow_warehouse_connection(warehouse_dsn, monkeypatch):
    """The DAGs run by these tests write to the loader tests' database too (as the parts' roles)."""
    for name, value in warehouse_environment(warehouse_dsn).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def topic(broker) -> str:
    return create_topic(broker.bootstrap)


@pytest.fixture
def staged(warehouse_dsn, topic) -> Staged:
    return Staged(warehouse_dsn, topic)


@pytest.fixture
def customers(warehouse_dsn) -> list[uuid.UUID]:
    return add_customers(warehouse_dsn, 5)
