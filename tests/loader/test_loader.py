"""The loader against the real broker and Postgres: exactly once, first copy wins, extras kept."""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg

from purchases.load import LoaderConfig, load_partition

from .helpers import make_event, produce


def run_loader(broker, dsn, topic, **config):
    return load_partition(
        LoaderConfig(broker.bootstrap, dsn, topic, **config), 0, window_seconds=30, stop_when_idle=True
    )


def test_every_event_is_loaded_once_and_a_rerun_adds_nothing(broker, warehouse_dsn, topic, staged, customers):
    events = [make_event(customers[n % len(customers)], n) for n in range(250)]
    produce(broker.bootstrap, topic, [(e.kafka_key(), e.to_bytes()) for e in events])

    first = run_loader(broker, warehouse_dsn, topic, batch_max_events=100)
    assert (first.loaded, first.rejected, first.duplicates) == (250, 0, 0)
    assert first.batches >= 3  # the cap splits the work into several committed batches
    assert staged.events() == {e.event_id: offset for offset, e in enumerate(events)}
    assert staged.next_offset() == 250

    second = run_loader(broker, warehouse_dsn, topic)
    assert (second.loaded, second.batches) == (0, 0)
    assert staged.count() == 250

    row = staged.query(
        "select customer_id, product_name, description, quantity, unit_price, currency, "
        "purchased_at, schema_version, extra from staging.purchase_events where event_id = %s",
        events[7].event_id,
    )[0]
    e = events[7]
    assert row == (
        e.customer_id,
        e.product_name,
        e.description,
        e.quantity,
        e.unit_price,
        e.currency,
        e.purchased_at,
        1,
        {},
    )


def test_the_first_copy_of_an_event_id_wins(broker, warehouse_dsn, topic, staged, customers):
    original = make_event(customers[0], 1)
    retried = original.model_copy(update={"product_name": "second copy"})
    others = [make_event(customers[1], n) for n in range(3)]
    # offsets: 0 original, 1 other, 2 retried (same batch), 3..4 others
    produce(
        broker.bootstrap,
        topic,
        [
            (None, original.to_bytes()),
            (None, others[0].to_bytes()),
            (None, retried.to_bytes()),
            (None, others[1].to_bytes()),
        ],
    )
    first = run_loader(broker, warehouse_dsn, topic)
    assert (first.loaded, first.duplicates) == (3, 1)

    # and again in a later batch, after the first copy is committed
    produce(broker.bootstrap, topic, [(None, retried.to_bytes()), (None, others[2].to_bytes())])
    second = run_loader(broker, warehouse_dsn, topic)
    assert (second.loaded, second.duplicates) == (1, 1)

    assert staged.events()[original.event_id] == 0
    assert staged.query("select product_name from staging.purchase_events where event_id = %s", original.event_id) == [
        (original.product_name,)
    ]
    assert staged.count() == 4 and staged.next_offset() == 6


def test_unknown_fields_are_kept_in_extra(broker, warehouse_dsn, topic, staged, customers):
    event = make_event(customers[0])
    raw = event.to_bytes()[:-1] + b',"coupon":"SPRING","discount":1.10,"tags":["a","b"]}'
    produce(broker.bootstrap, topic, [(None, raw)])
    assert run_loader(broker, warehouse_dsn, topic).loaded == 1
    (extra,) = staged.query("select extra::text from staging.purchase_events where event_id = %s", event.event_id)[0]
    assert json.loads(extra) == {"coupon": "SPRING", "discount": 1.1, "tags": ["a", "b"]}
    assert '"discount": 1.10' in extra  # the exact number the producer wrote, not a float's rounding


def test_two_loaders_on_one_partition_do_not_load_a_range_twice(broker, warehouse_dsn, topic, staged, customers):
    """The second loader waits for the offset row lock, sees the range is taken and moves on."""
    events = [make_event(customers[0], n) for n in range(40)]
    produce(broker.bootstrap, topic, [(None, e.to_bytes()) for e in events])

    with psycopg.connect(warehouse_dsn) as holder:
        # Hold the partition's offset row like a loader in the middle of its transaction, so that both
        # loaders below read the same range before either can write it.
        holder.execute(
            "insert into staging.kafka_offsets (kafka_topic, kafka_partition, next_offset) values (%s, 0, 0)", (topic,)
        )
        holder.commit()
        holder.execute("select 1 from staging.kafka_offsets where kafka_topic = %s for update", (topic,))
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(run_loader(broker, warehouse_dsn, topic))) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        waiting, deadline = 0, time.monotonic() + 60
        while waiting < 2 and time.monotonic() < deadline:  # both loaders have read and wait for the lock
            time.sleep(0.1)
            waiting = holder.execute(
                "select count(*) from pg_stat_activity where application_name = 'purchases-loader' "
                "and wait_event_type = 'Lock' and datname = current_database()"
            ).fetchone()[0]
        holder.rollback()
        for thread in threads:
            thread.join(60)

    assert sorted(r.loaded for r in results) == [0, 40]
    assert staged.events() == {e.event_id: offset for offset, e in enumerate(events)}
    assert staged.next_offset() == 40


def test_events_of_unknown_customers_are_rejected_not_loaded(broker, warehouse_dsn, topic, staged, customers):
    stranger = uuid.uuid4()
    good, bad = make_event(customers[0]), make_event(stranger)
    produce(broker.bootstrap, topic, [(None, good.to_bytes()), (str(stranger).encode(), bad.to_bytes())])
    result = run_loader(broker, warehouse_dsn, topic)
    assert (result.loaded, result.rejected) == (1, 1)
    [(offset, reason, raw, event_id, customer_id)] = staged.rejected()
    assert (offset, bytes(raw), event_id, customer_id) == (1, bad.to_bytes(), bad.event_id, stranger)
    assert "unknown customer" in reason


def test_a_steady_stream_is_committed_in_batches_of_bounded_age(broker, warehouse_dsn, topic, staged, customers):
    """Under a steady stream EOF and idle pauses may never come; each batch still commits within
    batch_max_seconds, so a purchase is listed within about a second instead of when the stream pauses."""
    events = [make_event(customers[0], n) for n in range(150)]
    stop = threading.Event()

    def stream():  # one record every 20 ms for 3 s: never idle for idle_seconds
        for event in events:
            if stop.is_set():
                return
            produce(broker.bootstrap, topic, [(None, event.to_bytes())])
            time.sleep(0.02)

    producer = threading.Thread(target=stream)
    producer.start()
    try:
        config = LoaderConfig(broker.bootstrap, warehouse_dsn, topic, idle_seconds=0.3, batch_max_seconds=0.5)
        result = load_partition(config, 0, window_seconds=2.5)
    finally:
        stop.set()
        producer.join()
    assert result.batches >= 3, result.as_dict()
    assert result.loaded == staged.count() > 0
