"""No gap between loader runs: a partition is handed from one loader to the next between two batches.

A steady stream of records, one loader on it, then a second loader for the same partition started while the
first is in the middle of its window (as the next DAG run's task is): the first ends after the batch in hand,
the second goes on from there. Every record is stored once, neither loader wrote while the other held the
partition, and no record waited for a loader for longer than about one batch.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from purchases.load import LoaderConfig, load_partition
from purchases.load.writer import PartitionBusy, PartitionWriter

from .helpers import make_event, produce

pytestmark = pytest.mark.slow


def loaded_at_by_offset(dsn: str, topic: str) -> dict[int, float]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select kafka_offset, extract(epoch from loaded_at)::float8 from staging.purchase_events "
            "where kafka_topic = %s",
            (topic,),
        ).fetchall()
    return dict(rows)


def test_the_next_loader_takes_the_partition_over_between_two_batches(broker, warehouse_dsn, topic, customers):
    produced_at: dict[int, float] = {}
    stop = threading.Event()

    def stream() -> None:  # one record every 20 ms: the partition is never idle for long
        n = 0
        while not stop.is_set():
            produce(broker.bootstrap, topic, [(None, make_event(customers[n % 5], n).to_bytes())])
            produced_at[n] = time.time()
            n += 1
            time.sleep(0.02)

    config = LoaderConfig(broker.bootstrap, warehouse_dsn, topic, batch_max_seconds=0.5)
    results = {}

    def loader(name: str, window: float) -> None:
        results[name] = load_partition(config, 0, window_seconds=window)

    producer = threading.Thread(target=stream)
    first = threading.Thread(target=loader, args=("first", 60))
    producer.start()
    first.start()
    time.sleep(3)
    second_asked, second_asked_wall = time.monotonic(), time.time()
    second = threading.Thread(target=loader, args=("second", 3))
    second.start()
    first.join(10)
    assert not first.is_alive(), "the first loader did not hand the partition over within 10 s"
    handover_seconds = time.monotonic() - second_asked
    second.join(30)
    stop.set()
    producer.join()
    # What the second one's window left is taken by a third, until the partition is idle.
    results["rest"] = load_partition(config, 0, window_seconds=30, stop_when_idle=True)

    first_run, second_run, rest = results["first"], results["second"], results["rest"]
    assert first_run.handed_over and not second_run.handed_over, (first_run, second_run)
    assert handover_seconds < 3, f"the handover took {handover_seconds:.1f} s (one batch is at most 0.5 s)"
    # One after the other, on the same offsets: the second started where the first stopped.
    assert second_run.start_offset == first_run.next_offset and rest.start_offset == second_run.next_offset
    assert first_run.loaded > 0 and second_run.loaded > 0
    stored = loaded_at_by_offset(warehouse_dsn, topic)
    assert sorted(stored) == list(range(len(produced_at))), "a record was lost or stored twice"
    assert first_run.duplicates == second_run.duplicates == rest.duplicates == 0
    # No record waited for a loader: while both loaders ran, each was stored within seconds of its produce.
    while_loading = [
        stored[n] - produced_at[n] for n in produced_at if produced_at[n] < second_asked_wall + 2.5 and n in stored
    ]
    assert len(while_loading) > 100, len(while_loading)
    assert max(while_loading) < 3, f"a record waited {max(while_loading):.1f} s for a loader"


def test_a_loader_that_is_not_handed_the_partition_fails_naming_the_holder(warehouse_dsn, topic):
    with (
        psycopg.connect(warehouse_dsn, autocommit=True) as holding,
        psycopg.connect(warehouse_dsn, autocommit=True) as waiting,
    ):
        holder = PartitionWriter(holding, topic, 0)
        holder.take(wait_seconds=1)
        assert not holder.successor_waits()
        started = time.monotonic()
        with pytest.raises(
            PartitionBusy, match=rf"{topic}\[0\] was not handed over within 1 s.*pid {holding.info.backend_pid}"
        ):
            PartitionWriter(waiting, topic, 0).take(wait_seconds=1)
        assert time.monotonic() - started < 5
        # Another partition, or the same partition of another topic, is not held.
        PartitionWriter(waiting, topic, 1).take(wait_seconds=1)
        PartitionWriter(waiting, topic + "_other", 0).take(wait_seconds=1)
        holder.release()
        PartitionWriter(waiting, topic, 0).take(wait_seconds=1)


def test_the_holder_sees_a_waiting_successor(warehouse_dsn, topic):
    with psycopg.connect(warehouse_dsn, autocommit=True) as holding:
        holder = PartitionWriter(holding, topic, 0)
        holder.take(wait_seconds=1)
        taken = threading.Event()

        def successor() -> None:
            with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
                PartitionWriter(conn, topic, 0).take(wait_seconds=10)
                taken.set()

        thread = threading.Thread(target=successor)
        thread.start()
        deadline = time.monotonic() + 5
        while not holder.successor_waits():
            assert time.monotonic() < deadline, "the waiting successor was not seen"
            time.sleep(0.05)
        assert not taken.is_set()
        holder.release()
        thread.join(10)
        assert taken.is_set()
