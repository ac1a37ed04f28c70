"""Buying: one purchase or a batch, answered 202 once the broker has acknowledged the event(s).

This is the hot path: the token is checked offline, the body validated straight from bytes, the event
produced and the answer sent once the broker acknowledged it. No database access: idempotency comes from
the deterministic event id, which the loader deduplicates on; a key reused with another body is refused
with 409 by the worker that remembers the key, and otherwise rejected by the loader (idempotency.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Request, Response, status

from ingest_api import errors
from ingest_api.accept import idempotency
from ingest_api.accept.batch_events import batch_event_bytes, batch_event_ids, batch_fingerprints
from ingest_api.accept.hot_path import IDEMPOTENCY_KEY_MAX_LENGTH, BuyRoute, parse_json_body, read_body
from ingest_api.deps import CurrentCustomer, ProducerDep
from ingest_api.schemas import BatchAccepted, PurchaseAccepted, PurchaseBatch, PurchaseRequest
from purchases.contract import build_event, request_fingerprint, utcnow

# The buy endpoints resolve their parameters by hand (see hot_path.py); same signature, same rules.
router = APIRouter(tags=["purchases"], route_class=BuyRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="Any string unique per purchase. Retrying with the same key and the same body gives the same "
        "event id, and the purchase is counted once; the same key with a different body is refused (409), or, "
        "if the API no longer remembers the key, recorded as a rejection of that event id. For a batch the key "
        "names the whole batch: purchase i gets an event id of its own, never one of a single purchase's key.",
    ),
]

BUY_ERRORS = {
    **errors.AUTH_ERRORS,
    **idempotency.IDEMPOTENCY_CONFLICT,
    **errors.BODY_TOO_LARGE,
    **errors.BAD_PURCHASE,
    **errors.BROKER_UNAVAILABLE,
}

# The bodies are read and validated by hand (see parse_json_body): OpenAPI learns of them from these.
HAND_READ_BODIES = (PurchaseRequest, PurchaseBatch)


def _json_body(schema_name: str) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
        }
    }


@router.post(
    "/purchases",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PurchaseAccepted,
    responses=BUY_ERRORS,
    openapi_extra=_json_body("PurchaseRequest"),
    summary="Buy: record one purchase (202 once the broker has it)",
)
async def buy(
    request: Request, customer_id: CurrentCustomer, producer: ProducerDep, idempotency_key: IdempotencyKey = None
) -> Response:
    purchase = parse_json_body(PurchaseRequest, await read_body(request))
    if idempotency_key is None:
        event = build_event(customer_id, purchase)
        event_id = str(event.event_id)
    else:
        fingerprint = request_fingerprint(purchase)
        event = build_event(customer_id, purchase, idempotency_key, fingerprint=fingerprint)
        event_id = str(event.event_id)
        if idempotency.cache_of(request.app).claim(event_id, fingerprint) != fingerprint:
            raise idempotency.idempotency_conflict(idempotency_key)
    await producer.send(event.kafka_key(), event.to_bytes())
    return Response(
        b'{"event_id":"%s","status":"accepted"}' % event_id.encode(),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


@router.post(
    "/purchases/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    responses=BUY_ERRORS,
    openapi_extra=_json_body("PurchaseBatch"),
    summary="Buy up to 1000 purchases at once, all or nothing",
)
async def buy_many(
    request: Request, customer_id: CurrentCustomer, producer: ProducerDep, idempotency_key: IdempotencyKey = None
) -> Response:
    batch = parse_json_body(PurchaseBatch, await read_body(request))
    # The same events build_event would make, built in bulk (see batch_events.py).
    event_ids = batch_event_ids(customer_id, len(batch.purchases), idempotency_key)
    fingerprints = None
    if idempotency_key is not None:
        fingerprints, whole = batch_fingerprints(batch.purchases)
        if idempotency.cache_of(request.app).claim(event_ids[0], whole) != whole:
            raise idempotency.idempotency_conflict(idempotency_key, "batch")
    values = batch_event_bytes(customer_id, batch.purchases, event_ids, utcnow(), fingerprints)
    await producer.send_many(str(customer_id).encode(), values)  # the key PurchaseEvent.kafka_key() gives
    ids = '","'.join(event_ids).encode()
    return Response(
        b'{"event_ids":["%s"],"status":"accepted"}' % ids,
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


def openapi(app: FastAPI) -> dict:
    """FastAPI's OpenAPI document of `app`, plus the schemas of the bodies read by hand, which the buy
    routes' requestBody refer to: so that /docs and schema-driven clients know them."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in HAND_READ_BODIES:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
    return app.openapi_schema
