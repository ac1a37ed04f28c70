"""Replaying rejected records after a fix loads each of them once, however often it is run."""

from __future__ import annotations

import uuid

import psycopg

from purchases.load import LoaderConfig, load_partition
from purchases.load.replay import replay

from .helpers import make_event, produce


def test_replay_loads_records_that_pass_now_and_never_doubles(broker, warehouse_dsn, topic, staged, customers):
    late_customer = uuid.uuid4()
    early = [make_event(late_customer, n) for n in range(3)]
    broken = b'{"not": "an event"}'
    produce(
        broker.bootstrap, topic, [(None, e.to_bytes()) for e in early] + [(None, broken), (None, early[0].to_bytes())]
    )
    result = load_partition(
        LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=30, stop_when_idle=True
    )
    assert (result.loaded, result.rejected) == (0, 5)

    # Before the fix, nothing passes; a dry run never changes anything.
    assert replay(warehouse_dsn, topic=topic).loaded == 0
    with psycopg.connect(warehouse_dsn) as conn:  # the fix: the customer exists now
        conn.execute(
            "insert into app.customers (customer_id, username, password_hash) values (%s, %s, 'x')",
            (late_customer, f"late-{late_customer}"),
        )
    dry = replay(warehouse_dsn, reason_contains="unknown customer", topic=topic, dry_run=True)
    assert (dry.examined, dry.loaded, dry.already_loaded) == (4, 3, 1)
    assert staged.count() == 0

    done = replay(warehouse_dsn, reason_contains="UNKNOWN CUSTOMER", topic=topic)
    assert (done.examined, done.loaded, done.already_loaded, done.still_rejected) == (4, 3, 1, 0)
    assert set(staged.events()) == {e.event_id for e in early}
    # the first copy (lowest offset) is the one kept
    assert staged.events()[early[0].event_id] == 0

    again = replay(warehouse_dsn, topic=topic)
    assert (again.examined, again.loaded, again.still_rejected) == (1, 0, 1)  # only the broken record is left
    assert staged.count() == 3
    replayed = staged.query(
        "select kafka_offset from staging.purchase_events_rejected where kafka_topic = %s "
        "and replayed_at is not null order by 1",
        topic,
    )
    assert [r[0] for r in replayed] == [0, 1, 2, 4]
