"""Creating the warehouse database and the tables the application and the loader own."""
from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SCHEMA_SQL = resources.files("purchases").joinpath("sql/schema.sql")


def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it does not exist (connects to `postgres` to do it)."""
    params = conninfo_to_dict(dsn)
    name = params.get("dbname") or "postgres"
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def ensure_schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        # An advisory lock keeps concurrent starters from racing on `create ... if not exists`.
        conn.execute("select pg_advisory_lock(724311)")
        try:
            conn.execute(SCHEMA_SQL.read_text())
        finally:
            conn.execute("select pg_advisory_unlock(724311)")


def bootstrap(dsn: str) -> None:
    ensure_database(dsn)
    ensure_schema(dsn)


def drop_database(dsn: str) -> None:
    name = conninfo_to_dict(dsn).get("dbname")
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
