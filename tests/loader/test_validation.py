"""The loader's fast path must give the contract's verdict (purchases.contract.parse_event) on every record."""
from __future__ import annotations

import itertools
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from purchases.contract import InvalidEvent, parse_event
from purchases.loader import validate

NOW = datetime.now(timezone.utc)
BASE = {"event_id": str(uuid.uuid4()), "customer_id": str(uuid.uuid4()), "product_name": "Lamp",
        "quantity": 2, "unit_price": "19.99", "currency": "EUR", "purchased_at": NOW.isoformat()}

FIELD_VARIANTS = {
    "schema_version": [..., 1, 2, 0, True, 1.0, "1", None],
    "quantity": [2, 0, -1, 10_000, 10_001, 2.0, 2.5, "2", True, None, ...],
    "unit_price": ["19.99", 19.99, 19.9, "0.00", 0, "-1", "1.005", 1e2, "1E+2", "1000000", "1000000.01",
                   "NaN", "Infinity", True, None, "12.500", ...],
    "currency": ["EUR", "eur", "EURO", "", None, 1, ...],
    "purchased_at": [NOW.isoformat(), "2024-01-01T00:00:00", "2024-01-01T00:00:00+02:00",
                     (NOW + timedelta(minutes=4)).isoformat(), (NOW + timedelta(minutes=6)).isoformat(),
                     "yesterday", 1700000000, None, ...],
    "event_id": [BASE["event_id"], "not-a-uuid", 5, None, ...],
    "product_name": ["Lamp", "", "x" * 200, "x" * 201, None, 3, ...],
    "description": [..., None, "d" * 2000, "d" * 2001, 5],
    "extra": [..., "coupon", {"nested": [1, 2.5]}],
}


def documents():
    for field, values in FIELD_VARIANTS.items():
        for value in values:
            document = dict(BASE)
            if value is ...:
                document.pop(field, None)
            else:
                document[field] = value
            yield f"{field}={value!r}"[:60], json.dumps(document).encode()
    for a, b in itertools.combinations([("quantity", 0), ("unit_price", "-1"), ("currency", "x")], 2):
        yield f"{a}+{b}", json.dumps({**BASE, a[0]: a[1], b[0]: b[1]}).encode()
    yield "duplicate key", json.dumps(BASE)[:-1].encode() + b', "quantity": 0}'
    yield "bom", b"\xef\xbb\xbf" + json.dumps(BASE).encode()
    yield "trailing garbage", json.dumps(BASE).encode() + b" x"
    yield "nested json string", json.dumps(json.dumps(BASE)).encode()
    yield "empty", b""
    yield "none", None


def verdict(function, raw):
    try:
        event = function(raw, NOW)
    except InvalidEvent as exc:
        return "rejected", exc.reason
    return "accepted", event.model_dump()


@pytest.mark.parametrize("name,raw", list(documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_path_gives_the_contracts_verdict(name, raw):
    assert verdict(validate, raw) == verdict(parse_event, raw)


def test_well_formed_events_take_the_fast_path(monkeypatch):
    import purchases.loader as loader

    def fail(*_args, **_kwargs):
        raise AssertionError("parse_event was called for a well-formed event")

    monkeypatch.setattr(loader, "parse_event", fail)
    for price in ("19.99", 19.99, "5"):
        event = validate(json.dumps({**BASE, "unit_price": price, "schema_version": 1}).encode(), NOW)
        assert str(event.unit_price) == str(price)
