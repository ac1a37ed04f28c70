"""The purchase event contract: the one definition of a valid purchase, shared by every part of the pipeline.

A client sends a `PurchaseRequest`; the API turns it into a `PurchaseEvent` (adding the ids and the time)
and produces it, as JSON, to the `purchases` topic keyed by customer id. The loader stores a record only if
`parse_event` accepts it; anything else is kept aside with the reason. The loader's fast path, the quality
gate (Great Expectations), the dbt tests (through the macro this module generates) and the API's schemas
take their rules from the constants and functions here; none restates them.

The contract accepts exactly what the warehouse can store and read back:

* **Times** are RFC 3339 with an offset and are normalised to UTC (an offset such as `+20:00`, which Python
  reads but Postgres' `timestamptz` input does not, never reaches the warehouse). A purchase is dated from
  2000-01-01T00:00:00Z (`EARLIEST_PURCHASED_AT`: the shop keeps no older records; the bound also keeps away
  the year-1 dates that Postgres stores but cannot hand back to Python in a time zone west of UTC) to at most
  5 minutes after it is checked (`FUTURE_TOLERANCE`, clock skew). A *client* of the API may date a purchase
  at most 30 days back (`MAX_BACKDATE`): a till that was offline for a while still syncs, and the daily
  marts need no older rework than that. Other producers writing to the topic (an import of history, say)
  are held only to the event rule, so everything the API accepted is always loadable, however late.
* **Text** never holds NUL (Postgres text cannot), lone surrogates (not Unicode scalar values: UTF-8 cannot
  encode them, so neither Postgres nor a JSON encoder that writes UTF-8 can hold them), or control
  characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F), except that a description may contain
  tab, line feed and carriage return. A product name is one line that is not blank. Lengths count code
  points. Format characters (Cf, e.g. zero-width joiners in emoji) are allowed.
* **Numbers**: quantity a whole number 1-10,000; unit price > 0 and at most 1,000,000 with at most 2
  decimal places (normalised to exactly 2). The largest total one purchase can have is `MAX_TOTAL_PRICE`;
  aggregates over many purchases are unbounded, so every money column downstream is plain `numeric`.
* **Unknown extra fields** of an event are kept (forward compatibility) when Postgres' `jsonb` can hold
  them: no NaN or Infinity, no NUL or lone surrogate in any string or key, numbers inside `numeric`'s range.
* A record is at most `MAX_EVENT_BYTES` of UTF-8 JSON, an object, with `schema_version` 1 (the default).

Money is `Decimal` everywhere and travels as a JSON string, never as a float.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import uuid6
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

SCHEMA_VERSION = 1
TOPIC = "purchases"

MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = Decimal("1000000")
PRICE_DECIMAL_PLACES = 2
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)  # 0.01
MAX_TOTAL_PRICE = MAX_QUANTITY * MAX_UNIT_PRICE
MAX_PRODUCT_NAME = 200
MAX_DESCRIPTION = 2_000
CURRENCY_CODE = "[A-Z]{3}"
CURRENCY_PATTERN = f"^{CURRENCY_CODE}$"  # as pydantic, Great Expectations and Postgres read patterns
EARLIEST_PURCHASED_AT = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_BACKDATE = timedelta(days=30)
# A record larger than this cannot be a valid event (the fields above bound it well below).
MAX_EVENT_BYTES = 16 * 1024
# Postgres' numeric (and so jsonb numbers) holds up to 131072 digits before the point and 16383 after.
_NUMERIC_EXPONENTS = range(-16383, 131072)

# Control characters (Unicode Cc), as a regex character range that Python and Postgres read alike.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
# A description may hold these layout characters; nothing else of CONTROL_CHARACTERS.
DESCRIPTION_LAYOUT_CHARACTERS = "\t\n\r"
DESCRIPTION_CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_LONE_SURROGATES = "\ud800-\udfff"
_NOT_IN_A_NAME = re.compile(f"[{CONTROL_CHARACTERS}{_LONE_SURROGATES}]")
_NOT_IN_A_DESCRIPTION = re.compile(f"[{DESCRIPTION_CONTROL_CHARACTERS}{_LONE_SURROGATES}]")
_NOT_STORABLE = re.compile(f"[\x00{_LONE_SURROGATES}]")
_CURRENCY = re.compile(CURRENCY_CODE)

# The exact forms the API writes (pydantic's serialisation of the normalised values). The loader's fast path
# takes only these, so what it accepts it reads exactly as pydantic does; anything else takes the full path.
CANONICAL_UUID = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CANONICAL_PRICE = re.compile(r"(0|[1-9][0-9]{0,6})\.[0-9]{2}")
CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")

# Fixed namespace so that (customer, Idempotency-Key) always maps to the same event id.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c2b1e-5d3a-4c1e-9b7a-2a6f0c9d8e41")
# Purchase i of a batch sent with a key: a namespace of its own, so that no single purchase's key (not even
# "<key>#0") can give the id of a batch's purchase, nor the other way round.
BATCH_IDEMPOTENCY_NAMESPACE = uuid.UUID("2d0b7f4e-8a6c-4f51-b3e9-5c1a7d9e0f62")
# The extra field of a keyed purchase's event that carries its request fingerprint (`request_fingerprint`),
# and the form the API writes it in: "v<version>:<hex digest>". Fingerprints of different versions are not
# compared (neither is anything else in that field).
REQUEST_FINGERPRINT = "request_fingerprint"
REQUEST_FINGERPRINT_VERSION = "v1"
CANONICAL_FINGERPRINT = re.compile(r"v[0-9]{1,3}:[0-9a-f]{16,64}")


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- the rules, one function each: pydantic's validators and the loader's fast path both call these -------


def _character_problem(value: str, forbidden: re.Pattern) -> str | None:
    found = forbidden.search(value)
    if found is None:
        return None
    char = found.group()
    kind = "NUL" if char == "\x00" else "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"contains {kind} (U+{ord(char):04X}) at position {found.start()}"


def check_product_name(value: str) -> str:
    """One line of printable text, 1-200 code points, not blank."""
    if not 1 <= len(value) <= MAX_PRODUCT_NAME:
        raise ValueError(f"must be 1 to {MAX_PRODUCT_NAME} characters, not {len(value)}")
    problem = _character_problem(value, _NOT_IN_A_NAME)
    if problem:
        raise ValueError(f"{problem}; a product name is one line of printable text")
    if value.isspace():
        raise ValueError("must not be blank")
    return value


def check_description(value: str | None) -> str | None:
    """At most 2000 code points; tab, line feed and carriage return are the only control characters."""
    if value is None:
        return None
    if len(value) > MAX_DESCRIPTION:
        raise ValueError(f"must be at most {MAX_DESCRIPTION} characters, not {len(value)}")
    problem = _character_problem(value, _NOT_IN_A_DESCRIPTION)
    if problem:
        raise ValueError(f"{problem}; only tab, line feed and carriage return are allowed")
    return value


def check_quantity(value: int) -> int:
    if not 1 <= value <= MAX_QUANTITY:
        raise ValueError(f"must be a whole number from 1 to {MAX_QUANTITY:,}")
    return value


def check_unit_price(value: Decimal) -> Decimal:
    """> 0, at most 1,000,000, at most 2 decimal places; returned with exactly 2 (12.5 -> 12.50)."""
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if not 0 < value <= MAX_UNIT_PRICE:
        raise ValueError(f"must be greater than 0 and at most {MAX_UNIT_PRICE:,}")
    normalised = value.quantize(PRICE_QUANTUM)
    if normalised != value:
        raise ValueError(f"must have at most {PRICE_DECIMAL_PLACES} decimal places")
    return normalised


def check_currency(value: str) -> str:
    if _CURRENCY.fullmatch(value) is None:
        raise ValueError("must be an ISO 4217 code: three capital letters")
    return value


def check_purchased_at(value: datetime, now: datetime | None = None) -> datetime:
    """The event rule: normalised to UTC, from EARLIEST_PURCHASED_AT to 5 minutes after `now`."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must have a time zone offset")
    value = value.astimezone(UTC)
    if value < EARLIEST_PURCHASED_AT:
        raise ValueError(f"must not be before {EARLIEST_PURCHASED_AT:%Y-%m-%dT%H:%M:%SZ}")
    if value > (now or utcnow()) + FUTURE_TOLERANCE:
        raise ValueError("must not be more than 5 minutes in the future")
    return value


def check_client_purchased_at(value: datetime, now: datetime | None = None) -> datetime:
    """The API's rule: the event rule, and at most MAX_BACKDATE (30 days) before now."""
    now = now or utcnow()
    value = check_purchased_at(value, now)
    if value < now - MAX_BACKDATE:
        raise ValueError(f"must not be more than {MAX_BACKDATE.days} days in the past")
    return value


def storable_json(value: Any, where: str = "extra") -> str:
    """Exact JSON text of a decoded JSON value (Decimal numbers keep the digits the producer wrote), as
    Postgres' jsonb can store it. Raises ValueError naming the place of anything it cannot."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        problem = _character_problem(value, _NOT_STORABLE)
        if problem:
            raise ValueError(f"{where}: {problem}, which Postgres cannot store")
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):  # json.loads reads at most 4300 digits: always inside numeric's range
        return str(value)
    if isinstance(value, (Decimal, float)):
        number = value if isinstance(value, Decimal) else Decimal(repr(value))
        if not number.is_finite():
            raise ValueError(f"{where}: {value} (NaN or Infinity) is not a JSON number; Postgres jsonb cannot store it")
        if number and number.adjusted() not in _NUMERIC_EXPONENTS:
            raise ValueError(f"{where}: a number out of Postgres' numeric range")
        return str(value) if isinstance(value, Decimal) else repr(value)
    if isinstance(value, list):
        return "[" + ",".join(storable_json(item, f"{where}[{i}]") for i, item in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        return (
            "{"
            + ",".join(
                f"{storable_json(str(k), where + ' key')}:{storable_json(v, f'{where}.{k}')}" for k, v in value.items()
            )
            + "}"
        )
    raise ValueError(f"{where}: {type(value).__name__} is not JSON")


# --- the models ----------------------------------------------------------------------------------------------


def _now_from(info: ValidationInfo) -> datetime | None:
    return (info.context or {}).get("now")


UnitPrice = Annotated[
    Decimal,
    Field(
        gt=0,
        le=MAX_UNIT_PRICE,
        allow_inf_nan=False,
        description="Price of one unit: > 0, at most 1,000,000, at most 2 decimal places.",
    ),
    AfterValidator(check_unit_price),
]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY, description="Whole units, 1 to 10,000.")]
Currency = Annotated[
    str,
    Field(pattern=CURRENCY_PATTERN, description="ISO 4217 code, three capital letters."),
    AfterValidator(check_currency),
]
ProductName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PRODUCT_NAME,
        description="1-200 characters of one line of printable text, not blank.",
    ),
    AfterValidator(check_product_name),
]
Description = Annotated[
    str | None,
    Field(
        default=None,
        max_length=MAX_DESCRIPTION,
        description="At most 2000 characters; tab and line breaks allowed, no other control characters.",
    ),
    AfterValidator(check_description),
]


class PurchaseRequest(BaseModel):
    """What a customer sends to buy something."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    product_name: ProductName
    description: Description = None
    quantity: Quantity
    unit_price: UnitPrice
    currency: Currency = "USD"
    purchased_at: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 with offset, stored in UTC; at most 30 days in the past and 5 "
        "minutes in the future; default now.",
    )

    @field_validator("purchased_at")
    @classmethod
    def _client_time(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        return None if value is None else check_client_purchased_at(value, _now_from(info))

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

    schema_version: Annotated[StrictInt, Field(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    event_id: uuid.UUID
    customer_id: uuid.UUID
    product_name: ProductName
    description: Description = None
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]
    unit_price: UnitPrice
    currency: Currency
    purchased_at: AwareDatetime

    @field_validator("purchased_at")
    @classmethod
    def _event_time(cls, value: datetime, info: ValidationInfo) -> datetime:
        return check_purchased_at(value, _now_from(info))

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


def batch_event_id_for(customer_id: uuid.UUID, idempotency_key: str, index: int) -> uuid.UUID:
    """The event id of purchase `index` (from 0) of a batch sent with an Idempotency-Key: uuid5 of
    `<customer>/<key>#<index>` in the batch namespace, never the id of a single purchase's key."""
    return uuid.uuid5(BATCH_IDEMPOTENCY_NAMESPACE, f"{customer_id}/{idempotency_key}#{index}")


# What a fingerprint covers: every field of a request, as the contract normalised it, in a fixed order (not
# the model's, so that a field added to PurchaseRequest later changes no fingerprint of today).
_fingerprinted = TypeAdapter(tuple[str, str | None, int, Decimal, str, datetime | None]).serializer.to_json


def request_fingerprint(request: PurchaseRequest) -> str:
    """A retry is the same request again; reusing its Idempotency-Key for another purchase is not. This tells
    them apart: a hash (BLAKE2b, 128 bits) of the request as the contract normalised it. So a price written
    12.5 or "12.50", a time in another offset, a currency or description left out or given as its default,
    are the same body; any other value is another. A missing `purchased_at` (meaning "now") is hashed as
    missing, so two requests without one are the same body even though their events get different times."""
    fields = (
        request.product_name,
        request.description,
        request.quantity,
        request.unit_price,
        request.currency,
        request.purchased_at,
    )
    digest = hashlib.blake2b(_fingerprinted(fields), digest_size=16).hexdigest()
    return f"{REQUEST_FINGERPRINT_VERSION}:{digest}"


def fingerprints_comparable(first: str, second: str) -> bool:
    """Whether two request fingerprints were made the same way (the same version), so that comparing says
    anything."""
    return first.partition(":")[0] == second.partition(":")[0]


def build_event(
    customer_id: uuid.UUID,
    request: PurchaseRequest,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    fingerprint: str | None = None,
) -> PurchaseEvent:
    """The event for a validated request: its fields are already normalised (UTC time, 2-place price).

    With an Idempotency-Key the event carries the request's fingerprint (computed unless given) in the extra
    field `request_fingerprint`, so that the loader can tell a retry from a reuse of the key for another
    purchase. Without a key there is nothing to tell apart, and no fingerprint."""
    if idempotency_key is not None and fingerprint is None:
        fingerprint = request_fingerprint(request)
    extra = {REQUEST_FINGERPRINT: fingerprint} if fingerprint is not None else {}
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
        **extra,
    )


def describe(error: ValidationError) -> str:
    """A validation error as one line that names each failing field."""
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
    """Decide whether a raw record is a valid purchase event. Raises InvalidEvent with the reason.

    `now` is the time the record is checked at (purchased_at may be at most 5 minutes after it)."""
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
    except RecursionError:
        raise InvalidEvent("not JSON this loader reads: nested too deeply") from None
    except (ValueError, InvalidOperation) as exc:  # ValueError: also integers of more than 4300 digits
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEvent(f"not a JSON object but a JSON {type(document).__name__}")
    event_id, customer_id = _uuid_or_none(document.get("event_id")), _uuid_or_none(document.get("customer_id"))
    version = document.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidEvent(
            f"schema_version {version!r} is not supported (this loader reads {SCHEMA_VERSION})", event_id, customer_id
        )
    try:
        event = PurchaseEvent.model_validate(document, context={"now": now or utcnow()})
        if event.model_extra:
            storable_json(event.model_extra)
    except ValidationError as exc:
        raise InvalidEvent(describe(exc), event_id, customer_id) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(
            str(exc) if isinstance(exc, ValueError) else "extra: nested too deeply", event_id, customer_id
        ) from None
    return event


# --- the contract as the dbt project reads it ---------------------------------------------------------------


def dbt_contract() -> dict[str, Any]:
    """The rules the dbt tests check, as plain values for the generated macro `event_contract()`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "max_quantity": MAX_QUANTITY,
        "max_unit_price": str(MAX_UNIT_PRICE),
        "price_decimal_places": PRICE_DECIMAL_PLACES,
        "currency_pattern": CURRENCY_PATTERN,
        "max_product_name": MAX_PRODUCT_NAME,
        "max_description": MAX_DESCRIPTION,
        "name_forbidden_pattern": f"[{CONTROL_CHARACTERS}]",
        "description_forbidden_pattern": f"[{DESCRIPTION_CONTROL_CHARACTERS}]",
        "earliest_purchased_at": EARLIEST_PURCHASED_AT.isoformat(),
        "future_tolerance_seconds": int(FUTURE_TOLERANCE.total_seconds()),
    }


DBT_MACRO_PATH = "macros/event_contract.sql"


def render_dbt_macro() -> str:
    values = json.dumps(dbt_contract(), indent=4, sort_keys=True).replace("\n", "\n    ")
    return (
        "{#- Generated from purchases/contract.py by `python -m purchases.contract`: do not edit by hand.\n"
        "    The event contract's rules, for the data tests that check staging against them. -#}\n"
        "{% macro event_contract() %}\n"
        f"    {{{{ return({values}) }}}}\n"
        "{% endmacro %}\n"
    )


def _main() -> None:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m purchases.contract", description="Write the dbt macro with the contract's rules."
    )
    parser.add_argument("--project-dir", default=str(Path(__file__).resolve().parents[1] / "dbt"))
    args = parser.parse_args()
    path = Path(args.project_dir) / DBT_MACRO_PATH
    path.write_text(render_dbt_macro())
    print(f"wrote {path}")


if __name__ == "__main__":
    _main()
