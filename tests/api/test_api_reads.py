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
def customer_spend_mart(api_dsn):
    """marts.customer_spend as dbt builds it (another suite owns the model); only if absent, removed after."""
    with psycopg.connect(api_dsn, autocommit=True) as conn:
        if conn.execute("select to_regclass('marts.customer_spend')").fetchone()[0] is not None:
            pytest.skip("marts.customer_spend exists already in this database")
        conn.execute("""create table marts.customer_spend (customer_id uuid, currency char(3), total_spend numeric,
                            purchase_count bigint, first_purchase_at timestamptz, last_purchase_at timestamptz,
                            last_transformed_at timestamptz)""")
        conn.execute("grant select on marts.customer_spend to purchases_api")  # as dbt's default privileges do
        try:
            yield conn
        finally:
            conn.execute("drop table marts.customer_spend")


def test_spend_is_empty_before_the_marts_exist(client, customer):
    answer = client.get("/customers/me/spend", headers=customer.headers)
    assert answer.status_code == 200
    body = answer.json()
    assert body["customer_id"] == customer.id and body["totals"] == []
    assert abs(datetime.fromisoformat(body["as_of"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_spend_reads_the_callers_totals_from_the_marts(client, customer, other_customer, customer_spend_mart):
    built = datetime(2026, 3, 3, 4, 5, 6, tzinfo=UTC)  # the newest transformation: as_of
    first, last = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    customer_spend_mart.cursor().executemany(
        "insert into marts.customer_spend values (%s, %s, %s, %s, %s, %s, %s)",
        [
            (customer.id, "USD", Decimal("37.15"), 2, first, last, built - timedelta(days=1)),
            (customer.id, "EUR", Decimal("999999.99"), 1, first, first, built - timedelta(days=2)),
            (other_customer.id, "USD", Decimal("1.00"), 1, first, first, built),
        ],
    )
    body = client.get("/customers/me/spend", headers=customer.headers).json()
    assert body == {
        "customer_id": customer.id,
        "as_of": "2026-03-03T04:05:06Z",
        "totals": [
            {
                "currency": "EUR",
                "total_spend": "999999.99",
                "purchase_count": 1,
                "first_purchase_at": "2026-01-01T00:00:00Z",
                "last_purchase_at": "2026-01-01T00:00:00Z",
            },
            {
                "currency": "USD",
                "total_spend": "37.15",
                "purchase_count": 2,
                "first_purchase_at": "2026-01-01T00:00:00Z",
                "last_purchase_at": "2026-03-01T00:00:00Z",
            },
        ],
    }
    assert [
        t["total_spend"] for t in client.get("/customers/me/spend", headers=other_customer.headers).json()["totals"]
    ] == ["1.00"]
