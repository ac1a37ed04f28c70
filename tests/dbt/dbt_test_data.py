"""Known customers and purchases for the dbt tests, and the marts they must produce (to the cent).

Thresholds: the project's defaults (lifetime 1000, daily 500) for everyone but bob in EUR, whose overrides
in the seed are 50 (lifetime) and 20 (daily).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

UTC = UTC
ALICE = uuid.UUID("a11ce000-0000-4000-8000-000000000001")
BOB = uuid.UUID("b0b00000-0000-4000-8000-000000000002")
CAROL = uuid.UUID("ca201000-0000-4000-8000-000000000003")
CUSTOMERS = {ALICE: "alice", BOB: "bob", CAROL: "carol"}

SEED_THRESHOLDS_CSV = f"customer_id,currency,lifetime_threshold,daily_threshold\n{BOB},EUR,50.00,20.00\n"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class Purchase:
    number: int
    customer_id: uuid.UUID
    currency: str
    quantity: int
    unit_price: Decimal
    purchased_at: datetime

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.UUID(int=0xE0E0_0000_0000_4000_8000_0000_0000_0000 + self.number)


def purchase(number, customer_id, currency, quantity, unit_price, purchased_at) -> Purchase:
    return Purchase(number, customer_id, currency, quantity, Decimal(unit_price), at(purchased_at))


FIRST_BATCH = [
    purchase(1, ALICE, "USD", 2, "150.00", "2024-03-01T09:00:00+00:00"),
    purchase(2, ALICE, "USD", 1, "250.00", "2024-03-01T12:00:00+00:00"),  # day reaches 550 >= 500
    purchase(3, ALICE, "USD", 3, "33.33", "2024-03-01T23:30:00-02:00"),  # 2024-03-02 01:30 UTC
    purchase(4, ALICE, "USD", 1, "400.00", "2024-03-03T08:00:00+00:00"),  # lifetime reaches 1049.99
    purchase(5, ALICE, "EUR", 1, "99.99", "2024-03-02T10:00:00+00:00"),
    purchase(6, BOB, "EUR", 1, "15.00", "2024-03-02T10:00:00+00:00"),
    purchase(7, BOB, "EUR", 1, "10.00", "2024-03-02T11:00:00+00:00"),  # day reaches 25 >= 20
    purchase(8, BOB, "EUR", 2, "12.50", "2024-03-04T09:00:00+00:00"),  # lifetime 50 >= 50, day 25 >= 20
    purchase(9, BOB, "USD", 1, "5.00", "2024-03-04T10:00:00+00:00"),
]

# customer, currency -> total_spend, purchase_count, first_purchase_at, last_purchase_at, threshold, crossed_at
EXPECTED_SPEND = {
    (ALICE, "USD"): (
        Decimal("1049.99"),
        4,
        at("2024-03-01T09:00:00+00:00"),
        at("2024-03-03T08:00:00+00:00"),
        Decimal("1000.00"),
        at("2024-03-03T08:00:00+00:00"),
    ),
    (ALICE, "EUR"): (
        Decimal("99.99"),
        1,
        at("2024-03-02T10:00:00+00:00"),
        at("2024-03-02T10:00:00+00:00"),
        Decimal("1000.00"),
        None,
    ),
    (BOB, "EUR"): (
        Decimal("50.00"),
        3,
        at("2024-03-02T10:00:00+00:00"),
        at("2024-03-04T09:00:00+00:00"),
        Decimal("50.00"),
        at("2024-03-04T09:00:00+00:00"),
    ),
    (BOB, "USD"): (
        Decimal("5.00"),
        1,
        at("2024-03-04T10:00:00+00:00"),
        at("2024-03-04T10:00:00+00:00"),
        Decimal("1000.00"),
        None,
    ),
}

# customer, currency, day -> spend, purchase_count, daily_threshold, crossed_at
EXPECTED_DAILY = {
    (ALICE, "USD", "2024-03-01"): (Decimal("550.00"), 2, Decimal("500.00"), at("2024-03-01T12:00:00+00:00")),
    (ALICE, "USD", "2024-03-02"): (Decimal("99.99"), 1, Decimal("500.00"), None),
    (ALICE, "USD", "2024-03-03"): (Decimal("400.00"), 1, Decimal("500.00"), None),
    (ALICE, "EUR", "2024-03-02"): (Decimal("99.99"), 1, Decimal("500.00"), None),
    (BOB, "EUR", "2024-03-02"): (Decimal("25.00"), 2, Decimal("20.00"), at("2024-03-02T11:00:00+00:00")),
    (BOB, "EUR", "2024-03-04"): (Decimal("25.00"), 1, Decimal("20.00"), at("2024-03-04T09:00:00+00:00")),
    (BOB, "USD", "2024-03-04"): (Decimal("5.00"), 1, Decimal("500.00"), None),
}

# customer, currency, alert_type, spend_date -> spend, threshold, first_crossed_at
EXPECTED_ALERTS = {
    (ALICE, "USD", "lifetime", None): (Decimal("1049.99"), Decimal("1000.00"), at("2024-03-03T08:00:00+00:00")),
    (ALICE, "USD", "daily", "2024-03-01"): (Decimal("550.00"), Decimal("500.00"), at("2024-03-01T12:00:00+00:00")),
    (BOB, "EUR", "lifetime", None): (Decimal("50.00"), Decimal("50.00"), at("2024-03-04T09:00:00+00:00")),
    (BOB, "EUR", "daily", "2024-03-02"): (Decimal("25.00"), Decimal("20.00"), at("2024-03-02T11:00:00+00:00")),
    (BOB, "EUR", "daily", "2024-03-04"): (Decimal("25.00"), Decimal("20.00"), at("2024-03-04T09:00:00+00:00")),
}

SECOND_BATCH = [
    # Arrives late but was made before alice's crossing: her USD crossing moves back to purchase 2.
    purchase(10, ALICE, "USD", 1, "500.00", "2024-02-28T10:00:00+00:00"),
    # carol's first purchase: a new customer and currency, over both default thresholds at once.
    purchase(11, CAROL, "JPY", 1, "1500.00", "2024-03-05T07:00:00+00:00"),
]


def add_customers(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for customer_id, username in CUSTOMERS.items():
            conn.execute(
                "insert into app.customers (customer_id, username, password_hash, created_at) "
                "values (%s, %s, 'not-a-real-hash', '2024-01-01T00:00:00Z') on conflict do nothing",
                (customer_id, username),
            )


def load_purchases(dsn: str, purchases: list[Purchase], passed_at: datetime | None = None) -> None:
    """Inserts as the loader does (one transaction, one batch; first copy wins), and passes the batch as the
    quality gate does (at `passed_at` if given, else now)."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        (batch_id,) = cursor.execute(
            "insert into staging.loaded_batches (kafka_topic, kafka_partition, loaded, checked_at) "
            "values ('purchases', 0, %s, coalesce(%s, clock_timestamp())) returning batch_id",
            (len(purchases), passed_at),
        ).fetchone()
        cursor.executemany(
            "insert into staging.purchase_events (event_id, customer_id, product_name, description, quantity,"
            " unit_price, currency, purchased_at, schema_version, kafka_topic, kafka_partition, kafka_offset,"
            " batch_id) values (%s, %s, %s, null, %s, %s, %s, %s, 1, 'purchases', 0, %s, %s)"
            " on conflict (event_id) do nothing",
            [
                (
                    p.event_id,
                    p.customer_id,
                    f"product {p.number}",
                    p.quantity,
                    p.unit_price,
                    p.currency,
                    p.purchased_at,
                    p.number,
                    batch_id,
                )
                for p in purchases
            ],
        )


def days_between(first: str, last: str) -> list[str]:
    start, end = datetime.fromisoformat(first), datetime.fromisoformat(last)
    return [(start + timedelta(days=n)).date().isoformat() for n in range((end - start).days + 1)]
