"""Generated inputs for the trust boundaries (hypothesis): purchase bodies a client may send, events on the
topic, and arbitrary JSON and bytes. Shared by the API, loader and fuzz tests; the limits come from the
contract, never restated here.

`make fuzz` runs the same tests with many more examples (HYPOTHESIS_PROFILE=fuzz: support.examples).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

from purchases import contract

# Text a product name may hold: any Unicode scalar value but the control characters (surrogates are not
# scalar values). Most examples stay in the printable ranges; some reach into the rarest planes.
_TEXT_CHARACTERS = st.characters(exclude_categories=("Cc", "Cs"))
_DESCRIPTION_CHARACTERS = st.one_of(_TEXT_CHARACTERS, st.sampled_from(contract.DESCRIPTION_LAYOUT_CHARACTERS))


def product_names() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(_TEXT_CHARACTERS, min_size=1, max_size=contract.MAX_PRODUCT_NAME),
        st.text(_TEXT_CHARACTERS, min_size=contract.MAX_PRODUCT_NAME, max_size=contract.MAX_PRODUCT_NAME),
        st.sampled_from(["x", "😀" * contract.MAX_PRODUCT_NAME, "a\\b", "'; drop table x; --", "\\N", "é", "𝔘"]),
    ).filter(lambda name: not name.isspace())


def descriptions() -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.text(_DESCRIPTION_CHARACTERS, max_size=contract.MAX_DESCRIPTION),
        st.sampled_from(["", "\t", "\r\n", "\\", "\\N", "x" * contract.MAX_DESCRIPTION]),
    )


def quantities() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(1, contract.MAX_QUANTITY), st.sampled_from([1, contract.MAX_QUANTITY]))


def unit_prices() -> st.SearchStrategy[Decimal]:
    cents = st.one_of(st.integers(1, int(contract.MAX_UNIT_PRICE * 100)), st.sampled_from([1, 99, 100_000_000]))
    return cents.map(lambda c: Decimal(c).scaleb(-2))


def price_json(price: Decimal) -> st.SearchStrategy:
    """The ways a client may write a price: a string (trailing zeros or not, exponent form) or a number."""
    forms = [str(price), str(price.normalize()), f"{price:f}"]
    if price == price.to_integral_value():
        forms.append(str(int(price)))
    return st.one_of(st.sampled_from(forms), st.just(float(price)).filter(lambda f: Decimal(repr(f)) == price))


def currencies() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["USD", "EUR", "JPY", "GBP"]),
        st.text(st.characters(min_codepoint=ord("A"), max_codepoint=ord("Z")), min_size=3, max_size=3),
    )


def offsets() -> st.SearchStrategy[timezone]:
    """UTC offsets an RFC 3339 time may carry, beyond Postgres' own ±15:59 (Python reads up to ±23:59)."""
    minutes = st.one_of(st.integers(-23 * 60 - 59, 23 * 60 + 59), st.sampled_from([0, 20 * 60, -20 * 60, 14 * 60]))
    return minutes.map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def client_times(draw) -> datetime:
    """Times a client may date a purchase at, seen from the moment of drawing: up to 30 days back (a minute
    of margin for the request's way) to 4 minutes ahead, in any offset."""
    now = contract.utcnow()
    earliest = now - contract.MAX_BACKDATE + timedelta(minutes=1)
    instant = draw(
        st.one_of(
            st.floats(0, 1).map(lambda f: earliest + (now + timedelta(minutes=4) - earliest) * f),
            st.sampled_from([earliest, now, now + timedelta(minutes=4)]),
        )
    )
    return instant.astimezone(draw(offsets()))


def event_times(now: datetime) -> st.SearchStrategy[datetime]:
    """Times an event on the topic may carry: from the contract's earliest day to 4 minutes ahead."""
    span = now + timedelta(minutes=4) - contract.EARLIEST_PURCHASED_AT
    instants = st.one_of(
        st.floats(0, 1).map(lambda f: contract.EARLIEST_PURCHASED_AT + span * f),
        st.just(contract.EARLIEST_PURCHASED_AT),
    )
    return st.tuples(instants, offsets()).map(lambda pair: pair[0].astimezone(pair[1]))


def rfc3339(moment: datetime) -> st.SearchStrategy[str]:
    """The ways to write one instant: 'Z' or an offset, with or without fractions, 'T' or a space."""
    text = moment.isoformat()
    forms = [text]
    if moment.utcoffset() == timedelta(0):
        forms += [text.replace("+00:00", "Z"), text.replace("+00:00", "-00:00")]
    return st.sampled_from(forms)


@st.composite
def purchase_bodies(draw) -> dict:
    """A body of POST /purchases that the contract accepts, written in any of the ways a client may."""
    price = draw(unit_prices())
    body = {
        "product_name": draw(product_names()),
        "quantity": draw(quantities()),
        "unit_price": draw(price_json(price)),
    }
    if draw(st.booleans()):
        body["description"] = draw(descriptions())
    if draw(st.booleans()):
        body["currency"] = draw(currencies())
    if draw(st.booleans()):
        body["purchased_at"] = draw(rfc3339(draw(client_times())))
    return body


@st.composite
def event_documents(draw, now: datetime, customer_ids: st.SearchStrategy | None = None) -> dict:
    """A valid event as a document, in the ways a producer may write one (not only the API's)."""
    price = draw(unit_prices())
    document = {
        "event_id": str(draw(st.uuids())),
        "customer_id": str(draw(st.uuids() if customer_ids is None else customer_ids)),
        "product_name": draw(product_names()),
        "quantity": draw(quantities()),
        "unit_price": draw(price_json(price)),
        "currency": draw(currencies()),
        "purchased_at": draw(rfc3339(draw(event_times(now)))),
    }
    if draw(st.booleans()):
        document["description"] = draw(descriptions())
    if draw(st.booleans()):
        document["schema_version"] = 1
    if draw(st.integers(0, 4)) == 0:
        document[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in document))] = draw(json_values())
    return document


def valid_event_documents(now: datetime, customer_ids: st.SearchStrategy | None = None) -> st.SearchStrategy[bytes]:
    return event_documents(now, customer_ids).map(_dumps)


def json_values() -> st.SearchStrategy:
    """Arbitrary JSON values: odd strings (surrogates, NUL, controls), huge and tiny numbers, nesting."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-(10**400), 10**400),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False),
        st.text(),
        st.text(st.characters(codec=None)),
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )


def _json_text(value) -> str:
    """JSON text of a generated value; Decimals as the exact numbers they are (json.dumps cannot)."""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else "NaN"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{_json_text(v)}" for k, v in value.items()) + "}"
        )
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


def _dumps(value) -> bytes:
    # Lone surrogates become the (invalid UTF-8) bytes a careless producer may send.
    return _json_text(value).encode("utf-8", "surrogatepass")


def json_documents() -> st.SearchStrategy[bytes]:
    """Arbitrary JSON texts, including deep nesting and NaN, as bytes."""
    deep = st.integers(1, 20_000).map(lambda depth: b"[" * depth + b"]" * depth)
    return st.one_of(
        json_values().map(_dumps),
        deep,
        st.sampled_from([b"NaN", b"-Infinity", b"1e999999999", b'"\\ud800"', b'{"a":"\\u0000"}']),
    )


@st.composite
def mutated_events(draw, now: datetime, customer_ids: st.SearchStrategy | None = None) -> bytes:
    """A valid event with one field replaced, removed, or given a string with any character at all."""
    document = draw(event_documents(now, customer_ids))
    field = draw(st.sampled_from(sorted(document) + ["schema_version", "description"]))
    how = draw(st.sampled_from(["value", "remove", "text"]))
    if how == "remove":
        document.pop(field, None)
    elif how == "text":
        document[field] = draw(st.text(st.characters(codec=None), max_size=30))
    else:
        document[field] = draw(json_values())
    return _dumps(document)
