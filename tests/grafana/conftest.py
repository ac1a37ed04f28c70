"""A warehouse of known purchases, its marts built by the project's real dbt, and a reader role.

The database is this module's own (not the shared `warehouse_dsn` one), so the expected rows do not
depend on what other tests loaded. The reader role is created before dbt runs, so that reading the
tables dbt creates proves the default privileges work. Times are relative to the fixture's start.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from support import pass_quality_gate

from purchases.roles import drop_role, ensure_roles, passwords_of
from purchases.settings import Settings
from purchases.warehouse import bootstrap, drop_database

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "grafana" / "provisioning"
DBT_PROJECT = ROOT / "dbt"
LIFETIME_THRESHOLD = Decimal("1000")
DAILY_THRESHOLD = Decimal("500")


@dataclass
class Purchase:
    username: str
    currency: str
    amount: Decimal
    purchased_at: datetime
    loaded_at: datetime
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class Warehouse:
    dsn: str  # the owner's (superuser) connection
    reader_dsn: str  # the read-only role's login
    reader_role: str
    reader_password: str
    now: datetime  # the fixture's "now"; every time below is relative to it
    today_start: datetime
    customers: dict[str, uuid.UUID]
    purchases: list[Purchase]
    rejected: list[tuple[datetime, str]]

    def customer_id(self, username: str) -> str:
        return str(self.customers[username])


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def dashboard() -> dict:
    return json.loads((PROVISIONING / "dashboards" / "customer-spend.json").read_text())


@pytest.fixture(scope="session")
def alert_rules() -> dict[str, dict]:
    groups = load_yaml(PROVISIONING / "alerting" / "rules.yaml")["groups"]
    return {rule["uid"]: rule for group in groups for rule in group["rules"]}


def _known_purchases(now: datetime, today_start: datetime) -> list[Purchase]:
    def day(n: int) -> datetime:  # noon n UTC days ago
        return today_start - timedelta(days=n) + timedelta(hours=12)

    today = today_start + (now - today_start) / 2  # today (UTC) and in the past, whenever the test runs
    rows = [
        # alice: 1,200 USD over three days, none of them 500 -> lifetime crossing only
        ("alice", "USD", "400.00", day(3)),
        ("alice", "USD", "400.00", day(2)),
        ("alice", "USD", "400.00", day(1)),
        ("alice", "EUR", "50.00", day(1)),
        # bob: 600 USD today -> today's daily crossing
        ("bob", "USD", "300.00", today),
        ("bob", "USD", "300.00", today + timedelta(seconds=30)),
        # carol: 900 EUR, 450 a day, and 100 USD -> nothing
        ("carol", "EUR", "450.00", day(2)),
        ("carol", "EUR", "450.00", day(1)),
        ("carol", "USD", "100.00", day(1)),
        # dave: 600 USD yesterday -> a daily crossing, but not today's
        ("dave", "USD", "600.00", day(1)),
        # erin: exactly 1,000 GBP -> lifetime crossing (the threshold counts as crossed)
        ("erin", "GBP", "400.00", day(3)),
        ("erin", "GBP", "400.00", day(2)),
        ("erin", "GBP", "200.00", day(1)),
        # frank: 800 EUR yesterday, 700 today -> lifetime 1,500 (x1.5) and today's daily 700 (x1.4)
        ("frank", "EUR", "800.00", day(1)),
        ("frank", "EUR", "700.00", today + timedelta(seconds=10)),
    ]
    # All loaded in the last few minutes (a loader catching up on backdated purchases); newest 2 min ago.
    newest_load = now - timedelta(minutes=2)
    return [
        Purchase(user, currency, Decimal(amount), purchased_at, newest_load - timedelta(seconds=5 * i))
        for i, (user, currency, amount, purchased_at) in enumerate(rows)
    ]


def _insert(
    dsn: str, customers: dict[str, uuid.UUID], purchases: list[Purchase], rejected: list[tuple[datetime, str]]
) -> None:
    with psycopg.connect(dsn) as conn:
        for username, customer_id in customers.items():
            conn.execute(
                "insert into app.customers (customer_id, username, password_hash) values (%s, %s, 'x')",
                (customer_id, username),
            )
        for offset, p in enumerate(purchases):
            conn.execute(
                """insert into staging.purchase_events (event_id, customer_id, product_name, quantity, unit_price,
                       currency, purchased_at, schema_version, kafka_topic, kafka_partition, kafka_offset, loaded_at)
                   values (%s, %s, 'thing', 1, %s, %s, %s, 1, 'purchases', %s, %s, %s)""",
                (
                    p.event_id,
                    customers[p.username],
                    p.amount,
                    p.currency,
                    p.purchased_at,
                    offset % 3,
                    offset,
                    p.loaded_at,
                ),
            )
        pass_quality_gate(conn)
        for offset, (rejected_at, reason) in enumerate(rejected):
            conn.execute(
                """insert into staging.purchase_events_rejected (reason, raw_value, kafka_topic, kafka_partition,
                       kafka_offset, rejected_at) values (%s, %s, 'purchases', 0, %s, %s)""",
                (reason, b"secret raw value", 1000 + offset, rejected_at),
            )


def run_dbt(dbname: str, target_dir: Path) -> subprocess.CompletedProcess:
    dbt = Path(sys.executable).parent / "dbt"
    env = dict(os.environ, DBT_DBNAME=dbname)
    variables = {"spend_alert_threshold": str(LIFETIME_THRESHOLD), "daily_spend_alert_threshold": str(DAILY_THRESHOLD)}
    # Its own target and log paths: other tests may run dbt on the same project at the same time.
    return subprocess.run(
        [
            str(dbt),
            "build",
            "--project-dir",
            str(DBT_PROJECT),
            "--profiles-dir",
            str(DBT_PROJECT),
            "--target-path",
            str(target_dir / "target"),
            "--log-path",
            str(target_dir / "logs"),
            "--vars",
            json.dumps(variables),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory) -> Warehouse:
    if not (DBT_PROJECT / "dbt_project.yml").exists():
        pytest.skip("dbt/dbt_project.yml does not exist yet: the marts these queries read are built by dbt")
    base = conninfo_to_dict(os.environ["WAREHOUSE_DSN"])
    dbname = f"{base['dbname']}_grafana"
    dsn = make_conninfo(os.environ["WAREHOUSE_DSN"], dbname=dbname)
    role = f"grafana_reader_test_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    bootstrap(dsn)
    try:
        ensure_roles(dsn, {**passwords_of(Settings()), "reader": password}, reader=role)

        now = datetime.now(UTC).replace(microsecond=0)
        today_start = now.replace(hour=0, minute=0, second=0)
        customers = {name: uuid.uuid4() for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace")}
        purchases = _known_purchases(now, today_start)
        rejected = [
            (now - timedelta(minutes=20), "not JSON"),
            (now - timedelta(minutes=40), "unit_price: must be greater than 0"),
            (now - timedelta(hours=2), "not JSON"),
            (now - timedelta(days=35), "not JSON"),  # older than rejected_events_recent keeps
        ]
        _insert(dsn, customers, purchases, rejected)

        result = run_dbt(dbname, tmp_path_factory.mktemp("dbt"))
        if result.returncode != 0:
            pytest.fail(f"dbt build failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")

        reader_dsn = make_conninfo(dsn, user=role, password=password)
        yield Warehouse(dsn, reader_dsn, role, password, now, today_start, customers, purchases, rejected)
    finally:
        # The role holds grants in this database only: drop them and it, then the database.
        drop_role(dsn, role)
        drop_database(dsn)
