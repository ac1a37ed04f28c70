"""Records -> staging rows: the contract's verdict on each Kafka record, and the COPY line of each valid one.

Every record comes out as exactly one of two things: a `StagingRow` (its COPY text line for
`staging.purchase_events`) or a `Rejection` (the reason, and the record's bytes for
`staging.purchase_events_rejected`). Nothing a record holds can raise out of `sort_records`: whatever the
contract refuses, and whatever else goes wrong while reading one record, becomes that record's rejection.

Most records are events as the API writes them; `_fast_row` reads those with msgspec (in C) and checks them
with the contract's own rule functions, several times cheaper than pydantic. It takes only the canonical
forms the API writes (`CANONICAL_*` of the contract) and gives up on anything else, which then goes through
pydantic and `parse_event`, the authoritative verdict. Both build their line with the same `staging_line`,
so a record gives the same row either way (tests/loader/test_validation.py checks it on generated records).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

import msgspec
from confluent_kafka import Message

from purchases import contract
from purchases.contract import SCHEMA_VERSION, InvalidEvent, PurchaseEvent

# Columns of staging.purchase_events that a COPY line holds, in its order.
STAGING_COLUMNS = (
    "event_id",
    "customer_id",
    "product_name",
    "description",
    "quantity",
    "unit_price",
    "currency",
    "purchased_at",
    "schema_version",
    "extra",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "batch_id",
)
# A reason is for people: kept to this many characters (a record's own bytes are kept whole beside it).
MAX_REASON = 2_000


class StagingRow(NamedTuple):
    """A valid record, ready for COPY: its ids (canonical text) and offset, kept for the customer check and
    for a rejection, and its COPY text line holding the STAGING_COLUMNS values. `fingerprint` is the request
    fingerprint a keyed purchase's event carries (`request_fingerprint`, in its canonical form), else None:
    what tells a retry of an event id from a reuse of its Idempotency-Key for another purchase."""

    event_id: str
    customer_id: str
    offset: int
    line: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A record that goes to staging.purchase_events_rejected, with why."""

    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    event_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None

    @classmethod
    def of(
        cls,
        message: Message,
        reason: str,
        event_id: uuid.UUID | str | None = None,
        customer_id: uuid.UUID | str | None = None,
    ) -> Rejection:
        return cls(
            message.offset(),
            message.key(),
            message.value(),
            storable_reason(reason),
            _as_uuid(event_id),
            _as_uuid(customer_id),
        )


def _as_uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if isinstance(value, str) else value


def storable_reason(reason: str) -> str:
    """A reason Postgres text can hold whatever it quotes: no NUL, no lone surrogate, bounded length."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


@dataclass(frozen=True)
class LineTail:
    """The end of every line of one batch, after the values of the event: where it came from."""

    topic: str
    partition: int
    batch_id: int

    def text(self, offset: int) -> str:
        return f"\t{copy_text(self.topic)}\t{self.partition}\t{offset}\t{self.batch_id}\n"


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str | None) -> str:
    """One field of COPY's text format."""
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _copy_json(text: str) -> str:
    """The `extra` field: most often "{}" or a request fingerprint, with nothing to escape (translate alone
    costs ~2 µs on a fingerprint's 60 characters, a quarter of the fast path)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def staging_line(
    event_id: str,
    customer_id: str,
    product_name: str,
    description: str | None,
    quantity: int,
    unit_price: Decimal,
    currency: str,
    purchased_at: datetime,
    extra_json: str,
    tail: LineTail,
    offset: int,
) -> str:
    """The COPY line of a valid event, from values the contract has normalised (UTC time, 2-place price)."""
    return (
        f"{event_id}\t{customer_id}\t{copy_text(product_name)}\t{copy_text(description)}\t{quantity}\t"
        f"{unit_price}\t{currency}\t{purchased_at.isoformat()}\t{SCHEMA_VERSION}\t{_copy_json(extra_json)}"
        f"{tail.text(offset)}"
    )


def canonical_fingerprint(value: object) -> str | None:
    """A request fingerprint as the API writes it, or None: anything else in that field is not compared."""
    if isinstance(value, str) and contract.CANONICAL_FINGERPRINT.fullmatch(value):
        return value
    return None


def row_from_event(event: PurchaseEvent, tail: LineTail, offset: int) -> StagingRow:
    event_id, customer_id = str(event.event_id), str(event.customer_id)
    extra = contract.storable_json(event.model_extra) if event.model_extra else "{}"
    fingerprint = canonical_fingerprint((event.model_extra or {}).get(contract.REQUEST_FINGERPRINT))
    return StagingRow(
        event_id,
        customer_id,
        offset,
        staging_line(
            event_id,
            customer_id,
            event.product_name,
            event.description,
            event.quantity,
            event.unit_price,
            event.currency,
            event.purchased_at,
            extra,
            tail,
            offset,
        ),
        fingerprint,
    )


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The shape of an event as the API writes it, decoded in C (types only; the contract checks values).
    A keyed purchase's event also carries its request fingerprint, the one extra field the API writes."""

    event_id: str
    customer_id: str
    product_name: str
    quantity: int
    unit_price: str
    currency: str
    purchased_at: str
    description: str | None = None
    schema_version: int = SCHEMA_VERSION
    request_fingerprint: str | msgspec.UnsetType = msgspec.UNSET


_wire_decoder = msgspec.json.Decoder(_WireEvent)


def _fast_row(raw: bytes | None, now: datetime, tail: LineTail, offset: int) -> StagingRow | None:
    """The row of an event in the canonical form the API writes, or None: then the full path decides."""
    if raw is None or len(raw) > contract.MAX_EVENT_BYTES:
        return None
    try:
        wire = _wire_decoder.decode(raw)
        if (
            wire.schema_version != SCHEMA_VERSION
            or type(wire.schema_version) is not int
            or contract.CANONICAL_UUID.fullmatch(wire.event_id) is None
            or contract.CANONICAL_UUID.fullmatch(wire.customer_id) is None
            or contract.CANONICAL_PRICE.fullmatch(wire.unit_price) is None
            or contract.CANONICAL_TIME.fullmatch(wire.purchased_at) is None
        ):
            return None
        fingerprint = wire.request_fingerprint
        if fingerprint is msgspec.UNSET:
            fingerprint, extra = None, "{}"
        elif contract.CANONICAL_FINGERPRINT.fullmatch(fingerprint):
            # What storable_json writes for this extra field (a canonical fingerprint needs no escaping).
            extra = f'{{"{contract.REQUEST_FINGERPRINT}":"{fingerprint}"}}'
        else:
            return None
        line = staging_line(
            wire.event_id,
            wire.customer_id,
            contract.check_product_name(wire.product_name),
            contract.check_description(wire.description),
            contract.check_quantity(wire.quantity),
            contract.check_unit_price(Decimal(wire.unit_price)),
            contract.check_currency(wire.currency),
            contract.check_purchased_at(datetime.fromisoformat(wire.purchased_at), now),
            extra,
            tail,
            offset,
        )
    except Exception:  # noqa: BLE001 - any doubt at all: the full path gives the verdict and its reason
        return None
    return StagingRow(wire.event_id, wire.customer_id, offset, line, fingerprint)


def event_row(raw: bytes | None, now: datetime, tail: LineTail, offset: int) -> StagingRow:
    """The staging row for a record, or InvalidEvent with the contract's reason."""
    return _fast_row(raw, now, tail, offset) or row_from_event(contract.parse_event(raw, now), tail, offset)


@dataclass
class SortedRecords:
    rows: list[StagingRow]
    rejections: list[Rejection]


def sort_records(messages: Sequence[Message], now: datetime, tail: LineTail) -> SortedRecords:
    """Each record becomes a row or a rejection; no record can make this raise."""
    rows, rejections = [], []
    for message in messages:
        raw, offset = message.value(), message.offset()
        try:
            rows.append(event_row(raw, now, tail, offset))
        except InvalidEvent as exc:
            rejections.append(Rejection.of(message, exc.reason, exc.event_id, exc.customer_id))
        except Exception as exc:  # noqa: BLE001 - a record the contract did not foresee still stops nothing
            rejections.append(Rejection.of(message, f"could not be read: {type(exc).__name__}: {exc}"))
    return SortedRecords(rows, rejections)
