"""Least privilege: each part's role can do what its part needs and nothing else (purchases/roles.py). Every
check connects as the role itself, over its own login, like the part does."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors

from purchases.roles import ROLES
from purchases.settings import Settings

DENIED = (errors.InsufficientPrivilege,)


def as_role(dsn: str, part: str) -> psycopg.Connection:
    return psycopg.connect(Settings(WAREHOUSE_DSN=dsn).dsn_as(part), autocommit=True)


def refused(dsn: str, part: str, statement: str, params=()) -> bool:
    with as_role(dsn, part) as conn:
        try:
            conn.execute(statement, params)
        except DENIED:
            return True
    return False


def allowed(dsn: str, part: str, statement: str, params=()) -> bool:
    with as_role(dsn, part) as conn, conn.transaction(force_rollback=True):
        conn.execute(statement, params)
    return True


NEW_CUSTOMER = "insert into app.customers (customer_id, username, password_hash) values (%s, %s, 'x')"
NEW_EVENT = (
    "insert into staging.purchase_events (event_id, customer_id, product_name, quantity, unit_price, currency, "
    "purchased_at, schema_version, kafka_topic, kafka_partition, kafka_offset) "
    "values (gen_random_uuid(), gen_random_uuid(), 'x', 1, 1, 'USD', now(), 1, 't', 0, 0)"
)


def test_no_part_is_a_superuser_or_may_create_roles_or_databases(warehouse_dsn):
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute(
            "select rolname, rolsuper, rolcreaterole, rolcreatedb from pg_roles where rolname = any(%s)",
            ([role.name for role in ROLES.values()],),
        ).fetchall()
    assert len(rows) == len(ROLES)
    assert all(not (superuser or createrole or createdb) for _, superuser, createrole, createdb in rows), rows


def test_the_api_signs_customers_up_and_reads_purchases_but_writes_nothing_else(warehouse_dsn):
    assert allowed(warehouse_dsn, "api", NEW_CUSTOMER, (uuid.uuid4(), f"roles_{uuid.uuid4().hex[:8]}"))
    assert allowed(warehouse_dsn, "api", "select password_hash from app.customers limit 1")
    assert allowed(warehouse_dsn, "api", "select * from staging.purchase_events limit 1")
    assert allowed(warehouse_dsn, "api", "select batch_id, checked_at from staging.loaded_batches limit 1")
    assert refused(warehouse_dsn, "api", NEW_EVENT)
    assert refused(warehouse_dsn, "api", "update staging.loaded_batches set checked_at = now()")
    assert refused(warehouse_dsn, "api", "delete from app.customers")
    assert refused(warehouse_dsn, "api", "update staging.kafka_offsets set next_offset = 0")
    assert refused(warehouse_dsn, "api", "create table app.mine (x int)")
    assert refused(warehouse_dsn, "api", "create table marts.mine (x int)")


def test_the_loader_writes_staging_and_cannot_read_password_hashes(warehouse_dsn):
    assert allowed(warehouse_dsn, "loader", NEW_EVENT)
    assert allowed(warehouse_dsn, "loader", "select customer_id from app.customers limit 1")
    assert refused(warehouse_dsn, "loader", "select password_hash from app.customers limit 1")
    assert refused(warehouse_dsn, "loader", NEW_CUSTOMER, (uuid.uuid4(), "x"))
    assert refused(warehouse_dsn, "loader", "update staging.purchase_events set quantity = 2")
    assert refused(warehouse_dsn, "loader", "delete from staging.purchase_events")
    assert refused(warehouse_dsn, "loader", "update staging.loaded_batches set checked_at = now()")
    assert refused(warehouse_dsn, "loader", "create table marts.mine (x int)")


def test_the_gate_reads_staging_and_only_marks_batches_passed(warehouse_dsn):
    assert allowed(warehouse_dsn, "gate", "select * from staging.purchase_events limit 1")
    assert allowed(warehouse_dsn, "gate", "update staging.loaded_batches set checked_at = now() where false")
    assert refused(warehouse_dsn, "gate", "update staging.loaded_batches set loaded = 0")
    assert refused(warehouse_dsn, "gate", NEW_EVENT)
    assert refused(warehouse_dsn, "gate", "select password_hash from app.customers limit 1")


def test_dbt_owns_marts_and_reads_only_what_the_gate_passed(warehouse_dsn):
    assert allowed(warehouse_dsn, "dbt", "create table marts.mine (x int)")
    assert allowed(warehouse_dsn, "dbt", "select * from staging.purchase_events_passed limit 1")
    assert allowed(warehouse_dsn, "dbt", "select customer_id, username from app.customers limit 1")
    assert refused(warehouse_dsn, "dbt", "select * from staging.purchase_events limit 1")
    assert refused(warehouse_dsn, "dbt", "select password_hash from app.customers limit 1")
    assert refused(warehouse_dsn, "dbt", NEW_EVENT)
    assert refused(warehouse_dsn, "dbt", "create table staging.mine (x int)")


def test_grafanas_reader_reads_marts_only(warehouse_dsn):
    assert allowed(warehouse_dsn, "reader", "select * from marts.pipeline_freshness")
    assert refused(warehouse_dsn, "reader", "select * from staging.purchase_events limit 1")
    assert refused(warehouse_dsn, "reader", "select customer_id from app.customers limit 1")


@pytest.mark.parametrize("part", sorted(ROLES))
def test_no_part_may_connect_to_airflows_database(warehouse_dsn, airflow_db, part):
    role_dsn = Settings(WAREHOUSE_DSN=airflow_db).dsn_as(part)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(role_dsn).close()
