"""Fixtures of the ingest API tests: the real API (uvicorn) on the session's broker, with a database and a
topic of its own, so that what these tests buy never shows up in the other suites' counts."""

from __future__ import annotations

import os
import secrets

import httpx
import pytest
from api_support import API_TOPIC, Api, Customer, ensure_api_topic, free_port, record_purchases, sign_up
from support import prepare_warehouse


@pytest.fixture(scope="session")
def api_dsn():
    """A warehouse database of the API tests' own."""
    from purchases.settings import postgres_url
    from purchases.warehouse import drop_database

    dsn = prepare_warehouse(
        postgres_url(os.environ["WAREHOUSE_DSN"], dbname=f"purchases_apitest_{secrets.token_hex(4)}")
    )
    yield dsn
    drop_database(dsn)


@pytest.fixture(scope="session")
def api(broker, api_dsn):
    ensure_api_topic(broker.bootstrap)
    env = dict(os.environ, WAREHOUSE_DSN=api_dsn, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, PURCHASES_TOPIC=API_TOPIC)
    server = Api(free_port(), env, broker.bootstrap)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(api):
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


@pytest.fixture
def customer(client) -> Customer:
    return sign_up(client, "ada")


@pytest.fixture
def other_customer(client) -> Customer:
    return sign_up(client, "bob")


@pytest.fixture
def stage(api, api_dsn):
    """Call to have the real loader record what the API produced so far."""
    return lambda: record_purchases(api.bootstrap, api_dsn)
