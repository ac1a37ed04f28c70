"""The loader's fast path must give the contract's verdict (purchases.contract.parse_event) on every record."""
from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from purchases.contract import InvalidEvent, parse_event
from purchases.loader import _storable_extra, event_row, row_from_event, validate

NOW = datetime.now(timezone.utc)
BASE = {"event_id": str(uuid.uuid4()), "customer_id": str(uuid.uuid4()), "product_name": "Lamp",
        "quantity": 2, "unit_price": "19.99", "currency": "EUR", "purchased_at": NOW.isoformat()}

FIELD_VARIANTS = {
    "schema_version": [..., 1, 2, 0, True, 1.0, "1", None],
    "quantity": [2, 0, -1, 10_000, 10_001, 2.0, 2.5, "2", True, None, ...],
    "unit_price": ["19.99", 19.99, 19.9, "0.00", 0, "-1", "1.005", 1e2, "1E+2", "1000000", "1000000.01",
                   "NaN", "Infinity", True, None, "12.500", "0.01", "0.1", "00.10", "1.", ".5", "+1", " 1",
                   "1 ", "1_000", "١٢", "9999999", "1000000.00", "0", ...],
    "currency": ["EUR", "eur", "EURO", "", None, 1, "EUR\n", "\nEUR", "ÉUR", ...],
    "purchased_at": [NOW.isoformat(), "2024-01-01T00:00:00", "2024-01-01T00:00:00+02:00",
                     "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.1234567Z", "2024-01-01T00:00:00.5Z",
                     "2024-01-01t00:00:00z", "2024-01-01 00:00:00Z", "2024-01-01T24:00:00Z",
                     "2024-02-30T00:00:00Z", "2024-01-01T23:59:60Z", "2024-01-01T00:00:00+24:00",
                     "2024-01-01T00:00:00-00:00", "2024-01-01T00:00:00+0530", "2024-01-01T00:00:00+05:30",
                     "2024-01-01T00:00Z", "2024-01-01", "2024-01-01T00:00:00Z\n",
                     (NOW + timedelta(minutes=4)).isoformat(), (NOW + timedelta(minutes=6)).isoformat(),
                     "yesterday", 1700000000, None, ...],
    "event_id": [BASE["event_id"], BASE["event_id"].upper(), BASE["event_id"].replace("-", ""),
                 "{" + BASE["event_id"] + "}", "urn:uuid:" + BASE["event_id"], BASE["event_id"] + "\n",
                 "not-a-uuid", 5, None, ...],
    "product_name": ["Lamp", "", "x" * 200, "x" * 201, "é" * 200, "😀" * 200, "😀" * 201, " ", "a\tb\\c\nd",
                     "nul\u0000", None, 3, ...],
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
    yield "invalid UTF-8 in a name", json.dumps(BASE).encode().replace(b"Lamp", b"L\xe9mp")
    yield "invalid UTF-8 at the end of a name", json.dumps(BASE).encode().replace(b"Lamp", b"Lamp\xe9")
    yield "invalid UTF-8 in a key", json.dumps(BASE).encode().replace(b"currency", b"curr\xffency")
    yield "overlong UTF-8", json.dumps(BASE).encode().replace(b"Lamp", b"L\xc0\xafmp")
    yield "empty", b""
    yield "none", None


def verdict(function, raw):
    try:
        event = function(raw, NOW)
    except InvalidEvent as exc:
        return "rejected", exc.reason
    return "accepted", event.model_dump()


def copy_value(text: str):
    """Postgres' reading of one COPY text field."""
    if text == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)


def comparable(row):
    """The values Postgres will read from a row's COPY line (and the ids and offset kept beside it)."""
    from decimal import Decimal

    event_id, customer_id, offset, line = row
    assert line.endswith("\n") and line.count("\n") == 1
    values = [copy_value(field) for field in line[:-1].split("\t")]
    assert len(values) == 13, values
    assert (values[0], values[1], int(values[12])) == (event_id, customer_id, offset)
    values[0], values[1] = uuid.UUID(values[0]), uuid.UUID(values[1])
    values[4], values[8], values[11], values[12] = (int(values[i]) for i in (4, 8, 11, 12))
    values[5] = Decimal(values[5])
    values[7] = datetime.fromisoformat(values[7])
    values[9] = json.loads(values[9])
    return values


def row_verdict(function, raw):
    try:
        return "accepted", comparable(function(raw))
    except InvalidEvent as exc:
        return "rejected", exc.reason


def reference_row(raw):
    event = parse_event(raw, NOW)
    return row_from_event(event, _storable_extra(event), "t", 0, 7)


@pytest.mark.parametrize("name,raw", list(documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_path_gives_the_contracts_verdict(name, raw):
    assert verdict(validate, raw) == verdict(parse_event, raw)
    assert row_verdict(lambda r: event_row(r, NOW, "t", 0, 7), raw) == row_verdict(reference_row, raw)


def test_well_formed_events_take_the_fast_path(monkeypatch):
    import purchases.loader as loader

    def fail(*_args, **_kwargs):
        raise AssertionError("parse_event was called for a well-formed event")

    monkeypatch.setattr(loader, "parse_event", fail)
    monkeypatch.setattr(loader, "validate", fail)
    for price in ("19.99", "5", "0.10"):
        row = event_row(json.dumps({**BASE, "unit_price": price, "schema_version": 1}).encode(), NOW, "t", 0, 1)
        assert f"\t{price}\t" in row[3]
    monkeypatch.undo()
    monkeypatch.setattr(loader, "parse_event", fail)
    for price in ("19.99", 19.99, "5"):
        event = validate(json.dumps({**BASE, "unit_price": price, "schema_version": 1}).encode(), NOW)
        assert str(event.unit_price) == str(price)


def test_events_as_the_api_writes_them_take_the_fast_path():
    """The API produces PurchaseEvent.to_bytes(): those must never need the slow path."""
    from decimal import Decimal

    from purchases.contract import PurchaseEvent, new_time_ordered_id
    from purchases.loader import _fast_row

    for description, price, when in ((None, Decimal("12.50"), NOW), ("d\tx", Decimal("0.1"), NOW),
                                     ("ü ✓", Decimal("999999.99"), NOW.astimezone(timezone(timedelta(hours=5, minutes=30))))):
        event = PurchaseEvent.model_construct(
            schema_version=1, event_id=new_time_ordered_id(), customer_id=uuid.uuid4(), product_name="Tea",
            description=description, quantity=3, unit_price=price, currency="USD", purchased_at=when)
        row = _fast_row(event.to_bytes(), NOW, "\tt\t0\t", 1)
        assert row is not None, event.to_bytes()
        assert row_verdict(lambda r: event_row(r, NOW, "t", 0, 7), event.to_bytes()) == \
            row_verdict(reference_row, event.to_bytes())
