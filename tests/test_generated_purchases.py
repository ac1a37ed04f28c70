"""Generated purchases through the real pipeline: whatever body the API accepts (boundary, unicode, time-zone
and extreme values, written in any of the ways a client may) goes through the real API, broker, loader,
quality gate and dbt; each is then listed, read one by one and counted, with no 500 and exact totals.

The bodies come from tests/strategies.py, which takes its limits from the contract. `make fuzz` runs many
more examples (HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import purchase_bodies
from support import examples, sign_up

from purchases.contract import PurchaseRequest

pytestmark = pytest.mark.e2e

# customer -> headers; (customer, currency) -> expected spend; event id -> the purchase as the contract reads it
CUSTOMERS: dict[str, dict] = {}
EXPECTED_SPEND: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
EXPECTED_COUNT: dict[tuple[str, str], int] = defaultdict(int)
BOUGHT: dict[str, tuple[str, PurchaseRequest]] = {}


def all_listed(client: httpx.Client, headers: dict) -> list[dict]:
    items, cursor = [], None
    while True:
        page = client.get(
            "/customers/me/purchases", params={"limit": 7, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def as_recorded(request: PurchaseRequest) -> dict:
    """What GET /purchases/{id} must answer for a purchase: the contract's normalised values."""
    return {
        "product_name": request.product_name,
        "description": request.description,
        "quantity": request.quantity,
        "unit_price": str(request.unit_price),
        "currency": request.currency,
        "total_price": str(request.quantity * request.unit_price),
    }


@settings(
    max_examples=examples(12),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(bodies=st.lists(purchase_bodies(), min_size=1, max_size=6), keyed=st.booleans())
def test_every_purchase_the_api_accepts_is_recorded_exactly_and_read_back(
    api_server, broker, warehouse_dsn, bodies, keyed
):
    from purchases.load import load_available

    client = httpx.Client(base_url=api_server.url, timeout=30)
    customer = sign_up(client, "gen")
    customer_id, headers = customer.id, customer.headers
    CUSTOMERS[customer_id] = headers
    ours = []
    for n, body in enumerate(bodies):
        key = {"Idempotency-Key": f"gen-{n}"} if keyed else {}
        answer = client.post("/purchases", json=body, headers={**headers, **key})
        assert answer.status_code == 202, (body, answer.text)
        event_id = answer.json()["event_id"]
        request = PurchaseRequest.model_validate(body)
        BOUGHT[event_id] = (customer_id, request)
        ours.append(event_id)
        EXPECTED_SPEND[customer_id, request.currency] += request.quantity * request.unit_price
        EXPECTED_COUNT[customer_id, request.currency] += 1

    load_available(broker.bootstrap, warehouse_dsn)

    listed = {item["event_id"]: item for item in all_listed(client, headers)}
    assert sorted(listed) == sorted(ours), "every accepted purchase is listed, once"
    for event_id in ours:
        one = client.get(f"/purchases/{event_id}", headers=headers)
        assert one.status_code == 200, one.text
        recorded = one.json()
        assert recorded["status"] == "recorded", recorded
        assert {k: recorded[k] for k in as_recorded(BOUGHT[event_id][1])} == as_recorded(BOUGHT[event_id][1])
        assert recorded.pop("conflicts") == []  # a generated key is never reused with another body
        assert recorded == listed[event_id]
        purchased_at = datetime.fromisoformat(recorded["purchased_at"])
        given_at = BOUGHT[event_id][1].purchased_at
        assert given_at is None or purchased_at == given_at
        assert purchased_at.utcoffset().total_seconds() == 0


def test_the_generated_purchases_pass_the_gate_and_are_counted_to_the_cent(api_server, warehouse_dsn):
    """After the generated examples: the quality gate passes their rows, dbt builds the marts from them with
    every data test green, and each customer's spend is exact per currency."""
    from purchases import transform
    from purchases.check import run_quality_gate

    assert CUSTOMERS, "the generated purchases test ran first and bought something"
    run_quality_gate(warehouse_dsn)
    build = transform.run_dbt("build", "--exclude", "resource_type:unit_test", check=False)
    assert build.returncode == 0, build.stdout[-4000:]

    client = httpx.Client(base_url=api_server.url, timeout=30)
    for customer_id, headers in CUSTOMERS.items():
        answer = client.get("/customers/me/spend", headers=headers)
        assert answer.status_code == 200, answer.text
        totals = {t["currency"]: (Decimal(t["total_spend"]), t["purchase_count"]) for t in answer.json()["totals"]}
        expected = {
            currency: (EXPECTED_SPEND[customer, currency], EXPECTED_COUNT[customer, currency])
            for customer, currency in EXPECTED_SPEND
            if customer == customer_id
        }
        assert totals == expected
