"""The warehouse's roles: one per part of the pipeline, each able to do only what its part needs.

| part   | role               | may                                                                       |
| ------ | ------------------ | ------------------------------------------------------------------------- |
| api    | `purchases_api`    | sign customers up and in; read staging's purchases and the marts          |
| loader | `purchases_loader` | write staging's events, rejections, batches, offsets; read customer ids   |
| gate   | `purchases_gate`   | read staging's events and batches, customer ids; mark batches passed      |
| dbt    | `purchases_dbt`    | own marts; read the events the gate passed and customers' names           |
| reader | `grafana_reader`   | read marts, read-only, 30 s statements (grafana_reader.sql)               |
| pages  | `purchases_pages`  | read the pages the Airflow UI serves (purchases/pages.py), nothing else   |

`purchases_pages` has no login (and so is not in ROLES, whose roles each have a password): the api-server's
plugin signs in as the gate, a member of it, and works as it (purchases.pages.reader_dsn).

The owner of the warehouse (WAREHOUSE_DSN: a superuser locally) runs the migrations and this, nothing else.
`ensure_roles` is idempotent: `make up`, the Docker stack's warehouse-init and the tests' warehouses run it on
every start, and it only ever brings the roles, their passwords and grants, and the reader's views up to date.
The exact grants are in purchases/sql/roles.sql and grafana_reader.sql; tests/test_roles.py checks what each
role cannot do.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from purchases.pages import PAGES_ROLE
from purchases.warehouse import upgrade


@dataclass(frozen=True)
class Role:
    name: str
    password_setting: str  # the field of purchases.settings.Settings holding its password


ROLES = {
    "api": Role("purchases_api", "api_db_password"),
    "loader": Role("purchases_loader", "loader_db_password"),
    "gate": Role("purchases_gate", "gate_db_password"),
    "dbt": Role("purchases_dbt", "dbt_db_password"),
    "reader": Role("grafana_reader", "grafana_reader_password"),
}
READER_ROLE = ROLES["reader"].name
ROLES_SQL = resources.files("purchases").joinpath("sql/roles.sql")
READER_SQL = resources.files("purchases").joinpath("sql/grafana_reader.sql")
# Serialises concurrent starters: CREATE ROLE / CREATE OR REPLACE VIEW race otherwise.
_LOCK_ID = 724312


def _names(reader: str) -> dict[str, sql.Composable]:
    names = {part: role.name for part, role in ROLES.items()} | {"reader": reader, "pages": PAGES_ROLE}
    return {
        **{part: sql.Identifier(name) for part, name in names.items()},
        **{f"{part}_literal": sql.Literal(name) for part, name in names.items()},
    }


def roles_sql(database: str, reader: str = READER_ROLE) -> sql.Composed:
    return sql.SQL(ROLES_SQL.read_text()).format(database=sql.Identifier(database), **_names(reader))


def reader_role_sql(role: str = READER_ROLE) -> sql.Composed:
    return sql.SQL(READER_SQL.read_text()).format(**_names(role))


def _set_password(conn: psycopg.Connection, role: str, password: str) -> None:
    conn.execute(sql.SQL("alter role {} with login password {}").format(sql.Identifier(role), sql.Literal(password)))


def ensure_roles(dsn: str, passwords: dict[str, str], reader: str = READER_ROLE) -> None:
    """Create or update every part's role with its password (`passwords`: part -> password), their grants, and
    the reader's views in `marts`. Run as the warehouse's owner."""
    missing = [part for part in ROLES if not passwords.get(part)]
    if missing:
        names = ", ".join(ROLES[part].password_setting.upper() for part in missing)
        raise ValueError(f"a password is required for every role: set {names}")
    upgrade(dsn)  # the grants and views name staging's tables, which must exist first
    database = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            with conn.transaction():
                conn.execute(reader_role_sql(reader))
                conn.execute(roles_sql(database, reader))
                for part, role in ROLES.items():
                    _set_password(conn, reader if part == "reader" else role.name, passwords[part])
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_ID,))


def passwords_of(settings) -> dict[str, str]:
    return {part: getattr(settings, role.password_setting) for part, role in ROLES.items()}


def setup_warehouse(dsn: str, settings=None) -> str:
    """A warehouse as `make up` makes one: the database, its migrations, every part's role and grants, with the
    passwords of `settings` (default: the environment's). Returns `dsn`."""
    from purchases.settings import Settings
    from purchases.warehouse import bootstrap

    bootstrap(dsn)
    ensure_roles(dsn, passwords_of(settings or Settings()))
    return dsn


def drop_role(dsn: str, role: str) -> None:
    """Remove `role` and what it was granted in this database (other databases keep their grants)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is None:
            return
        conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def main(argv: list[str] | None = None) -> int:
    from purchases.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(description="Create or update the warehouse's roles and their grants.")
    parser.add_argument("--dsn", default=settings.warehouse_dsn, help="the warehouse owner's DSN (WAREHOUSE_DSN)")
    parser.add_argument("--reader", default=READER_ROLE, help="the name of Grafana's read-only role")
    args = parser.parse_args(argv)
    try:
        ensure_roles(args.dsn, passwords_of(settings), args.reader)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"roles {', '.join(role.name for role in ROLES.values())} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
