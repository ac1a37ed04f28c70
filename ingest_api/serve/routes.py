"""Reading back: one's recorded purchases (keyset pages, newest first), one purchase, one's spend.

What was bought shows here once the loader recorded it (seconds after the 202), spend once dbt counted it.
Only one's own: another customer's things answer 404, as if they did not exist.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from psycopg import AsyncConnection

from ingest_api import data, errors
from ingest_api.deps import ConnectionDep, CurrentCustomer
from ingest_api.schemas import (
    IdempotencyConflict,
    PurchaseDetail,
    PurchasePage,
    RecordedPurchase,
    RecordedPurchaseDetail,
    RejectedPurchase,
    Spend,
    SpendTotal,
)

router = APIRouter()

# Ids in paths are matched as UUIDs (`:uuid`): anything else is no such resource (404), and
# /purchases/batch is not mistaken for a purchase id.

Limit = Annotated[int, Query(ge=1, le=200, description="Items per page.")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page.")]
READ_ERRORS = {**errors.AUTH_ERRORS, **errors.BAD_PAGE}


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
        raise errors.bad_cursor(cursor) from None


async def _page(conn: AsyncConnection, customer_id: uuid.UUID, limit: int, cursor: str | None) -> PurchasePage:
    # One row more than shown: whether there is a next page.
    if cursor:
        rows = await data.next_page(conn, customer_id, _decode_cursor(cursor), limit + 1)
    else:
        rows = await data.first_page(conn, customer_id, limit + 1)
    items = [RecordedPurchase(**row) for row in rows[:limit]]
    next_cursor = _encode_cursor(items[-1].purchased_at, items[-1].event_id) if len(rows) > limit else None
    return PurchasePage(items=items, next_cursor=next_cursor)


@router.get(
    "/customers/me/purchases",
    tags=["purchases"],
    response_model=PurchasePage,
    responses=READ_ERRORS,
    summary="My recorded purchases, newest first",
)
async def my_purchases(
    customer_id: CurrentCustomer, conn: ConnectionDep, limit: Limit = 50, cursor: Cursor = None
) -> PurchasePage:
    return await _page(conn, customer_id, limit, cursor)


@router.get(
    "/customers/{customer_id:uuid}/purchases",
    tags=["purchases"],
    response_model=PurchasePage,
    responses={**READ_ERRORS, **errors.NOT_YOUR_ACCOUNT},
    summary="A customer's recorded purchases: only one's own (404 otherwise)",
)
async def customer_purchases(
    customer_id: uuid.UUID, caller: CurrentCustomer, conn: ConnectionDep, limit: Limit = 50, cursor: Cursor = None
) -> PurchasePage:
    if customer_id != caller:
        raise errors.no_such_customer()
    return await _page(conn, customer_id, limit, cursor)


@router.get(
    "/purchases/{event_id:uuid}",
    tags=["purchases"],
    response_model=PurchaseDetail,
    responses={**errors.AUTH_ERRORS, **errors.NOT_YOUR_PURCHASE},
    summary="One of my purchases: recorded (with any requests refused for reusing its key) or rejected",
)
async def purchase(event_id: uuid.UUID, customer_id: CurrentCustomer, conn: ConnectionDep):
    row = await data.recorded_purchase(conn, event_id, customer_id)
    if row is not None:
        conflicts = await data.idempotency_conflicts(conn, event_id, customer_id)
        return RecordedPurchaseDetail(**row, conflicts=[IdempotencyConflict(**conflict) for conflict in conflicts])
    row = await data.rejected_purchase(conn, event_id, customer_id)
    if row is not None:
        return RejectedPurchase(**row)
    raise errors.no_such_purchase()


@router.get(
    "/customers/me/spend",
    tags=["customers"],
    response_model=Spend,
    responses=errors.AUTH_ERRORS,
    summary="My total spend per currency",
)
async def my_spend(customer_id: CurrentCustomer, conn: ConnectionDep) -> Spend:
    reading = await data.spend(conn, customer_id)
    return Spend(
        customer_id=customer_id,
        totals=[SpendTotal(**row) for row in reading.totals],
        as_of=reading.as_of or datetime.now(UTC),
    )
