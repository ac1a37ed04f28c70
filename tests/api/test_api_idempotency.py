"""Idempotency-Key: a retry with the same body is the same purchase (202, the same event id); the same key with
another body is refused (409) by the worker that remembers the key, and rejected by the loader where the API
could not know (another worker). Batches have ids of their own, never a single purchase's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from api_support import Api, free_port, read_topic
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import purchase_bodies
from support import examples

from ingest_api.accept import idempotency
from ingest_api.accept.batch_events import batch_event_bytes, batch_event_ids, batch_fingerprints
from purchases.contract import (
    PurchaseRequest,
    batch_event_id_for,
    build_event,
    event_id_for,
    parse_event,
    request_fingerprint,
)
from purchases.load import records

GOOD = {"product_name": "Coffee beans", "description": "1 kg", "quantity": 1, "unit_price": "12.35", "currency": "EUR"}
NOW = datetime.now(UTC)
YESTERDAY = (NOW - timedelta(days=1)).replace(microsecond=0)


def fingerprint(**body) -> str:
    return request_fingerprint(PurchaseRequest.model_validate(body))


# The fingerprint: of the request as the contract normalised it ------------------------------------------


@pytest.mark.parametrize(
    "first, second",
    [
        ({"unit_price": "12.5"}, {"unit_price": 12.50}),
        ({"unit_price": "12.5"}, {"unit_price": "12.50"}),
        ({"quantity": 2}, {"quantity": 2.0}),
        ({}, {"currency": "USD"}),  # the default, given or not
        ({}, {"description": None}),
        (
            {"purchased_at": YESTERDAY.astimezone(timezone(timedelta(hours=2))).isoformat()},
            {"purchased_at": YESTERDAY.strftime("%Y-%m-%dT%H:%M:%S.000Z")},
        ),
        ({}, {}),  # no purchased_at means "now": the same body, though each event gets its own time
    ],
)
def test_equal_bodies_have_one_fingerprint(first, second):
    base = {"product_name": "Tea", "quantity": 1, "unit_price": "3.20"}
    assert fingerprint(**{**base, **first}) == fingerprint(**{**base, **second})


@pytest.mark.parametrize(
    "change",
    [
        {"quantity": 50},
        {"unit_price": "3.21"},
        {"currency": "EUR"},
        {"product_name": "Tea "},
        {"description": ""},
        {"purchased_at": (NOW - timedelta(hours=1)).isoformat()},  # a time given, where there was none
    ],
)
def test_other_bodies_have_other_fingerprints(change):
    base = {"product_name": "Tea", "quantity": 1, "unit_price": "3.20"}
    assert fingerprint(**base) != fingerprint(**{**base, **change})


def test_single_purchase_ids_are_unchanged_and_batch_ids_have_a_namespace_of_their_own():
    customer = uuid.UUID("01a20a8c-6271-7354-83f7-080c0634cd04")
    # What release 1 gave: clients retry across the upgrade with the same key.
    assert str(event_id_for(customer, "order-4711")) == "a923c55c-8317-5151-9f03-4aa61e7ae815"
    batch = batch_event_ids(customer, 3, "K")
    assert batch == [str(batch_event_id_for(customer, "K", i)) for i in range(3)]
    assert not set(batch) & {str(event_id_for(customer, key)) for key in ("K", "K#0", "K#1", "K#2")}


purchase_requests = purchase_bodies().map(PurchaseRequest.model_validate)


@settings(max_examples=examples(100), deadline=None, database=None)
@given(purchases=st.lists(purchase_requests, min_size=1, max_size=5), key=st.text(min_size=1, max_size=20))
def test_keyed_batch_events_are_byte_for_byte_what_build_event_writes(purchases, key):
    """With a key each event carries its purchase's fingerprint; still exactly build_event's bytes, and still
    the loader's fast path, with the same row as the full path."""
    customer, now = uuid.uuid4(), datetime.now(UTC)
    ids = batch_event_ids(customer, len(purchases), key)
    fingerprints, _ = batch_fingerprints(purchases)
    values = batch_event_bytes(customer, purchases, ids, now, fingerprints)
    tail = records.LineTail("purchases", 0, 1)
    for purchase, event_id, value in zip(purchases, ids, values, strict=True):
        expected = build_event(customer, purchase, key, now=now).model_copy(update={"event_id": uuid.UUID(event_id)})
        assert value == expected.to_bytes()
        later = now + timedelta(days=36500)
        event = parse_event(value, now=later)
        assert event.model_extra == {"request_fingerprint": request_fingerprint(purchase)}
        fast = records._fast_row(value, later, tail, 5)
        assert fast is not None and fast == records.row_from_event(event, tail, 5)
        assert fast.fingerprint == request_fingerprint(purchase)


def test_a_batch_fingerprint_covers_every_purchase_and_their_order():
    tea, mug = (PurchaseRequest.model_validate({"product_name": n, "quantity": 1, "unit_price": "1"}) for n in "TM")
    wholes = {batch_fingerprints(batch)[1] for batch in ([tea], [tea, mug], [mug, tea], [tea, mug, mug])}
    assert len(wholes) == 4
    assert batch_fingerprints([tea, mug])[1] == batch_fingerprints([tea.model_copy(), mug.model_copy()])[1]


def test_the_cache_is_bounded_and_forgets_after_its_time(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(idempotency.time, "monotonic", lambda: clock[0])
    cache = idempotency.IdempotencyCache(size=3, seconds=60)
    assert cache.claim("a", "1") == "1"
    assert cache.claim("a", "2") == "1"  # taken: the conflicting one is told
    for key in "bcd":
        cache.claim(key, "x")
    assert len(cache) == 3 and cache.claim("a", "2") == "2"  # "a" was the oldest and is forgotten
    clock[0] += 61
    assert cache.claim("b", "y") == "y"  # expired: the key is free again
    assert len(cache) <= 3


# Against the real API ---------------------------------------------------------------------------------


def keyed(customer, key: str) -> dict:
    return {**customer.headers, "Idempotency-Key": key}


def on_topic(api, event_id: str) -> list:
    return [
        event
        for m in read_topic(api.bootstrap)
        for event in [parse_event(m.value())]
        if str(event.event_id) == event_id
    ]


def test_a_key_reused_with_another_body_is_refused_and_a_retry_still_accepted(api, client, customer):
    key = f"order-{uuid.uuid4()}"
    first = client.post("/purchases", json=GOOD, headers=keyed(customer, key))
    reused = client.post("/purchases", json={**GOOD, "quantity": 50}, headers=keyed(customer, key))
    retry = client.post("/purchases", json={**GOOD, "unit_price": 12.35}, headers=keyed(customer, key))
    assert first.status_code == 202 and retry.status_code == 202, (first.text, retry.text)
    assert retry.json()["event_id"] == first.json()["event_id"]
    assert reused.status_code == 409, reused.text
    detail = reused.json()["detail"]
    assert "Idempotency conflict" in detail and key in detail and "different body" in detail
    # Nothing of the refused purchase was produced; the retry is the same event again.
    events = on_topic(api, first.json()["event_id"])
    assert [event.quantity for event in events] == [1, 1]
    assert len({event.model_extra["request_fingerprint"] for event in events}) == 1


def test_keyed_purchases_without_a_time_are_the_same_body(client, customer):
    key = f"now-{uuid.uuid4()}"
    first = client.post("/purchases", json=GOOD, headers=keyed(customer, key))
    again = client.post("/purchases", json=GOOD, headers=keyed(customer, key))
    dated = {**GOOD, "purchased_at": datetime.now(UTC).isoformat()}
    assert first.status_code == again.status_code == 202
    assert client.post("/purchases", json=dated, headers=keyed(customer, key)).status_code == 409


def test_the_same_key_from_another_customer_is_another_purchase(client, customer, other_customer):
    key = f"shared-{uuid.uuid4()}"
    mine = client.post("/purchases", json=GOOD, headers=keyed(customer, key))
    theirs = client.post("/purchases", json={**GOOD, "quantity": 5}, headers=keyed(other_customer, key))
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["event_id"] != theirs.json()["event_id"]


def test_batches_are_refused_whole_and_never_collide_with_single_purchases(client, customer):
    key = f"batch-{uuid.uuid4()}"
    purchases = [GOOD, {**GOOD, "quantity": 2}]
    first = client.post("/purchases/batch", json={"purchases": purchases}, headers=keyed(customer, key))
    retry = client.post("/purchases/batch", json={"purchases": purchases}, headers=keyed(customer, key))
    assert first.status_code == retry.status_code == 202
    assert first.json()["event_ids"] == retry.json()["event_ids"]
    for changed in ([GOOD, {**GOOD, "quantity": 3}], purchases[:1], [*purchases, GOOD], purchases[::-1]):
        refused = client.post("/purchases/batch", json={"purchases": changed}, headers=keyed(customer, key))
        assert refused.status_code == 409, refused.text
        assert "batch" in refused.json()["detail"]
    # A single purchase with the key the batch's first purchase used to get, or with the batch's own key:
    # other purchases, other ids.
    singles = [client.post("/purchases", json=GOOD, headers=keyed(customer, k)) for k in (f"{key}#0", key)]
    assert all(single.status_code == 202 for single in singles), [s.text for s in singles]
    assert not {single.json()["event_id"] for single in singles} & set(first.json()["event_ids"])


@pytest.fixture(scope="module")
def another_worker(api):
    """A second API process on the same topic and database: a worker that does not know the first's keys."""
    server = Api(free_port(), dict(api.env), api.bootstrap)
    server.start()
    yield server
    server.stop()


def test_where_the_api_cannot_know_the_loader_rejects_the_conflict(client, another_worker, customer, stage, api_dsn):
    import httpx

    key = f"two-workers-{uuid.uuid4()}"
    first = client.post("/purchases", json=GOOD, headers=keyed(customer, key))
    with httpx.Client(base_url=another_worker.url, timeout=30) as other:
        reused = other.post("/purchases", json={**GOOD, "quantity": 50}, headers=keyed(customer, key))
        # That worker now holds the key for its body: the first body is a conflict there.
        assert other.post("/purchases", json=GOOD, headers=keyed(customer, key)).status_code == 409
    retried = client.post("/purchases", json=GOOD, headers=keyed(customer, key))
    assert first.status_code == reused.status_code == retried.status_code == 202
    event_id = first.json()["event_id"]
    assert reused.json()["event_id"] == retried.json()["event_id"] == event_id
    stage()
    with psycopg.connect(api_dsn) as conn:
        recorded = conn.execute("select quantity from staging.purchase_events where event_id = %s", (event_id,))
        assert recorded.fetchall() == [(1,)]
        rejected = conn.execute(
            "select reason from staging.purchase_events_rejected where event_id = %s", (event_id,)
        ).fetchall()
    assert len(rejected) == 1 and rejected[0][0].startswith("idempotency conflict: ")  # the retry is no conflict
    answer = client.get(f"/purchases/{event_id}", headers=customer.headers)
    assert answer.status_code == 200 and answer.json()["status"] == "recorded" and answer.json()["quantity"] == 1
