"""Buying (one purchase or a batch) and reading back one's own purchases.

Buying is the hot path: the token is checked offline, the body validated straight from bytes, the event
produced and the answer sent once the broker acknowledged it. No database access: idempotency comes from
the deterministic event id, which the loader deduplicates on.
"""
from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from ingest_api.api.deps import ConnectionDep, CurrentCustomer, ProducerDep, parse_json_body
from ingest_api.api.hot_path import IDEMPOTENCY_KEY_MAX_LENGTH, BuyRoute, read_body
from ingest_api.batch_events import batch_event_bytes, batch_event_ids
from ingest_api.schemas import (
    BatchAccepted,
    Problem,
    PurchaseAccepted,
    PurchaseBatch,
    PurchaseDetail,
    PurchasePage,
    PurchaseRequest,
    RecordedPurchase,
    RejectedPurchase,
)
from purchases.contract import build_event, utcnow

router = APIRouter(tags=["purchases"])
# The buy endpoints resolve their parameters by hand (see hot_path.py); same signature, same rules.
buy_router = APIRouter(tags=["purchases"], route_class=BuyRoute)

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
    description="Any string unique per purchase. Retrying with the same key gives the same event id, and the "
                "purchase is counted once. For a batch, purchase i gets the key `<key>#<i>`.")]

AUTH_ERRORS = {401: {"model": Problem, "description": "Missing, forged, tampered or expired token."}}
BUY_ERRORS = {
    **AUTH_ERRORS,
    413: {"model": Problem, "description": "Body larger than the limit."},
    422: {"model": Problem, "description": "Invalid purchase; `detail` names each failing field."},
    503: {"model": Problem, "description": "The broker did not acknowledge the event; retry after "
                                           "`Retry-After` seconds with the same Idempotency-Key.",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}},
}


def _json_body(schema_name: str) -> dict:
    # The body is read and validated by hand (see parse_json_body); this tells OpenAPI what it is.
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}}


@buy_router.post("/purchases", status_code=status.HTTP_202_ACCEPTED, response_model=PurchaseAccepted,
                 responses=BUY_ERRORS, openapi_extra=_json_body("PurchaseRequest"),
                 summary="Buy: record one purchase (202 once the broker has it)")
async def buy(request: Request, customer_id: CurrentCustomer, producer: ProducerDep,
              idempotency_key: IdempotencyKey = None) -> Response:
    purchase = parse_json_body(PurchaseRequest, await read_body(request))
    event = build_event(customer_id, purchase, idempotency_key)
    await producer.send(event.kafka_key(), event.to_bytes())
    return Response(b'{"event_id":"%s","status":"accepted"}' % str(event.event_id).encode(),
                    status_code=status.HTTP_202_ACCEPTED, media_type="application/json")


@buy_router.post("/purchases/batch", status_code=status.HTTP_202_ACCEPTED, response_model=BatchAccepted,
                 responses=BUY_ERRORS, openapi_extra=_json_body("PurchaseBatch"),
                 summary="Buy up to 1000 purchases at once, all or nothing")
async def buy_many(request: Request, customer_id: CurrentCustomer, producer: ProducerDep,
                   idempotency_key: IdempotencyKey = None) -> Response:
    batch = parse_json_body(PurchaseBatch, await read_body(request))
    # The same events build_event would make, built in bulk (see batch_events.py).
    event_ids = batch_event_ids(customer_id, len(batch.purchases), idempotency_key)
    values = batch_event_bytes(customer_id, batch.purchases, event_ids, utcnow())
    await producer.send_many(str(customer_id).encode(), values)  # the key PurchaseEvent.kafka_key() gives
    ids = '","'.join(event_ids).encode()
    return Response(b'{"event_ids":["%s"],"status":"accepted"}' % ids,
                    status_code=status.HTTP_202_ACCEPTED, media_type="application/json")


# reading back ----------------------------------------------------------------------------------------

_COLUMNS = """event_id, product_name, description, quantity, unit_price, currency::text as currency,
              quantity * unit_price as total_price, purchased_at, loaded_at as recorded_at"""
_FIRST_PAGE = f"""select {_COLUMNS} from staging.purchase_events where customer_id = %s
                  order by purchased_at desc, event_id desc limit %s"""
_NEXT_PAGE = f"""select {_COLUMNS} from staging.purchase_events
                 where customer_id = %s and (purchased_at, event_id) < (%s, %s)
                 order by purchased_at desc, event_id desc limit %s"""
_ONE = f"select {_COLUMNS} from staging.purchase_events where event_id = %s and customer_id = %s"
_ONE_REJECTED = """select event_id, reason, rejected_at from staging.purchase_events_rejected
                   where event_id = %s and customer_id = %s order by rejected_at desc limit 1"""
# Ids in paths are matched as UUIDs: anything else is no such resource (404), and /purchases/batch is not
# mistaken for a purchase id.
_FIELDS = ("event_id", "product_name", "description", "quantity", "unit_price", "currency", "total_price",
           "purchased_at", "recorded_at")


def _encode_cursor(purchased_at: datetime, event_id: uuid.UUID) -> str:
    raw = json.dumps([purchased_at.isoformat(), str(event_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        purchased_at, event_id = json.loads(raw)
        position = datetime.fromisoformat(purchased_at), uuid.UUID(event_id)
        if position[0].tzinfo is None:
            raise ValueError("naive")
        return position
    except (ValueError, TypeError, AttributeError, binascii.Error):
        raise RequestValidationError([{
            "type": "value_error", "loc": ("query", "cursor"), "input": cursor,
            "msg": "not a cursor this API gave out: pass back `next_cursor` unchanged"}]) from None


async def _page(conn, customer_id: uuid.UUID, limit: int, cursor: str | None) -> PurchasePage:
    if cursor:
        purchased_at, event_id = _decode_cursor(cursor)
        cur = await conn.execute(_NEXT_PAGE, (customer_id, purchased_at, event_id, limit + 1))
    else:
        cur = await conn.execute(_FIRST_PAGE, (customer_id, limit + 1))
    rows = await cur.fetchall()
    items = [RecordedPurchase(**dict(zip(_FIELDS, row, strict=True))) for row in rows[:limit]]
    next_cursor = _encode_cursor(items[-1].purchased_at, items[-1].event_id) if len(rows) > limit else None
    return PurchasePage(items=items, next_cursor=next_cursor)


Limit = Annotated[int, Query(ge=1, le=200, description="Items per page.")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page.")]
READ_ERRORS = {**AUTH_ERRORS, 422: {"model": Problem, "description": "Bad limit or cursor."}}


@router.get("/customers/me/purchases", response_model=PurchasePage, responses=READ_ERRORS,
            summary="My recorded purchases, newest first")
async def my_purchases(customer_id: CurrentCustomer, conn: ConnectionDep, limit: Limit = 50,
                       cursor: Cursor = None) -> PurchasePage:
    return await _page(conn, customer_id, limit, cursor)


@router.get("/customers/{customer_id:uuid}/purchases", response_model=PurchasePage,
            responses={**READ_ERRORS, 404: {"model": Problem, "description": "Not your account."}},
            summary="A customer's recorded purchases: only one's own (404 otherwise)")
async def customer_purchases(customer_id: uuid.UUID, caller: CurrentCustomer, conn: ConnectionDep,
                             limit: Limit = 50, cursor: Cursor = None) -> PurchasePage:
    if customer_id != caller:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such customer")
    return await _page(conn, customer_id, limit, cursor)


@router.get("/purchases/{event_id:uuid}", response_model=PurchaseDetail,
            responses={**AUTH_ERRORS, 404: {"model": Problem, "description":
                       "Not one of your purchases, or not recorded yet (the loader takes seconds)."}},
            summary="One of my purchases: recorded or rejected")
async def purchase(event_id: uuid.UUID, customer_id: CurrentCustomer, conn: ConnectionDep):
    row = await (await conn.execute(_ONE, (event_id, customer_id))).fetchone()
    if row is not None:
        return RecordedPurchase(**dict(zip(_FIELDS, row, strict=True)))
    row = await (await conn.execute(_ONE_REJECTED, (event_id, customer_id))).fetchone()
    if row is not None:
        return RejectedPurchase(event_id=row[0], reason=row[1], rejected_at=row[2])
    raise HTTPException(status.HTTP_404_NOT_FOUND, "No such purchase (yet)")
