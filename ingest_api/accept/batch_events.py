"""A batch's events, built fast: byte for byte what the contract's `build_event(...).to_bytes()` writes.

Building a PurchaseEvent instance with `build_event` and serializing it costs ~15-40 µs per purchase
(`model_construct`, a UUIDv7 from `uuid6` parsed back from its string); for a 1000-purchase batch that is
most of the request. Here the same fields go straight through pydantic-core's serializer for the event's
own field types, and UUIDv7 ids are made in bulk. tests/api/test_api_units.py holds the output equal to
`build_event(...).to_bytes()` (and tests/api/test_api_idempotency.py with a key, when each event carries its
request fingerprint); single purchases use `build_event` itself.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from datetime import datetime

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from purchases.contract import (
    REQUEST_FINGERPRINT,
    REQUEST_FINGERPRINT_VERSION,
    SCHEMA_VERSION,
    PurchaseEvent,
    PurchaseRequest,
    batch_event_id_for,
    request_fingerprint,
)

# The event's fields, in the model's order and with its types, except that ids are given as their canonical
# strings (what a UUID serializes to anyway): the same JSON as model_dump_json.
_EventFields = TypedDict(
    "_EventFields",
    {
        name: str if field.annotation is uuid.UUID else field.annotation
        for name, field in PurchaseEvent.model_fields.items()
    },
)
_to_json = TypeAdapter(_EventFields).serializer.to_json
# The same with the request fingerprint a keyed purchase's event carries: an extra field, written last.
_KeyedEventFields = TypedDict("_KeyedEventFields", {**_EventFields.__annotations__, REQUEST_FINGERPRINT: str})
_keyed_to_json = TypeAdapter(_KeyedEventFields).serializer.to_json

MAX_BATCH = 4096  # the 12-bit sequence number in each id


def _canonical(value: int) -> str:
    hex_digits = f"{value:032x}"
    return f"{hex_digits[:8]}-{hex_digits[8:12]}-{hex_digits[12:16]}-{hex_digits[16:20]}-{hex_digits[20:]}"


def time_ordered_ids(count: int) -> list[str]:
    """`count` UUIDv7 ids (RFC 9562), as canonical strings, in increasing order: one millisecond timestamp, a
    sequence number in the 12 `rand_a` bits (so a batch lists in the order sent), 62 random bits each, from
    one os.urandom call."""
    if count > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} ids at once")
    prefix = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | 0x2 << 62
    random = os.urandom(8 * count)
    return [
        _canonical(prefix | sequence << 64 | int.from_bytes(random[8 * sequence : 8 * sequence + 8], "big") >> 2)
        for sequence in range(count)
    ]


def batch_event_ids(customer_id: uuid.UUID, count: int, idempotency_key: str | None) -> list[str]:
    """With a key, purchase i gets the contract's batch event id for (key, i); without one, fresh UUIDv7s."""
    if idempotency_key is None:
        return time_ordered_ids(count)
    return [str(batch_event_id_for(customer_id, idempotency_key, i)) for i in range(count)]


def batch_fingerprints(purchases: Sequence[PurchaseRequest]) -> tuple[list[str], str]:
    """Each purchase's request fingerprint (what its event carries), and the whole batch's: a hash of them all
    in order, so that a batch retried with any purchase changed, added or left out is another body."""
    fingerprints = [request_fingerprint(purchase) for purchase in purchases]
    digest = hashlib.blake2b(",".join(fingerprints).encode(), digest_size=16).hexdigest()
    return fingerprints, f"{REQUEST_FINGERPRINT_VERSION}:{digest}"


def batch_event_bytes(
    customer_id: uuid.UUID,
    purchases: Sequence[PurchaseRequest],
    event_ids: Sequence[str],
    now: datetime,
    fingerprints: Sequence[str] | None = None,
) -> list[bytes]:
    """The events' bytes; with `fingerprints` (a keyed batch), each event carries its purchase's."""
    customer = str(customer_id)
    events = [
        {
            "schema_version": SCHEMA_VERSION,
            "event_id": event_id,
            "customer_id": customer,
            "product_name": purchase.product_name,
            "description": purchase.description,
            "quantity": purchase.quantity,
            "unit_price": purchase.unit_price,
            "currency": purchase.currency,
            "purchased_at": purchase.purchased_at or now,
        }
        for purchase, event_id in zip(purchases, event_ids, strict=True)
    ]
    if fingerprints is None:
        return [_to_json(event) for event in events]
    values = []
    for event, fingerprint in zip(events, fingerprints, strict=True):
        event[REQUEST_FINGERPRINT] = fingerprint
        values.append(_keyed_to_json(event))
    return values
