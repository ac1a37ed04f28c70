"""Creating the warehouse database and bringing its own schemas (`app`, `staging`) to the newest migration.

The schemas are owned by the Alembic migrations in purchases/migrations (dbt owns `marts`). `upgrade` is
what `make up`, the Docker stack's warehouse-init, the benchmarks and the tests run; a warehouse made by
the first release (before migrations) is adopted by the first migration, which is that release's schema.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MIGRATIONS = resources.files("purchases").joinpath("migrations")
# Serialises concurrent starters (two test sessions, make up beside a test run) on one warehouse.
_MIGRATION_LOCK = 724311


def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it does not exist (connects to `postgres` to do it)."""
    params = conninfo_to_dict(dsn)
    name = params.get("dbname") or "postgres"
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def keep_private(dsn: str) -> None:
    """Only roles granted CONNECT may connect to the database of `dsn` (Postgres lets everyone by default):
    the parts' roles reach the warehouse, never, say, Airflow's metadata database."""
    name = conninfo_to_dict(dsn).get("dbname") or "postgres"
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("revoke connect, temporary on database {} from public").format(sql.Identifier(name)))


def sqlalchemy_url(dsn: str) -> str:
    """The DSN as a SQLAlchemy URL for psycopg 3 (Alembic's connection)."""
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(dsn)
    return URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
    ).render_as_string(hide_password=False)


def alembic_config(dsn: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    """Run the migrations up to `revision` (idempotent: an up-to-date warehouse is left as it is)."""
    from alembic import command
    from sqlalchemy import create_engine, pool, text

    config = alembic_config(dsn)
    engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("select pg_advisory_lock(:lock)"), {"lock": _MIGRATION_LOCK})
        connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        finally:
            connection.execute(text("select pg_advisory_unlock(:lock)"), {"lock": _MIGRATION_LOCK})
            connection.commit()
    engine.dispose()


def bootstrap(dsn: str) -> None:
    ensure_database(dsn)
    upgrade(dsn)


def drop_database(dsn: str) -> None:
    name = conninfo_to_dict(dsn).get("dbname")
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
