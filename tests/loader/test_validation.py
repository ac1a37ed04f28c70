"""Records -> rows: the loader's fast path gives the contract's verdict (purchases.contract.parse_event), with the
same row, on every record, and nothing a record holds makes the sorting raise. Pure logic: no broker, no
Postgres (tests/loader/test_poison.py and test_fuzz.py send such records through the real parts)."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import json_documents, mutated_events, valid_event_documents
from support import examples

from purchases import contract
from purchases.contract import InvalidEvent, parse_event
from purchases.load import records
from purchases.load.records import STAGING_COLUMNS, LineTail, event_row, row_from_event, sort_records

NOW = datetime.now(UTC)
TAIL = LineTail("t", 0, 42)
BASE = {
    "event_id": str(uuid.uuid4()),
    "customer_id": str(uuid.uuid4()),
    "product_name": "Lamp",
    "quantity": 2,
    "unit_price": "19.99",
    "currency": "EUR",
    "purchased_at": NOW.isoformat(),
}

FIELD_VARIANTS = {
    "schema_version": [..., 1, 2, 0, True, 1.0, "1", None],
    "quantity": [2, 0, -1, 10_000, 10_001, 2.0, 2.5, "2", True, None, ...],
    "unit_price": [
        "19.99",
        19.99,
        19.9,
        "0.00",
        0,
        "-1",
        "1.005",
        1e2,
        "1E+2",
        "1000000",
        "1000000.01",
        "NaN",
        "Infinity",
        True,
        None,
        "12.500",
        "0.01",
        "0.1",
        "00.10",
        "1.",
        ".5",
        "+1",
        " 1",
        "1 ",
        "1_000",
        "١٢",
        "9999999",
        "1000000.00",
        "0",
        "1e-999999",
        "1e999999",
        ...,
    ],
    "currency": ["EUR", "eur", "EURO", "", None, 1, "EUR\n", "\nEUR", "ÉUR", ...],
    "purchased_at": [
        NOW.isoformat(),
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00+02:00",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.1234567Z",
        "2024-01-01T00:00:00.5Z",
        "2024-01-01t00:00:00z",
        "2024-01-01 00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T23:59:60Z",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00-00:00",
        "2024-01-01T00:00:00+0530",
        "2024-01-01T00:00:00+05:30",
        "2026-01-01T00:00:00+20:00",
        "2026-01-01T00:00:00-23:59",
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2024-01-01T00:00Z",
        "2024-01-01",
        "2024-01-01T00:00:00Z\n",
        (NOW + timedelta(minutes=4)).isoformat(),
        (NOW + timedelta(minutes=6)).isoformat(),
        "yesterday",
        1700000000,
        None,
        ...,
    ],
    "event_id": [
        BASE["event_id"],
        BASE["event_id"].upper(),
        BASE["event_id"].replace("-", ""),
        "{" + BASE["event_id"] + "}",
        "urn:uuid:" + BASE["event_id"],
        BASE["event_id"] + "\n",
        "not-a-uuid",
        5,
        None,
        ...,
    ],
    "product_name": [
        "Lamp",
        "",
        "x" * 200,
        "x" * 201,
        "é" * 200,
        "😀" * 200,
        "😀" * 201,
        " ",
        "\u3000",
        "a\tb",
        "a\\c",
        "line\nbreak",
        "nul\u0000",
        "bell\u0007",
        "del\u007f",
        "c1\u0085",
        "lone \ud800 surrogate",
        "zero\u200bwidth",
        None,
        3,
        ...,
    ],
    "description": [
        ...,
        None,
        "d" * 2000,
        "d" * 2001,
        5,
        "tab\tand\nlines\r\n",
        "nul\u0000",
        "esc\u001b",
        "lone \udfff",
    ],
    "extra": [..., "coupon", {"nested": [1, 2.5]}, "nul\u0000", {"k\u0000": 1}, "\ud83d", 1e308],
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
    yield "NaN extra", json.dumps(BASE)[:-1].encode() + b', "score": NaN}'
    yield "huge exponent extra", json.dumps(BASE)[:-1].encode() + b', "score": 1e999999999}'
    yield "5000-digit integer extra", json.dumps(BASE)[:-1].encode() + b', "n": ' + b"9" * 5000 + b"}"
    yield "deeply nested extra", json.dumps(BASE)[:-1].encode() + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    yield "deeply nested document", b"[" * 100_000 + b"]" * 100_000
    yield "empty", b""
    yield "none", None


def verdict(raw):
    try:
        event = parse_event(raw, NOW)
    except InvalidEvent as exc:
        return "rejected", exc.reason
    return "accepted", event.model_dump()


def copy_value(text: str):
    """Postgres' reading of one COPY text field."""
    if text == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)


def comparable(row: records.StagingRow):
    """The values Postgres will read from a row's COPY line (and the ids and offset kept beside it)."""
    assert row.line.endswith("\n") and row.line.count("\n") == 1
    values = dict(zip(STAGING_COLUMNS, (copy_value(field) for field in row.line[:-1].split("\t")), strict=True))
    assert (values["event_id"], values["customer_id"], int(values["kafka_offset"])) == (
        row.event_id,
        row.customer_id,
        row.offset,
    )
    return {
        **values,
        "event_id": uuid.UUID(values["event_id"]),
        "customer_id": uuid.UUID(values["customer_id"]),
        "quantity": int(values["quantity"]),
        "unit_price": Decimal(values["unit_price"]),
        "purchased_at": datetime.fromisoformat(values["purchased_at"]),
        "extra": json.loads(values["extra"]),
    }


def row_verdict(function, raw):
    try:
        return "accepted", comparable(function(raw))
    except InvalidEvent as exc:
        return "rejected", exc.reason


def reference_row(raw):
    return row_from_event(parse_event(raw, NOW), TAIL, 7)


def fast_or_full(raw):
    return event_row(raw, NOW, TAIL, 7)


def assert_same_verdict_and_row(raw):
    assert row_verdict(fast_or_full, raw) == row_verdict(reference_row, raw)
    accepted = row_verdict(reference_row, raw)
    if accepted[0] == "accepted":
        assert_storable(accepted[1])


def assert_storable(values: dict) -> None:
    """What the contract accepted is what Postgres' columns can hold, in UTC and with 2 decimal places."""
    assert values["purchased_at"].utcoffset() == timedelta(0)
    assert contract.EARLIEST_PURCHASED_AT <= values["purchased_at"] <= NOW + contract.FUTURE_TOLERANCE
    assert values["unit_price"].as_tuple().exponent == -2
    for column in ("product_name", "description", "extra"):
        text = json.dumps(values[column], ensure_ascii=False)
        assert "\x00" not in (values[column] or "") and "\\u0000" not in text
        text.encode("utf-8")  # no lone surrogate


@pytest.mark.parametrize("name,raw", list(documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_path_gives_the_contracts_verdict_on_edge_cases(name, raw):
    assert_same_verdict_and_row(raw)


@settings(max_examples=examples(400), deadline=None)
@given(st.one_of(valid_event_documents(NOW), mutated_events(NOW)))
@example(json.dumps({**BASE, "purchased_at": "2026-01-01T00:00:00+20:00"}).encode())
def test_fast_path_gives_the_contracts_verdict_on_generated_events(raw):
    assert_same_verdict_and_row(raw)


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.binary(max_size=300), json_documents()))
def test_no_record_makes_sorting_raise(raw):
    class Record:
        def value(self):
            return raw

        def key(self):
            return None

        def offset(self):
            return 3

    sorted_records = sort_records([Record()], NOW, TAIL)
    [outcome] = [*sorted_records.rows, *sorted_records.rejections]
    if isinstance(outcome, records.Rejection):
        assert outcome.reason and "\x00" not in outcome.reason
        outcome.reason.encode("utf-8")
        assert outcome.value == raw


def test_events_as_the_api_writes_them_take_the_fast_path():
    """The API produces PurchaseEvent.to_bytes() of validated requests: those never need the slow path."""
    for description, price, when in (
        (None, "12.50", NOW),
        ("d\tx", "0.1", NOW),
        ("ü ✓", "999999.99", NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))),
    ):
        request = contract.PurchaseRequest.model_validate(
            {
                "product_name": "Tea",
                "description": description,
                "quantity": 3,
                "unit_price": price,
                "purchased_at": when.isoformat(),
            }
        )
        event = contract.build_event(uuid.uuid4(), request)
        assert records._fast_row(event.to_bytes(), NOW, TAIL, 1) is not None, event.to_bytes()
        assert_same_verdict_and_row(event.to_bytes())


def test_times_are_stored_in_utc_and_prices_with_two_places():
    raw = json.dumps({**BASE, "purchased_at": "2026-01-01T00:00:00+20:00", "unit_price": "12.5"}).encode()
    values = comparable(fast_or_full(raw))
    assert values["purchased_at"] == datetime(2025, 12, 31, 4, tzinfo=UTC)
    assert values["purchased_at"].utcoffset() == timedelta(0)
    assert str(values["unit_price"]) == "12.50"


@pytest.mark.parametrize(
    "purchased_at, accepted",
    [("1999-12-31T23:59:59Z", False), ("2000-01-01T00:00:00Z", True), ("0001-01-01T00:00:00Z", False)],
)
def test_events_are_dated_from_the_contracts_earliest_day(purchased_at, accepted):
    raw = json.dumps({**BASE, "purchased_at": purchased_at}).encode()
    assert verdict(raw)[0] == ("accepted" if accepted else "rejected")


def test_a_client_may_date_a_purchase_back_30_days_and_5_minutes_ahead():
    def client(when: datetime):
        return contract.PurchaseRequest.model_validate(
            {"product_name": "Tea", "quantity": 1, "unit_price": "1", "purchased_at": when.isoformat()},
            context={"now": NOW},
        )

    assert client(NOW - contract.MAX_BACKDATE + timedelta(seconds=1)).purchased_at.tzinfo == UTC
    assert client(NOW + timedelta(minutes=4)).purchased_at
    for too_far in (NOW - contract.MAX_BACKDATE - timedelta(seconds=1), NOW + timedelta(minutes=6)):
        with pytest.raises(ValueError, match="purchased_at"):
            client(too_far)


def test_what_the_api_accepted_is_loadable_however_late():
    """A purchase dated 30 days back is still an event the loader accepts a year later."""
    request = contract.PurchaseRequest.model_validate(
        {
            "product_name": "Tea",
            "quantity": 1,
            "unit_price": "1",
            "purchased_at": (NOW - timedelta(days=29)).isoformat(),
        },
        context={"now": NOW},
    )
    event = contract.build_event(uuid.uuid4(), request)
    parse_event(event.to_bytes(), NOW + timedelta(days=365))


def test_a_record_that_breaks_the_validator_itself_is_rejected_not_raised(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug nobody foresaw")

    monkeypatch.setattr(records.contract, "parse_event", broken)

    class Record:
        def value(self):
            return b"{}"

        def key(self):
            return b"k"

        def offset(self):
            return 9

    sorted_records = sort_records([Record()], NOW, TAIL)
    assert sorted_records.rows == []
    assert sorted_records.rejections[0].reason == "could not be read: RuntimeError: a bug nobody foresaw"


def test_rejection_reasons_are_storable_whatever_they_quote():
    reason = records.storable_reason("bad \x00 and \ud800 " + "x" * 5000)
    assert "\x00" not in reason and len(reason) == records.MAX_REASON
    reason.encode("utf-8")
