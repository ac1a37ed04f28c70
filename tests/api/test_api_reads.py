"""Reading back: one's own purchases (keyset pages, newest first, exact money), one purchase's status, spend,
and customer isolation (another customer's data is never shown: 404 or simply absent)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

GOOD = {"product_name": "Coffee beans", "description": "1 kg", "quantity": 3, "unit_price": "12.35", "currency": "USD"}


def buy(client, customer, **changes) -> str:
    answer = client.post("/purchases", json={**GOOD, **changes}, headers=customer.headers)
    assert answer.status_code == 202, answer.text
    return answer.json()["event_id"]


def listed(client, customer, limit=50) -> list[dict]:
    items, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get("/customers/me/purchases", params=params, headers=customer.headers)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


def test_recorded_purchases_are_listed_newest_first_with_exact_money(client, customer, stage):
    base = (datetime.now(UTC) - timedelta(days=20)).replace(hour=12, minute=0, second=0, microsecond=0)
    bought = [
        buy(
            client,
            customer,
            product_name=f"item {i}",
            quantity=i + 1,
            unit_price=f"{i}.1{i}",
            purchased_at=(base + timedelta(hours=i)).isoformat(),
        )
        for i in range(7)
    ]
    assert client.get("/customers/me/purchases", headers=customer.headers).json() == {
        "items": [],
        "next_cursor": None,
    }  # accepted, not recorded yet
    stage()
    items = listed(client, customer)
    assert [item["event_id"] for item in items] == bought[::-1]
    newest = items[0]
    assert newest == {
        "event_id": bought[6],
        "status": "recorded",
        "product_name": "item 6",
        "description": "1 kg",
        "quantity": 7,
        "unit_price": "6.16",
        "currency": "USD",
        "total_price": "43.12",
        "purchased_at": (base + timedelta(hours=6)).isoformat().replace("+00:00", "Z"),
        "recorded_at": newest["recorded_at"],
    }
    assert all(Decimal(item["total_price"]) == Decimal(item["unit_price"]) * item["quantity"] for item in items)


def test_pages_follow_the_cursor_without_gaps_or_repeats(client, customer, stage):
    same_time = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0).isoformat()  # ties: event id
    bought = {buy(client, customer, purchased_at=same_time) for _ in range(5)}
    bought |= {buy(client, customer) for _ in range(6)}
    stage()
    by_three = listed(client, customer, limit=3)
    assert len(by_three) == 11 and {item["event_id"] for item in by_three} == bought
    keys = [(item["purchased_at"], item["event_id"]) for item in by_three]
    assert keys == sorted(keys, reverse=True)
    assert by_three == listed(client, customer, limit=200)
    first_page = client.get("/customers/me/purchases", params={"limit": 11}, headers=customer.headers).json()
    assert first_page["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "x"},
        {"cursor": "not-a-cursor"},
        {"cursor": "W10"},
        {"cursor": "WyJ4IiwieSJd"},
    ],
)
def test_bad_limits_and_cursors_answer_422(client, customer, params):
    answer = client.get("/customers/me/purchases", params=params, headers=customer.headers)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][0] == "query"


def test_customers_see_only_their_own_purchases(client, customer, other_customer, stage):
    mine = buy(client, customer, product_name="mine")
    theirs = buy(client, other_customer, product_name="theirs")
    stage()
    assert [item["event_id"] for item in listed(client, customer)] == [mine]
    assert [item["event_id"] for item in listed(client, other_customer)] == [theirs]

    assert client.get(f"/purchases/{mine}", headers=customer.headers).json()["status"] == "recorded"
    for_other = client.get(f"/purchases/{mine}", headers=other_customer.headers)
    assert for_other.status_code == 404
    assert client.get(f"/purchases/{uuid.uuid4()}", headers=customer.headers).status_code == 404  # same answer

    assert (
        client.get(f"/customers/{customer.id}/purchases", headers=customer.headers).json()["items"][0]["event_id"]
        == mine
    )
    assert client.get(f"/customers/{other_customer.id}/purchases", headers=customer.headers).status_code == 404
    assert client.get(f"/customers/{customer.id}/purchases").status_code == 401
    assert client.get(f"/purchases/{mine}").status_code == 401


def test_one_purchase_reads_as_recorded_or_rejected(client, customer, stage, api_dsn):
    accepted = buy(client, customer, product_name="Kettle", quantity=2, unit_price="24.95")
    assert client.get(f"/purchases/{accepted}", headers=customer.headers).status_code == 404  # not recorded yet
    stage()
    recorded = client.get(f"/purchases/{accepted}", headers=customer.headers)
    assert recorded.status_code == 200
    assert recorded.json()["status"] == "recorded" and recorded.json()["total_price"] == "49.90"

    rejected_id = uuid.uuid4()  # as the loader keeps an event it could not record
    with psycopg.connect(api_dsn) as conn:
        conn.execute(
            """insert into staging.purchase_events_rejected
                            (event_id, customer_id, reason, raw_value, kafka_topic, kafka_partition, kafka_offset)
                        values (%s, %s, 'unit_price: too many decimals', '{}', 'purchases_api_tests', 0, %s)""",
            (rejected_id, customer.id, rejected_id.int % 10**12),
        )
    rejected = client.get(f"/purchases/{rejected_id}", headers=customer.headers)
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["reason"] == "unit_price: too many decimals"
    assert client.get("/purchases/not-a-uuid", headers=customer.headers).status_code == 404


@pytest.fixture
def spend_marts(api_dsn):
    """marts.customer_purchases and marts.customer_spend with the columns the API reads, as dbt builds them
    (another suite owns the models); only if absent, removed after."""
    with psycopg.connect(api_dsn, autocommit=True) as conn:
        if conn.execute("select to_regclass('marts.customer_spend')").fetchone()[0] is not None:
            pytest.fail("marts.customer_spend exists already in this database: the API tests need their own")
        conn.execute(
            "create table marts.customer_purchases (event_id uuid, passed_at timestamptz, transformed_at timestamptz)"
        )
        conn.execute("""create table marts.customer_spend (customer_id uuid, currency char(3), total_spend numeric,
                            purchase_count bigint, first_purchase_at timestamptz, last_purchase_at timestamptz,
                            last_transformed_at timestamptz)""")
        # as dbt's default privileges do
        conn.execute("grant select on marts.customer_purchases, marts.customer_spend to purchases_api")
        try:
            yield conn
        finally:
            conn.execute("drop table marts.customer_spend, marts.customer_purchases")


def days_ago(days: int) -> str:
    """A purchase time clients may send (at most 30 days back), as the API writes it back."""
    moment = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    return moment.isoformat().replace("+00:00", "Z")


def spend(client, customer) -> dict:
    answer = client.get("/customers/me/spend", headers=customer.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_spend_is_empty_before_anything_is_recorded(client, customer):
    body = spend(client, customer)
    assert body["customer_id"] == customer.id and body["totals"] == []
    assert abs(datetime.fromisoformat(body["as_of"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_before_the_marts_exist_spend_counts_every_recorded_purchase(client, customer, stage):
    buy(client, customer, quantity=2, unit_price="10.05", purchased_at=days_ago(9))
    buy(client, customer, quantity=1, unit_price="0.10", currency="EUR", purchased_at=days_ago(10))
    stage()
    assert spend(client, customer)["totals"] == [
        {
            "currency": "EUR",
            "total_spend": "0.10",
            "purchase_count": 1,
            "first_purchase_at": days_ago(10),
            "last_purchase_at": days_ago(10),
            "not_yet_in_marts": 1,
        },
        {
            "currency": "USD",
            "total_spend": "20.10",
            "purchase_count": 1,
            "first_purchase_at": days_ago(9),
            "last_purchase_at": days_ago(9),
            "not_yet_in_marts": 1,
        },
    ]


def pass_batch_of(conn, event_id: str, at: datetime) -> datetime:
    """Stamp the batch that recorded this purchase passed, as the quality gate does."""
    conn.execute(
        """update staging.loaded_batches set checked_at = %s
           where batch_id = (select batch_id from staging.purchase_events where event_id = %s)""",
        (at, event_id),
    )
    return at


def test_spend_is_the_marts_totals_plus_the_recorded_purchases_they_have_not_counted(
    client, customer, other_customer, stage, spend_marts
):
    built = datetime(2026, 3, 3, 4, 5, 6, tzinfo=UTC)  # the newest transformation counted: the watermark, as_of
    # One batch each (one loader run each), passed by the gate in this order, except the last.
    counted = buy(client, customer, quantity=1, unit_price="30.00", purchased_at=days_ago(10))
    theirs = buy(client, other_customer, quantity=1, unit_price="1.00")
    stage()
    transformed_since = buy(client, customer, quantity=1, unit_price="5.00", purchased_at=days_ago(5))
    stage()
    not_passed = buy(client, customer, quantity=3, unit_price="0.05", purchased_at=days_ago(2))
    stage()
    first_pass = pass_batch_of(spend_marts, counted, built - timedelta(hours=2))
    pass_batch_of(spend_marts, theirs, first_pass)  # the same batch, or its partition's of the same loader run
    second_pass = pass_batch_of(spend_marts, transformed_since, built - timedelta(hours=1))
    spend_marts.cursor().executemany(
        "insert into marts.customer_purchases values (%s, %s, %s)",
        [
            (counted, first_pass, built - timedelta(minutes=90)),
            (theirs, first_pass, built - timedelta(minutes=90)),
            (transformed_since, second_pass, built + timedelta(seconds=1)),  # customer_spend has not run since
        ],
    )
    spend_marts.cursor().executemany(
        "insert into marts.customer_spend values (%s, %s, %s, %s, %s, %s, %s)",
        [
            (
                customer.id,
                "USD",
                Decimal("30.00"),
                1,
                datetime.fromisoformat(days_ago(10)),
                None,
                built - timedelta(hours=1),
            ),
            (
                customer.id,
                "EUR",
                Decimal("999999.99"),
                7,
                datetime(2025, 1, 1, tzinfo=UTC),
                None,
                built - timedelta(days=2),
            ),
            (other_customer.id, "USD", Decimal("1.00"), 1, None, None, built),
        ],
    )
    body = spend(client, customer)
    assert body["customer_id"] == customer.id and body["as_of"] == "2026-03-03T04:05:06Z"
    assert body["totals"] == [
        {
            "currency": "EUR",  # counted by the marts only (here their rows, not staging's, are the truth)
            "total_spend": "999999.99",
            "purchase_count": 7,
            "first_purchase_at": "2025-01-01T00:00:00Z",
            "last_purchase_at": None,
            "not_yet_in_marts": 0,
        },
        {
            "currency": "USD",  # 30.00 counted; 5.00 passed after the counted batches, 0.15 not passed: added
            "total_spend": "35.15",
            "purchase_count": 3,
            "first_purchase_at": days_ago(10),
            "last_purchase_at": days_ago(2),
            "not_yet_in_marts": 2,
        },
    ]
    assert [(t["total_spend"], t["not_yet_in_marts"]) for t in spend(client, other_customer)["totals"]] == [("1.00", 0)]
    assert not_passed  # recorded, listed, in no mart

    # A full refresh rebuilt customer_purchases (every row transformed after the watermark) but not yet
    # customer_spend, whose totals would count those rows twice: staging alone counts.
    spend_marts.execute("update marts.customer_purchases set transformed_at = %s", (built + timedelta(minutes=5),))
    assert [(t["currency"], t["total_spend"], t["not_yet_in_marts"]) for t in spend(client, customer)["totals"]] == [
        ("USD", "35.15", 3)
    ]
