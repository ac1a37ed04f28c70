"""Alembic's environment for the warehouse's own schemas (`app`, `staging`; dbt owns `marts`).

Plain SQL migrations (no ORM models): `purchases.warehouse.upgrade(dsn)` runs them, as do `make up`, the
Docker stack's warehouse-init and the tests; `alembic upgrade head` (alembic.ini) works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:  # by hand: alembic -x dsn=... (or WAREHOUSE_DSN)
        from purchases.settings import get_settings
        from purchases.warehouse import sqlalchemy_url

        url = sqlalchemy_url(context.get_x_argument(as_dictionary=True).get("dsn") or get_settings().warehouse_dsn)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)


def _run(connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run them against the warehouse")
run_migrations_online()
