"""The warehouse roles besides its owner: `grafana_reader`, which can SELECT in `marts` and nothing else.

`ensure_reader_role` is idempotent: `make up` (and the Docker stack's init) run it on every start, and
it only ever brings the role, its password, its grants and the pipeline views in `marts` up to date.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

import psycopg
from psycopg import sql

from purchases.warehouse import upgrade

READER_ROLE = "grafana_reader"
READER_SQL = resources.files("purchases").joinpath("sql/grafana_reader.sql")
# Serialises concurrent starters: CREATE ROLE / CREATE OR REPLACE VIEW race otherwise.
_LOCK_ID = 724312


def reader_role_sql(role: str = READER_ROLE) -> sql.Composed:
    return sql.SQL(READER_SQL.read_text()).format(reader=sql.Identifier(role), reader_literal=sql.Literal(role))


def ensure_reader_role(dsn: str, password: str, role: str = READER_ROLE) -> None:
    """Create or update the read-only role `role` with `password`, and the views it reads in `marts`.

    Run it as the role that owns the warehouse and that dbt builds `marts` with: the default privileges
    that make future dbt tables readable are those of the role running this.
    """
    if not password:
        raise ValueError(f"a password for the {role} role is required (set GRAFANA_READER_PASSWORD)")
    upgrade(dsn)  # the views read staging tables, which must exist first
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            with conn.transaction():
                conn.execute(reader_role_sql(role))
                conn.execute(
                    sql.SQL("alter role {} with login password {}").format(sql.Identifier(role), sql.Literal(password))
                )
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_ID,))


def drop_reader_role(dsn: str, role: str = READER_ROLE) -> None:
    """Remove `role` and what it was granted in this database (other databases keep their grants)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is None:
            return
        conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def main(argv: list[str] | None = None) -> int:
    from purchases.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(description="Create or update Grafana's read-only warehouse role.")
    parser.add_argument(
        "--dsn", default=settings.warehouse_dsn, help="warehouse DSN of its owner (default: WAREHOUSE_DSN)"
    )
    parser.add_argument("--role", default=READER_ROLE)
    args = parser.parse_args(argv)
    password = settings.grafana_reader_password
    try:
        ensure_reader_role(args.dsn, password, args.role)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"role {args.role} can read schema marts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
