"""Pure logic of the API: the login limiter, the token codec, a batch's events (no server needed)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import purchase_bodies
from support import examples

from ingest_api.accept.batch_events import batch_event_bytes, batch_event_ids, time_ordered_ids
from ingest_api.core.security import InvalidToken, TokenCodec, hash_password, verify_password
from purchases.contract import PurchaseRequest, batch_event_id_for, build_event, parse_event


def test_tokens_name_their_customer_and_expire():
    codec = TokenCodec("s" * 32, ttl_seconds=3600)
    customer = uuid.uuid4()
    token = codec.issue(customer)
    assert codec.customer_of(token) == customer
    assert codec.customer_of(token) == customer  # remembered, still checked
    with pytest.raises(InvalidToken):
        TokenCodec("t" * 32, ttl_seconds=3600).customer_of(token)
    expired = jwt.encode({"sub": str(customer), "iat": 0, "exp": int(time.time()) - 1}, "s" * 32, algorithm="HS256")
    with pytest.raises(InvalidToken, match="expired"):
        codec.customer_of(expired)
    with pytest.raises(InvalidToken):
        codec.customer_of(jwt.encode({"sub": "not-a-uuid", "iat": 0, "exp": int(time.time()) + 60}, "s" * 32))


def test_a_remembered_token_still_expires(monkeypatch):
    codec = TokenCodec("s" * 32, ttl_seconds=60)
    token = codec.issue(uuid.uuid4())
    codec.customer_of(token)
    later = time.time() + 61
    monkeypatch.setattr("ingest_api.core.security.time.time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        codec.customer_of(token)


def test_an_empty_secret_is_refused():
    with pytest.raises(RuntimeError, match="JWT_SECRET"):
        TokenCodec("", ttl_seconds=60)


def test_passwords_are_argon2id_hashes():
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
    assert not verify_password(None, "not-a-real-password")  # unknown user: still one (dummy) verification
    assert not verify_password("garbage", "x")


# A batch's events are built in bulk; they must be exactly what the contract's build_event writes.

purchase_requests = purchase_bodies().map(PurchaseRequest.model_validate)


@settings(max_examples=examples(200), deadline=None, database=None)
@given(purchases=st.lists(purchase_requests, min_size=1, max_size=5), key=st.none() | st.text(min_size=1, max_size=20))
def test_batch_events_are_byte_for_byte_what_build_event_writes(purchases, key):
    customer, now = uuid.uuid4(), datetime.now(UTC)
    ids = batch_event_ids(customer, len(purchases), key)
    values = batch_event_bytes(customer, purchases, ids, now)
    for purchase, event_id, value in zip(purchases, ids, values, strict=True):
        expected = build_event(customer, purchase, now=now).model_copy(update={"event_id": uuid.UUID(event_id)})
        assert value == expected.to_bytes()
        assert str(parse_event(value, now=now + timedelta(days=36500)).event_id) == event_id
    if key is not None:
        assert ids == [str(batch_event_id_for(customer, key, i)) for i in range(len(purchases))]


def test_bulk_ids_are_uuid7_in_order_and_distinct():
    raw = time_ordered_ids(1000)
    ids = [uuid.UUID(i) for i in raw]
    assert [str(i) for i in ids] == raw  # canonical form
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 1000
    now_ms = time.time_ns() // 1_000_000
    assert abs((ids[0].int >> 80) - now_ms) < 5_000
    later = uuid.UUID(time_ordered_ids(1)[0])
    assert later.int >> 80 >= ids[-1].int >> 80
    with pytest.raises(ValueError):
        time_ordered_ids(5000)
