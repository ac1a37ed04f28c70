"""The drain `make down` runs before it stops the in-memory broker (purchases.drain, `python -m purchases.cli
drain`), and the log ends it waits for (purchases.broker.log_end_offsets), on a real broker of its own and
the session's real warehouse."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from loader.helpers import add_customers, create_topic, make_event, produce
from support import LOG_DIR, EmbeddedBroker, free_port

from purchases.broker import log_end_offsets
from purchases.drain import check, drain
from purchases.load import LoaderConfig, load_partition


@pytest.fixture(scope="module")
def own_broker():
    broker = EmbeddedBroker(LOG_DIR / "drain_broker.log", topics={"drain_test_warmup": 1}).start()
    yield broker
    broker.stop()


@pytest.fixture
def topic(own_broker) -> str:
    return create_topic(own_broker.bootstrap, partitions=3)


def produce_events(bootstrap: str, topic: str, customers, per_partition: dict[int, int]) -> dict[str, tuple[int, int]]:
    """Valid events into each partition; returns event_id -> (partition, offset)."""
    placed = {}
    for partition, count in per_partition.items():
        events = [make_event(customers[n % len(customers)], n) for n in range(count)]
        produce(bootstrap, topic, [(None, event.model_dump_json().encode()) for event in events], partition)
        start = len([1 for p, _ in placed.values() if p == partition])
        placed.update({str(event.event_id): (partition, start + n) for n, event in enumerate(events)})
    return placed


def staged(dsn: str, topic: str) -> list[tuple[str, int, int]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select event_id::text, kafka_partition, kafka_offset from staging.purchase_events where kafka_topic = %s",
            (topic,),
        ).fetchall()


def stored(dsn: str, topic: str) -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "select kafka_partition, next_offset from staging.kafka_offsets where kafka_topic = %s", (topic,)
            ).fetchall()
        )


def test_log_end_offsets_are_the_record_counts(own_broker, topic):
    produce(own_broker.bootstrap, topic, [(None, b"r%d" % n) for n in range(1000)], partition=0)
    produce(own_broker.bootstrap, topic, [(None, b"r%d" % n) for n in range(7)], partition=1)
    # (tansu's ListOffsets answers 1 for partition 0 here: the reason log_end_offsets reads a fetch instead)
    assert log_end_offsets(own_broker.bootstrap, topic) == {0: 1000, 1: 7, 2: 0}
    assert log_end_offsets(own_broker.bootstrap, topic, partitions=[1]) == {1: 7}


def test_drain_loads_every_partition_to_its_log_end_exactly_once(own_broker, topic, warehouse_dsn):
    customers = add_customers(warehouse_dsn, 3)
    placed = produce_events(own_broker.bootstrap, topic, customers, {0: 40, 1: 25})
    # Partition 1 is partly loaded already; then more arrives, and a record no loader can accept.
    config = LoaderConfig(own_broker.bootstrap, warehouse_dsn, topic)
    assert load_partition(config, 1, window_seconds=30, stop_when_idle=True).loaded == 25
    placed.update(
        {k: (1, 25 + o) for k, (_, o) in produce_events(own_broker.bootstrap, topic, customers, {1: 10}).items()}
    )
    produce(own_broker.bootstrap, topic, [(None, b"not json")], partition=2)
    assert check(own_broker.bootstrap, warehouse_dsn, topic).keys() == {0, 1, 2}

    said = []
    result = drain(own_broker.bootstrap, warehouse_dsn, topic, timeout=60, say=said.append)

    rows = staged(warehouse_dsn, topic)
    assert len(rows) == len(placed) == 75
    assert {event_id: (p, o) for event_id, p, o in rows} == placed
    assert stored(warehouse_dsn, topic) == {0: 40, 1: 35, 2: 1} == result.log_ends
    assert result.loaded == {0: 40, 1: 10, 2: 0} and result.duplicates == 0 and result.rejected == 1
    # It said what it waited for: which partitions, how many records.
    assert f"{topic}[0]: 40 records (offsets 0..39)" in said[0]
    assert f"{topic}[1]: 10 records (offsets 25..34)" in said[0]
    assert f"{topic}[2]: 1 records (offsets 0..0)" in said[0]
    assert check(own_broker.bootstrap, warehouse_dsn, topic) == {}
    # Nothing left: a second drain has nothing to do.
    again = drain(own_broker.bootstrap, warehouse_dsn, topic, timeout=30, say=said.append)
    assert again.loaded == {} and "nothing to drain" in said[-1]


def test_drain_beside_a_running_loader_is_still_exactly_once(own_broker, topic, warehouse_dsn):
    customers = add_customers(warehouse_dsn, 5)
    placed = produce_events(own_broker.bootstrap, topic, customers, {0: 3000, 1: 3000, 2: 3000})
    # The Airflow loader's stand-in: small batches, so it is still committing batch after batch while the
    # drain runs over the same partitions.
    slow = LoaderConfig(own_broker.bootstrap, warehouse_dsn, topic, batch_max_events=100)
    runs, failures, ended = {}, [], []

    def concurrent_loader(partition: int) -> None:
        try:
            runs[partition] = load_partition(slow, partition, window_seconds=120, stop_when_idle=True)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        ended.append(time.monotonic())

    threads = [threading.Thread(target=concurrent_loader, args=(p,)) for p in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while not any(offset > 0 for offset in stored(warehouse_dsn, topic).values()):
        assert time.monotonic() < deadline, "the concurrent loader committed nothing in 30 s"
        time.sleep(0.05)
    assert sum(stored(warehouse_dsn, topic).values()) < 9000, "the concurrent loader finished too early"

    drain_started = time.monotonic()
    result = drain(own_broker.bootstrap, warehouse_dsn, topic, timeout=120, say=lambda _: None)
    for thread in threads:
        thread.join(120)
    assert not failures, failures

    rows = staged(warehouse_dsn, topic)
    assert len(rows) == 9000 and {event_id: (p, o) for event_id, p, o in rows} == placed
    assert stored(warehouse_dsn, topic) == {0: 3000, 1: 3000, 2: 3000} == result.log_ends
    # Every record was taken by exactly one of the two loaders: none was offered twice.
    assert sum(result.loaded.values()) + sum(run.loaded for run in runs.values()) == 9000
    assert result.duplicates == 0 and all(run.duplicates == 0 for run in runs.values())
    assert max(ended) > drain_started, "the concurrent loader had finished before the drain started"


def test_drain_refuses_and_names_what_is_not_loaded_when_postgres_is_unreachable(own_broker, topic, warehouse_dsn):
    customers = add_customers(warehouse_dsn, 1)
    produce_events(own_broker.bootstrap, topic, customers, {0: 12, 2: 3})
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap,
        PURCHASES_TOPIC=topic,
        WAREHOUSE_DSN=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
    )  # nothing listens there
    started = time.monotonic()
    answer = subprocess.run(
        [sys.executable, "-m", "purchases.cli", "drain", "--timeout", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert answer.returncode != 0, answer.stdout
    assert "NOT drained after 3 s: up to 15 records" in answer.stderr, answer.stderr
    assert f"{topic}[0]: up to 12 records" in answer.stderr and f"{topic}[2]: up to 3 records" in answer.stderr
    assert f"{topic}[1]" not in answer.stderr  # empty: nothing to lose there
    assert "Connection refused" in answer.stderr or "connection" in answer.stderr.lower()
    assert took < 30, f"the drain took {took:.0f} s for a 3 s timeout"
    assert staged(warehouse_dsn, topic) == []

    # With Postgres back (the real DSN), it drains.
    ok = subprocess.run(
        [sys.executable, "-m", "purchases.cli", "drain", "--timeout", "60"],
        env=dict(env, WAREHOUSE_DSN=warehouse_dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(staged(warehouse_dsn, topic)) == 15


def test_drain_of_a_topic_the_broker_does_not_have_is_nothing_and_does_not_create_it(own_broker, warehouse_dsn):
    from confluent_kafka.admin import AdminClient

    said = []
    assert drain(own_broker.bootstrap, warehouse_dsn, "no_such_topic", timeout=10, say=said.append).log_ends == {}
    assert "has no topic no_such_topic" in said[0]
    assert (
        "no_such_topic" not in AdminClient({"bootstrap.servers": own_broker.bootstrap}).list_topics(timeout=10).topics
    )
