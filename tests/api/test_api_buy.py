"""Buying: 202 only with the event on the broker, idempotency, validation (422 naming the field), 413, batches."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from api_support import read_topic

from purchases.contract import parse_event

GOOD = {
    "product_name": "Coffee beans",
    "description": "1 kg, whole",
    "quantity": 2,
    "unit_price": "12.35",
    "currency": "USD",
}


def events_on_topic(api, raw: bool = False) -> dict:
    """event_id -> (kafka key, or with raw the record's bytes; parsed event) for every record the API produced."""
    return {
        str(event.event_id): (message.value() if raw else message.key(), event)
        for message in read_topic(api.bootstrap)
        for event in [parse_event(message.value())]
    }


def test_a_purchase_is_accepted_once_the_event_is_on_the_broker(api, client, customer):
    answer = client.post("/purchases", json=GOOD, headers=customer.headers)
    assert answer.status_code == 202
    body = answer.json()
    assert body["status"] == "accepted" and set(body) == {"event_id", "status"}
    key, event = events_on_topic(api)[body["event_id"]]
    assert key == customer.id.encode()
    assert str(event.customer_id) == customer.id
    assert (event.product_name, event.description, event.quantity, event.unit_price, event.currency) == (
        "Coffee beans",
        "1 kg, whole",
        2,
        Decimal("12.35"),
        "USD",
    )
    assert abs(event.purchased_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_prices_as_numbers_defaults_and_given_times_are_kept_exactly(api, client, customer):
    """The event carries the purchase as the contract normalises it: the time in UTC, the price with 2 places."""
    bought_at = (datetime.now(UTC) - timedelta(days=3)).astimezone(timezone(timedelta(hours=20)))
    answer = client.post(
        "/purchases",
        headers=customer.headers,
        content=json.dumps(
            {"product_name": "Filter", "quantity": 3.0, "unit_price": 0.1, "purchased_at": bought_at.isoformat()}
        ),
    )
    assert answer.status_code == 202, answer.text
    raw, event = events_on_topic(api, raw=True)[answer.json()["event_id"]]
    assert (event.quantity, event.unit_price, event.currency, event.description) == (3, Decimal("0.10"), "USD", None)
    assert event.purchased_at == bought_at and event.purchased_at.utcoffset() == timedelta(0)
    assert b'"unit_price":"0.10"' in raw and bought_at.astimezone(UTC).isoformat()[:19].encode() in raw


def test_the_same_idempotency_key_gives_the_same_event_id_per_customer(client, customer, other_customer):
    key = f"order-{uuid.uuid4()}"
    first = client.post("/purchases", json=GOOD, headers={**customer.headers, "Idempotency-Key": key})
    retry = client.post("/purchases", json=GOOD, headers={**customer.headers, "Idempotency-Key": key})
    other = client.post("/purchases", json=GOOD, headers={**other_customer.headers, "Idempotency-Key": key})
    fresh = client.post("/purchases", json=GOOD, headers=customer.headers)
    fresh_again = client.post("/purchases", json=GOOD, headers=customer.headers)
    assert all(a.status_code == 202 for a in (first, retry, other, fresh, fresh_again))
    assert first.json()["event_id"] == retry.json()["event_id"]
    assert other.json()["event_id"] != first.json()["event_id"]
    assert fresh.json()["event_id"] != fresh_again.json()["event_id"]  # no key: a new purchase each time


def test_a_retried_purchase_is_recorded_once(client, customer, stage, api_dsn):
    import psycopg

    key = f"retry-{uuid.uuid4()}"
    ids = {
        client.post("/purchases", json=GOOD, headers={**customer.headers, "Idempotency-Key": key}).json()["event_id"]
        for _ in range(3)
    }
    assert len(ids) == 1
    stage()
    with psycopg.connect(api_dsn) as conn:
        count = conn.execute(
            "select count(*) from staging.purchase_events where event_id = %s", (ids.pop(),)
        ).fetchone()
    assert count == (1,)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"unit_price": "-1.00"}, "unit_price"),
        ({"unit_price": "0"}, "unit_price"),
        ({"unit_price": "1.005"}, "unit_price"),
        ({"unit_price": "ten"}, "unit_price"),
        ({"unit_price": "1000000.01"}, "unit_price"),
        ({"unit_price": "NaN"}, "unit_price"),
        ({"unit_price": True}, "unit_price"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 10001}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"quantity": "2"}, "quantity"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "USDX"}, "currency"),
        ({"product_name": ""}, "product_name"),
        ({"product_name": "x" * 201}, "product_name"),
        ({"description": "x" * 2001}, "description"),
        ({"purchased_at": "2026-01-02T03:04:05"}, "purchased_at"),  # no offset
        ({"purchased_at": "yesterday"}, "purchased_at"),
        ({"purchased_at": "1999-12-31T23:59:59Z"}, "purchased_at"),  # before the contract's earliest day
        ({"purchased_at": "0001-01-01T00:00:00Z"}, "purchased_at"),
        ({"product_name": "   "}, "product_name"),  # blank
        ({"product_name": "two\nlines"}, "product_name"),  # control characters
        ({"product_name": "nul\u0000"}, "product_name"),
        ({"description": "escape \u001b[31m"}, "description"),
        ({"customer_id": str(uuid.uuid4())}, "customer_id"),  # ids are never taken from the client
        ({"event_id": str(uuid.uuid4())}, "event_id"),
    ],
)
def test_invalid_purchases_answer_422_naming_the_field(client, customer, change, field):
    answer = client.post("/purchases", json={**GOOD, **change}, headers=customer.headers)
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in answer.json()["detail"]] == [["body", field]]


def test_a_purchase_dated_more_than_30_days_back_is_refused(client, customer):
    now = datetime.now(UTC)
    too_old = (now - timedelta(days=30, minutes=1)).isoformat()
    old_enough = (now - timedelta(days=29, hours=23)).isoformat()
    refused = client.post("/purchases", json={**GOOD, "purchased_at": too_old}, headers=customer.headers)
    assert refused.status_code == 422 and "30 days" in refused.json()["detail"][0]["msg"]
    assert (
        client.post("/purchases", json={**GOOD, "purchased_at": old_enough}, headers=customer.headers).status_code
        == 202
    )


def test_a_purchase_in_the_future_is_refused(client, customer):
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    assert client.post("/purchases", json={**GOOD, "purchased_at": later}, headers=customer.headers).status_code == 422
    assert client.post("/purchases", json={**GOOD, "purchased_at": soon}, headers=customer.headers).status_code == 202


def test_a_missing_field_is_named(client, customer):
    body = {k: v for k, v in GOOD.items() if k != "product_name"}
    answer = client.post("/purchases", json=body, headers=customer.headers)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "product_name"]
    assert answer.json()["detail"][0]["type"] == "missing"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b"null", b'"text"', b'{"product_name": "x",'])
def test_malformed_json_answers_422(client, customer, raw):
    answer = client.post("/purchases", content=raw, headers={**customer.headers, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][0] == "body"


def test_a_too_long_idempotency_key_answers_422(client, customer):
    answer = client.post("/purchases", json=GOOD, headers={**customer.headers, "Idempotency-Key": "k" * 201})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_bodies_over_64_kib_answer_413(client, customer):
    big = {**GOOD, "description": "x" * (64 * 1024)}
    assert client.post("/purchases", json=big, headers=customer.headers).status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"product_name": "x", "quantity": 1, "unit_price": "1.00", "description": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}'

    chunked = client.post(
        "/purchases", content=chunks(), headers={**customer.headers, "Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    assert (
        client.post(
            "/customers", content=b"{" + b" " * 70_000 + b"}", headers={"Content-Type": "application/json"}
        ).status_code
        == 413
    )
    # Just under the limit is a normal (here: invalid) body.
    near = client.post("/purchases", content=b"[" + b" " * (64 * 1024 - 2) + b"]", headers=customer.headers)
    assert near.status_code == 422


def test_a_batch_is_accepted_with_its_event_ids_in_order(api, client, customer):
    purchases = [{**GOOD, "product_name": f"batch item {i}", "unit_price": f"{i + 1}.50"} for i in range(25)]
    answer = client.post("/purchases/batch", json={"purchases": purchases}, headers=customer.headers)
    assert answer.status_code == 202, answer.text
    ids = answer.json()["event_ids"]
    assert answer.json()["status"] == "accepted" and len(ids) == len(set(ids)) == 25
    on_topic = events_on_topic(api)
    assert [on_topic[event_id][1].product_name for event_id in ids] == [p["product_name"] for p in purchases]
    assert all(str(on_topic[event_id][1].customer_id) == customer.id for event_id in ids)


def test_a_batch_with_an_idempotency_key_can_be_retried(client, customer):
    purchases = [GOOD, {**GOOD, "quantity": 5}]
    headers = {**customer.headers, "Idempotency-Key": f"batch-{uuid.uuid4()}"}
    first = client.post("/purchases/batch", json={"purchases": purchases}, headers=headers)
    retry = client.post("/purchases/batch", json={"purchases": purchases}, headers=headers)
    assert first.status_code == retry.status_code == 202
    assert first.json()["event_ids"] == retry.json()["event_ids"]
    assert len(set(first.json()["event_ids"])) == 2


def test_a_batch_is_all_or_nothing(api, client, customer):
    marker = f"never-{uuid.uuid4().hex}"
    purchases = [{**GOOD, "product_name": marker}] * 3 + [{**GOOD, "product_name": marker, "quantity": 0}]
    answer = client.post("/purchases/batch", json={"purchases": purchases}, headers=customer.headers)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "purchases", 3, "quantity"]
    assert not [e for _, e in events_on_topic(api).values() if e.product_name == marker]


def test_batch_size_limits(client, customer):
    assert client.post("/purchases/batch", json={"purchases": []}, headers=customer.headers).status_code == 422
    too_many = client.post("/purchases/batch", json={"purchases": [GOOD] * 1001}, headers=customer.headers)
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "purchases"]
    full = client.post("/purchases/batch", json={"purchases": [GOOD] * 1000}, headers=customer.headers)
    assert full.status_code == 202 and len(full.json()["event_ids"]) == 1000
    assert client.post("/purchases/batch", json={"purchases": [GOOD]}).status_code == 401


def test_errors_echo_the_refused_value_briefly(client, customer):
    not_utf8 = client.post("/purchases", content=b"U\x07\xca~\xbey\xbf", headers=customer.headers)
    assert not_utf8.status_code == 422 and not_utf8.json()["detail"][0]["type"] == "json_invalid"
    long_name = client.post("/purchases", json={**GOOD, "product_name": "x" * 5000}, headers=customer.headers)
    assert long_name.status_code == 422 and len(long_name.json()["detail"][0]["input"]) <= 201
    too_many = client.post("/purchases/batch", json={"purchases": [GOOD] * 1001}, headers=customer.headers)
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["input"] is None
