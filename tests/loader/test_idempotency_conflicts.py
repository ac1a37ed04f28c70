"""An Idempotency-Key reused with another body, where the API could not know (another worker, a restart, a key
forgotten): the loader rejects the newcomer as an idempotency conflict instead of dropping it silently. A true
retry (the same fingerprint) stays a silent duplicate, and so does a copy that carries no fingerprint."""

from __future__ import annotations

import uuid

from purchases.contract import PurchaseRequest, build_event
from purchases.load import LoaderConfig, load_partition
from purchases.load.replay import replay

from .helpers import make_event, produce


def run_loader(broker, dsn, topic):
    return load_partition(LoaderConfig(broker.bootstrap, dsn, topic), 0, window_seconds=30, stop_when_idle=True)


def keyed(customer: uuid.UUID, key: str, **body):
    """The event the API builds for a purchase sent with an Idempotency-Key: it carries the fingerprint."""
    request = PurchaseRequest.model_validate(
        {"product_name": "Coffee beans", "quantity": 1, "unit_price": "12.50", **body}
    )
    return build_event(customer, request, key)


def test_a_key_reused_with_another_body_is_rejected_as_a_conflict(broker, warehouse_dsn, topic, staged, customers):
    first = keyed(customers[0], "order-1", quantity=1)
    retry = keyed(customers[0], "order-1", quantity=1, unit_price=12.5)  # the same body, written differently
    reused = keyed(customers[0], "order-1", quantity=50)
    assert first.event_id == retry.event_id == reused.event_id
    assert first.to_bytes() != retry.to_bytes()  # its own time ("now"): only the fingerprint tells them alike
    produce(broker.bootstrap, topic, [(first.kafka_key(), first.to_bytes())])
    assert run_loader(broker, warehouse_dsn, topic).loaded == 1

    # Later batches: a true retry is a silent duplicate, the reuse is rejected with the reason.
    produce(broker.bootstrap, topic, [(retry.kafka_key(), retry.to_bytes()), (reused.kafka_key(), reused.to_bytes())])
    result = run_loader(broker, warehouse_dsn, topic)
    assert (result.loaded, result.duplicates, result.rejected) == (0, 1, 1)
    [(offset, reason, raw, event_id, customer_id)] = staged.rejected()
    assert (offset, bytes(raw), event_id, customer_id) == (2, reused.to_bytes(), first.event_id, customers[0])
    assert reason.startswith("idempotency conflict: ") and str(first.event_id) in reason
    assert first.model_extra["request_fingerprint"] in reason and reused.model_extra["request_fingerprint"] in reason
    assert staged.query("select quantity from staging.purchase_events where event_id = %s", first.event_id) == [(1,)]


def test_within_one_batch_the_first_body_wins_and_the_others_are_conflicts(
    broker, warehouse_dsn, topic, staged, customers
):
    a = keyed(customers[0], "k", quantity=2)
    b = keyed(customers[0], "k", quantity=3)
    other = keyed(customers[1], "k", quantity=3)  # the same key, another customer: another purchase
    records = [a, b, a.model_copy(), other]
    produce(broker.bootstrap, topic, [(e.kafka_key(), e.to_bytes()) for e in records])
    result = run_loader(broker, warehouse_dsn, topic)
    assert (result.loaded, result.duplicates, result.rejected) == (2, 1, 1)
    assert staged.events() == {a.event_id: 0, other.event_id: 3}
    [(offset, reason, *_)] = staged.rejected()
    assert offset == 1 and "idempotency conflict" in reason and "offset 0" in reason


def test_copies_without_a_fingerprint_stay_duplicates(broker, warehouse_dsn, topic, staged, customers):
    """An unkeyed producer's, or one from before fingerprints (a retry across the upgrade), or a fingerprint
    made another way (another version): nothing to compare, so the first copy wins as before."""
    legacy = make_event(customers[0], 1)  # no request_fingerprint at all
    keyed_retry = legacy.model_copy(update={"quantity": 7})
    keyed_retry.__pydantic_extra__ = {"request_fingerprint": "v1:" + "a" * 32}
    stored = keyed(customers[0], "v")
    other_version = stored.model_copy(update={"quantity": 9})
    other_version.__pydantic_extra__ = {"request_fingerprint": "v2:" + "b" * 32}
    produce(broker.bootstrap, topic, [(None, legacy.to_bytes()), (None, stored.to_bytes())])
    assert run_loader(broker, warehouse_dsn, topic).loaded == 2
    produce(broker.bootstrap, topic, [(None, keyed_retry.to_bytes()), (None, other_version.to_bytes())])
    result = run_loader(broker, warehouse_dsn, topic)
    assert (result.loaded, result.duplicates, result.rejected) == (0, 2, 0)
    assert staged.rejected() == []


def test_a_replayed_conflict_stays_rejected(broker, warehouse_dsn, topic, staged, customers):
    first, reused = keyed(customers[0], "r", quantity=1), keyed(customers[0], "r", quantity=2)
    produce(broker.bootstrap, topic, [(None, first.to_bytes()), (None, reused.to_bytes())])
    assert run_loader(broker, warehouse_dsn, topic).rejected == 1
    result = replay(warehouse_dsn, reason_contains="idempotency conflict", topic=topic)
    assert (result.examined, result.loaded, result.still_rejected) == (1, 0, 1)
    assert result.still_rejected_reasons == {"idempotency conflict": 1}
    assert staged.query("select replayed_at from staging.purchase_events_rejected where kafka_topic = %s", topic) == [
        (None,)
    ]
