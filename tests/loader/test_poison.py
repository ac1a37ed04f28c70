"""Poison records are kept aside with a reason; the good events around them are loaded; nothing stops."""

from __future__ import annotations

import json
import uuid

from purchases.load import LoaderConfig, load_partition
from purchases.processes import EmbeddedBroker

from .helpers import Staged, make_event, produce


def poison_records(customer_id: uuid.UUID) -> dict[str, tuple[bytes | None, str]]:
    """name -> (raw value, a word the rejection reason must contain)."""
    good = json.loads(make_event(customer_id).to_bytes())

    def variant(**changes) -> bytes:
        document = {**good, "event_id": str(uuid.uuid4()), **changes}
        return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()

    return {
        "not JSON": (b"this is not json {", "not JSON"),
        "JSON array": (b'[{"event_id": "x"}]', "not a JSON object"),
        "invalid UTF-8": (b'{"product_name": "caf\xe9"}', "not UTF-8"),
        "negative price": (variant(unit_price="-3.00"), "unit_price"),
        "unknown customer": (variant(customer_id=str(uuid.uuid4())), "unknown customer"),
        "900 KB value": (variant(description="x" * 900_000), "bytes"),
        "missing event_id": (variant(event_id=...), "event_id"),
        "no value": (None, "empty record"),
        "three decimals": (variant(unit_price="1.005"), "unit_price"),
        "NUL in name": (variant(product_name="bad\u0000name"), "NUL"),
        "NaN extra": (
            json.dumps({**good, "event_id": str(uuid.uuid4())})[:-1].encode() + b', "score": NaN}',
            "NaN or Infinity",
        ),
        "future": (variant(purchased_at="2999-01-01T00:00:00Z"), "future"),
    }


def test_poison_records_are_rejected_with_a_reason_and_good_events_around_them_load(
    broker, warehouse_dsn, topic, staged, customers
):
    poison = poison_records(customers[0])
    records, expected_rejections, good_events = [], {}, []
    for name, (value, word) in poison.items():
        before = make_event(customers[1], len(records))
        records.append((before.kafka_key(), before.to_bytes()))
        good_events.append(before)
        expected_rejections[len(records)] = (name, value, word)
        records.append((b"key-" + name.encode(), value))
    last = make_event(customers[2])
    records.append((None, last.to_bytes()))
    good_events.append(last)
    produce(broker.bootstrap, topic, records)

    result = load_partition(
        LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=30, stop_when_idle=True
    )

    assert (result.loaded, result.rejected) == (len(good_events), len(poison))
    assert set(staged.events()) == {e.event_id for e in good_events}
    rejected = {offset: (reason, raw) for offset, reason, raw, _, _ in staged.rejected()}
    assert set(rejected) == set(expected_rejections)
    for offset, (name, value, word) in expected_rejections.items():
        reason, raw = rejected[offset]
        assert word in reason, f"{name}: reason {reason!r} should mention {word!r}"
        assert (bytes(raw) if raw is not None else None) == value, f"{name}: raw value not kept losslessly"
    assert staged.next_offset() == len(records)
    keys = staged.query(
        "select raw_key from staging.purchase_events_rejected where kafka_topic = %s and kafka_offset = %s", topic, 3
    )
    assert bytes(keys[0][0]) == b"key-JSON array"


def test_readable_ids_of_a_rejected_record_are_kept(broker, warehouse_dsn, topic, staged, customers):
    bad = make_event(customers[0], quantity=0)
    produce(broker.bootstrap, topic, [(None, bad.to_bytes())])
    load_partition(LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=30, stop_when_idle=True)
    [(_, reason, _, event_id, customer_id)] = staged.rejected()
    assert (event_id, customer_id) == (bad.event_id, customers[0])
    assert reason.startswith("quantity")


def test_a_row_postgres_refuses_is_rejected_alone_and_the_rest_of_the_batch_is_stored(
    broker, warehouse_dsn, topic, staged, customers, monkeypatch
):
    """The safety net under the contract: were the contract to let through a value Postgres cannot store
    (here: it stops normalising times to UTC, so '+20:00' reaches timestamptz), the COPY's data error sends
    that record alone to the rejected table, with Postgres' reason, and the batch around it is stored."""
    from purchases import contract

    def times_as_written(value, now=None):
        return value

    monkeypatch.setattr(contract, "check_purchased_at", times_as_written)
    good = [make_event(customers[0], n) for n in range(50)]
    document = json.loads(good[0].to_bytes())
    poison = {**document, "event_id": str(uuid.uuid4()), "purchased_at": "2026-01-01T00:00:00+20:00"}
    records = (
        [(None, e.to_bytes()) for e in good[:30]]
        + [(None, json.dumps(poison).encode())]
        + [(None, e.to_bytes()) for e in good[30:]]
    )
    produce(broker.bootstrap, topic, records)

    result = load_partition(
        LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=30, stop_when_idle=True
    )

    assert (result.loaded, result.rejected) == (50, 1)
    assert set(staged.events()) == {e.event_id for e in good}
    [(offset, reason, raw, event_id, _)] = staged.rejected()
    assert (offset, bytes(raw), str(event_id)) == (30, json.dumps(poison).encode(), poison["event_id"])
    assert "Postgres cannot store it" in reason and "time zone displacement out of range" in reason
    assert staged.next_offset() == 51


def test_a_rejected_record_at_an_offset_a_former_log_used_is_kept_too(warehouse_dsn, customers, tmp_path):
    """The embedded broker forgets its log on restart and starts the new one at offset 0: a record rejected
    there is stored beside the one the old log had at the same offset, not dropped."""

    own = EmbeddedBroker(tmp_path / "broker.log", topics={"recreated": 1})
    try:
        own.start()
        produce(own.bootstrap, "recreated", [(None, b"first life")])
        config = LoaderConfig(own.bootstrap, warehouse_dsn, "recreated")
        assert load_partition(config, 0, window_seconds=20, stop_when_idle=True).rejected == 1
        own.stop()
        own.start()
        produce(own.bootstrap, "recreated", [(None, b"second life")])
        assert load_partition(config, 0, window_seconds=20, stop_when_idle=True).rejected == 1
    finally:
        own.stop()
    rejected = Staged(warehouse_dsn, "recreated").rejected()
    assert [(offset, bytes(raw)) for offset, _, raw, _, _ in rejected] == [(0, b"first life"), (0, b"second life")]


def test_batches_are_bounded_in_bytes_as_well_as_in_records(broker, warehouse_dsn, topic, staged, customers):
    events = [make_event(customers[0], n, description="d" * 1900) for n in range(60)]
    produce(broker.bootstrap, topic, [(None, e.to_bytes()) for e in events])
    config = LoaderConfig(broker.bootstrap, warehouse_dsn, topic, batch_max_bytes=20_000)
    result = load_partition(config, 0, window_seconds=30, stop_when_idle=True)
    assert result.loaded == 60
    sizes = staged.query(
        "select loaded from staging.loaded_batches b where exists (select from "
        "staging.purchase_events e where e.batch_id = b.batch_id and e.kafka_topic = %s)",
        topic,
    )
    assert len(sizes) >= 5 and max(size for (size,) in sizes) <= 11  # ~2 KB each: 20 KB is about 10
