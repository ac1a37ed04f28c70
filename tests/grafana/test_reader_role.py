"""purchases.roles: Grafana's read-only role is created, updated and re-run safely, and says what is missing."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from purchases.roles import drop_role, ensure_roles, main, passwords_of
from purchases.settings import Settings
from purchases.warehouse import bootstrap, drop_database


@pytest.fixture
def scratch():
    """An empty warehouse and a role name of its own (roles are shared by the whole Postgres cluster)."""
    base = conninfo_to_dict(os.environ["WAREHOUSE_DSN"])
    dsn = make_conninfo(os.environ["WAREHOUSE_DSN"], dbname=f"{base['dbname']}_role_{secrets.token_hex(3)}")
    role = f"grafana_reader_test_{secrets.token_hex(4)}"
    bootstrap(dsn)
    yield dsn, role
    drop_role(dsn, role)
    drop_database(dsn)


def ensure_reader_role(dsn: str, password: str, role: str) -> None:
    """The roles of every part, with this reader's name and password."""
    ensure_roles(dsn, {**passwords_of(Settings()), "reader": password}, reader=role)


def verifier(dsn: str, role: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select rolpassword from pg_authid where rolname = %s", (role,)).fetchone()[0]


def test_rerunning_keeps_one_role_and_takes_the_new_password(scratch):
    dsn, role = scratch
    ensure_reader_role(dsn, "first-password", role)
    first = verifier(dsn, role)
    ensure_reader_role(dsn, "first-password", role)
    ensure_reader_role(dsn, "second-password", role)
    assert first.startswith("SCRAM-SHA-256$") and verifier(dsn, role) != first
    with psycopg.connect(dsn) as conn:
        settings = conn.execute("select rolconfig from pg_roles where rolname = %s", (role,)).fetchone()[0]
        assert "default_transaction_read_only=on" in settings


def test_tables_created_later_in_marts_are_readable_and_others_are_not(scratch):
    dsn, role = scratch
    ensure_reader_role(dsn, "pw", role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table marts.later (x int)")
        conn.execute("insert into marts.later values (1)")
        conn.execute("create table staging.later (x int)")
    with psycopg.connect(make_conninfo(dsn, user=role, password="pw")) as conn:
        assert conn.execute("select x from marts.later").fetchall() == [(1,)]
    with psycopg.connect(make_conninfo(dsn, user=role, password="pw")) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select x from staging.later")


def test_an_empty_password_is_refused_with_the_setting_to_fix(scratch):
    dsn, role = scratch
    with pytest.raises(ValueError, match="GRAFANA_READER_PASSWORD"):
        ensure_reader_role(dsn, "", role)


def test_command_line(scratch, monkeypatch, capsys):
    dsn, role = scratch
    monkeypatch.setenv("GRAFANA_READER_PASSWORD", "pw")
    assert main(["--dsn", dsn, "--reader", role]) == 0
    assert "purchases_api" in capsys.readouterr().out
    monkeypatch.setenv("GRAFANA_READER_PASSWORD", "")
    assert main(["--dsn", dsn, "--reader", role]) == 2
    assert "GRAFANA_READER_PASSWORD" in capsys.readouterr().err


def test_runs_as_a_module_like_the_docker_stack_runs_it(scratch):
    dsn, role = scratch
    env = dict(os.environ, WAREHOUSE_DSN=dsn, GRAFANA_READER_PASSWORD="pw")
    result = subprocess.run(
        [sys.executable, "-m", "purchases.roles", "--reader", role], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
