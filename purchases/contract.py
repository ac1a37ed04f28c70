"""The purchase event contract: the one definition the API, the loader and the tests share.

A client sends `PurchaseRequest`; the API turns it into a `PurchaseEvent` (adding the ids and
the time) and produces it, as JSON, to the `purchases` topic keyed by customer id. The loader
accepts a record only if `parse_event` accepts it; anything else is kept aside with the reason.
Money is `Decimal` everywhere and travels as a JSON string, never as a float.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any

import uuid6
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

SCHEMA_VERSION = 1
TOPIC = "purchases"

MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = Decimal("1000000")
MAX_PRODUCT_NAME = 200
MAX_DESCRIPTION = 2_000
CURRENCY_PATTERN = r"^[A-Z]{3}$"
FUTURE_TOLERANCE = timedelta(minutes=5)
# A record larger than this cannot be a valid event (the fields above bound it well below).
MAX_EVENT_BYTES = 16 * 1024

# Fixed namespace so that (customer, Idempotency-Key) always maps to the same event id.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c2b1e-5d3a-4c1e-9b7a-2a6f0c9d8e41")

UnitPrice = Annotated[
    Decimal,
    Field(gt=0, le=MAX_UNIT_PRICE, decimal_places=2, allow_inf_nan=False,
          description="Price of one unit: > 0, at most 2 decimal places, at most 1,000,000."),
]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY, description="Whole units, 1 to 10,000.")]
Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN, description="ISO 4217 code, three capital letters.")]
ProductName = Annotated[str, Field(min_length=1, max_length=MAX_PRODUCT_NAME)]
Description = Annotated[str | None, Field(default=None, max_length=MAX_DESCRIPTION)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _not_in_future(value: datetime | None) -> datetime | None:
    if value is not None and value > utcnow() + FUTURE_TOLERANCE:
        raise ValueError("must not be more than 5 minutes in the future")
    return value


class PurchaseRequest(BaseModel):
    """What a customer sends to buy something."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    product_name: ProductName
    description: Description = None
    quantity: Quantity
    unit_price: UnitPrice
    currency: Currency = "USD"
    purchased_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 with offset; at most 5 minutes in the future; default now.")

    _check_purchased_at = field_validator("purchased_at")(_not_in_future)

    @field_validator("quantity", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON 2.0 is a whole number, 1.5 and "2" are not quantities.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a whole number")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("must be a whole number")
            return int(value)
        return value

    @field_validator("unit_price", mode="before")
    @classmethod
    def _price_from_string_or_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a decimal number or a string holding one")
        if isinstance(value, float):
            return Decimal(repr(value))  # the shortest repr is what the client wrote
        return value


class PurchaseEvent(BaseModel):
    """One purchase as it travels on the `purchases` topic (schema_version 1).

    Unknown extra fields are allowed and kept, so that a newer producer does not break an older loader.
    """

    model_config = ConfigDict(extra="allow")

    schema_version: Annotated[int, Field(ge=1)] = SCHEMA_VERSION
    event_id: uuid.UUID
    customer_id: uuid.UUID
    product_name: ProductName
    description: Description = None
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]
    unit_price: UnitPrice
    currency: Currency
    purchased_at: AwareDatetime

    @property
    def total_price(self) -> Decimal:
        return self.quantity * self.unit_price

    @property
    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def kafka_key(self) -> bytes:
        # Keyed by customer: one customer's events stay in order on one partition.
        return str(self.customer_id).encode()


class InvalidEvent(ValueError):
    """A record on the topic that is not a valid purchase event; `reason` says why."""

    def __init__(self, reason: str, event_id: uuid.UUID | None = None, customer_id: uuid.UUID | None = None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.customer_id = customer_id


def new_time_ordered_id() -> uuid.UUID:
    return uuid.UUID(str(uuid6.uuid7()))


def event_id_for(customer_id: uuid.UUID, idempotency_key: str | None) -> uuid.UUID:
    """The same customer and Idempotency-Key always give the same event id; no key gives a fresh one."""
    if idempotency_key is None:
        return new_time_ordered_id()
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{customer_id}/{idempotency_key}")


def build_event(customer_id: uuid.UUID, request: PurchaseRequest, idempotency_key: str | None = None,
                now: datetime | None = None) -> PurchaseEvent:
    return PurchaseEvent.model_construct(
        schema_version=SCHEMA_VERSION,
        event_id=event_id_for(customer_id, idempotency_key),
        customer_id=customer_id,
        product_name=request.product_name,
        description=request.description,
        quantity=request.quantity,
        unit_price=request.unit_price,
        currency=request.currency,
        purchased_at=request.purchased_at or now or utcnow(),
    )


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def parse_event(raw: bytes | None, now: datetime | None = None) -> PurchaseEvent:
    """Decide whether a raw record is a valid purchase event. Raises InvalidEvent with the reason."""
    if raw is None:
        raise InvalidEvent("empty record (no value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"record is {len(raw)} bytes, more than the {MAX_EVENT_BYTES} an event can be")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        document = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEvent(f"not a JSON object but a JSON {type(document).__name__}")
    event_id, customer_id = _uuid_or_none(document.get("event_id")), _uuid_or_none(document.get("customer_id"))
    version = document.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidEvent(f"schema_version {version!r} is not supported (this loader reads {SCHEMA_VERSION})",
                           event_id, customer_id)
    try:
        event = PurchaseEvent.model_validate(document)
    except ValidationError as exc:
        raise InvalidEvent(_describe(exc), event_id, customer_id) from None
    if event.purchased_at > (now or utcnow()) + FUTURE_TOLERANCE:
        raise InvalidEvent("purchased_at: is more than 5 minutes in the future", event_id, customer_id)
    return event
