"""Migrations: a warehouse made by the schema of the last release (before Alembic) is upgraded by `make up`'s
migrations with its data kept, and the loader works on it: the old rows reach the marts' source, new
events load in batches the gate can pass."""

from __future__ import annotations

import importlib
import secrets
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from purchases.load import LoaderConfig, load_partition
from purchases.warehouse import drop_database, ensure_database, upgrade

RELEASE_1 = importlib.import_module("purchases.migrations.versions.0001_release_1").RELEASE_1_SCHEMA


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from purchases.warehouse import alembic_config

    return ScriptDirectory.from_config(alembic_config("postgresql://unused/unused")).get_current_head()


@pytest.fixture
def release_1_warehouse(warehouse_dsn):
    """A warehouse as the last release's `make up` left it, with a customer, purchases, a rejection, offsets."""
    dsn = make_conninfo(warehouse_dsn, dbname=f"purchases_release1_{secrets.token_hex(3)}")
    ensure_database(dsn)
    customer = uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RELEASE_1)
        conn.execute(
            "insert into app.customers (customer_id, username, password_hash) values (%s, 'old', 'x')", (customer,)
        )
        for offset in range(3):
            conn.execute(
                "insert into staging.purchase_events (event_id, customer_id, product_name, quantity, unit_price, "
                "currency, purchased_at, schema_version, kafka_topic, kafka_partition, kafka_offset) values "
                "(%s, %s, 'old tea', 1, 2.50, 'EUR', now(), 1, 'old_topic', 0, %s)",
                (uuid.uuid4(), customer, offset),
            )
        conn.execute(
            "insert into staging.purchase_events_rejected (reason, raw_value, kafka_topic, kafka_partition, "
            "kafka_offset) values ('not JSON', 'x', 'old_topic', 0, 3)"
        )
        conn.execute(
            "insert into staging.kafka_offsets (kafka_topic, kafka_partition, next_offset, topic_id) "
            "values ('old_topic', 0, 4, 'gone')"
        )
    yield dsn, customer
    drop_database(dsn)


def test_a_release_1_warehouse_is_upgraded_with_its_data_and_the_loader_works_on_it(release_1_warehouse, broker):
    from loader.helpers import create_topic, make_event, produce

    from purchases.check import run_quality_gate

    dsn, customer = release_1_warehouse
    upgrade(dsn)
    upgrade(dsn)  # twice is harmless, as every make up runs it

    with psycopg.connect(dsn) as conn:
        assert conn.execute("select version_num from alembic_version").fetchone()[0] == head_revision()
        assert conn.execute("select count(*), sum(unit_price) from staging.purchase_events").fetchone() == (3, 7.5)
        # Loaded before the gate stamped batches: counted as passed, so the marts keep reading them.
        assert conn.execute("select count(*) from staging.purchase_events_passed").fetchone()[0] == 3
        assert conn.execute("select count(*) from staging.purchase_events_rejected").fetchone()[0] == 1
        assert conn.execute("select next_offset, topic_id from staging.kafka_offsets").fetchone() == (4, "gone")

    topic = create_topic(broker.bootstrap)
    events = [make_event(customer, n) for n in range(5)]
    produce(broker.bootstrap, topic, [(None, e.to_bytes()) for e in events] + [(None, b"not json")])
    result = load_partition(LoaderConfig(broker.bootstrap, dsn, topic), 0, window_seconds=30, stop_when_idle=True)
    assert (result.loaded, result.rejected) == (5, 1)

    gate = run_quality_gate(dsn)
    assert gate.rows == 5
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from staging.purchase_events_passed").fetchone()[0] == 8
        newest = conn.execute("select max(passed_at) from staging.purchase_events_passed").fetchone()[0]
    assert newest <= datetime.now(UTC)
