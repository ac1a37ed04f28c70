"""Faults with real processes: a loader SIGKILLed before COMMIT, its Postgres connection killed, the broker
down. After each, a rerun leaves every event in staging exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from purchases.load import PAUSE_BEFORE_COMMIT_ENV, BrokerUnavailable, LoaderConfig, load_partition
from purchases.processes import EmbeddedBroker

from .helpers import make_event, produce

ROOT = Path(__file__).resolve().parents[2]


def start_loader(broker, dsn, topic, marker: Path, batch_max_events: int) -> subprocess.Popen:
    env = {**os.environ, PAUSE_BEFORE_COMMIT_ENV: str(marker)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "purchases.load",
            "--bootstrap-servers",
            broker.bootstrap,
            "--dsn",
            dsn,
            "--topic",
            topic,
            "load",
            "--partition",
            "0",
            "--window",
            "60",
            "--until-idle",
            "--batch-max-events",
            str(batch_max_events),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_for_pause(process: subprocess.Popen, marker: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"loader exited ({process.returncode}) before pausing: {process.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError("loader did not reach the pause before COMMIT")
        time.sleep(0.05)
    time.sleep(0.05)  # the marker is written, then closed
    return json.loads(marker.read_text())


def loader_backend_pids(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            row[0]
            for row in conn.execute(
                "select pid from pg_stat_activity where application_name = 'purchases-loader' "
                "and datname = current_database()"
            )
        ]


def wait_until_no_loader_backend(dsn: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while loader_backend_pids(dsn):
        assert time.monotonic() < deadline, "the killed loader's backend is still there"
        time.sleep(0.1)


def test_sigkill_after_copy_before_commit_loses_nothing_and_doubles_nothing(
    broker, warehouse_dsn, topic, staged, customers, tmp_path
):
    events = [make_event(customers[n % 3], n) for n in range(300)]
    produce(broker.bootstrap, topic, [(e.kafka_key(), e.to_bytes()) for e in events])
    marker = tmp_path / "paused"

    loader = start_loader(broker, warehouse_dsn, topic, marker, batch_max_events=100)
    try:
        first = wait_for_pause(loader, marker)
        assert (first["start_offset"], first["loaded"]) == (0, 100)
        marker.unlink()  # let the first batch commit
        second = wait_for_pause(loader, marker)
        assert (second["start_offset"], second["loaded"]) == (100, 100)
        assert staged.count() == 100  # the second batch is COPYed but not committed: invisible
        os.killpg(loader.pid, signal.SIGKILL)
        loader.wait(10)
    finally:
        if loader.poll() is None:
            os.killpg(loader.pid, signal.SIGKILL)
    assert loader.returncode == -signal.SIGKILL
    wait_until_no_loader_backend(warehouse_dsn)
    assert staged.count() == 100 and staged.next_offset() == 100

    rerun = load_partition(
        LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=60, stop_when_idle=True
    )
    assert (rerun.start_offset, rerun.loaded, rerun.duplicates) == (100, 200, 0)
    assert staged.events() == {e.event_id: offset for offset, e in enumerate(events)}
    assert staged.next_offset() == 300


def test_postgres_connection_killed_before_commit_fails_the_run_and_a_rerun_is_exact(
    broker, warehouse_dsn, topic, staged, customers, tmp_path
):
    """What a Postgres restart does to a loader (its backend is terminated mid-transaction), done with
    pg_terminate_backend so the shared server keeps serving everyone else."""
    events = [make_event(customers[0], n) for n in range(150)]
    produce(broker.bootstrap, topic, [(None, e.to_bytes()) for e in events])
    marker = tmp_path / "paused"

    loader = start_loader(broker, warehouse_dsn, topic, marker, batch_max_events=100)
    try:
        wait_for_pause(loader, marker)
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            for pid in loader_backend_pids(warehouse_dsn):
                conn.execute("select pg_terminate_backend(%s)", (pid,))
        marker.unlink()  # the loader goes on to COMMIT on a dead connection
        _, stderr = loader.communicate(timeout=60)
    finally:
        if loader.poll() is None:
            os.killpg(loader.pid, signal.SIGKILL)
    assert loader.returncode != 0
    assert b"terminat" in stderr or b"server closed the connection" in stderr, stderr.decode()[-2000:]
    assert staged.count() == 0 and staged.next_offset() in (None, 0)

    rerun = load_partition(
        LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=60, stop_when_idle=True
    )
    assert rerun.loaded == 150
    assert staged.events() == {e.event_id: offset for offset, e in enumerate(events)}


def test_broker_down_fails_with_a_clear_message(warehouse_dsn, topic):
    from support import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"Kafka broker at {address} did not answer.*retried"):
        load_partition(LoaderConfig(address, warehouse_dsn, topic), 0, window_seconds=5)
    assert time.monotonic() - started < 60


def test_a_topic_that_lost_its_log_stops_the_loader_until_the_offset_is_moved_on_purpose(
    broker, warehouse_dsn, topic, staged, customers
):
    """The embedded broker keeps its log in memory: after a restart the topic is back, empty, while the
    warehouse still says 'next offset 100'. The loader must neither wait forever nor skip silently."""
    from purchases.load import LogTruncated
    from purchases.load.kafka import PartitionReader
    from purchases.load.run import main

    events = [make_event(customers[0], n) for n in range(5)]
    produce(broker.bootstrap, topic, [(None, e.to_bytes()) for e in events])
    config = LoaderConfig(broker.bootstrap, warehouse_dsn, topic, stall_check_seconds=1)
    reader = PartitionReader(config, 0)
    try:
        topic_id = reader.topic_id()  # the same topic, as far as the broker tells: only its log is shorter
    finally:
        reader.close()
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute(
            "insert into staging.kafka_offsets (kafka_topic, kafka_partition, next_offset, topic_id) "
            "values (%s, 0, 100, %s)",
            (topic, topic_id),
        )
    with pytest.raises(LogTruncated, match=r"stored next offset is 100 but the broker's log ends at 5.*rewind"):
        load_partition(config, 0, window_seconds=30)
    assert staged.count() == 0

    main(
        [
            "--bootstrap-servers",
            broker.bootstrap,
            "--dsn",
            warehouse_dsn,
            "--topic",
            topic,
            "rewind",
            "--partition",
            "0",
            "--to",
            "0",
        ]
    )
    assert load_partition(config, 0, window_seconds=30, stop_when_idle=True).loaded == 5
    assert staged.events() == {e.event_id: offset for offset, e in enumerate(events)}


def test_broker_lost_in_the_middle_of_a_run_fails_it_with_a_clear_message(warehouse_dsn, customers, tmp_path):
    import threading

    own = EmbeddedBroker(tmp_path / "broker.log", topics={"lost": 1})
    own.start()
    try:
        events = [make_event(customers[0], n) for n in range(10)]
        produce(own.bootstrap, "lost", [(None, e.to_bytes()) for e in events])
        config = LoaderConfig(own.bootstrap, warehouse_dsn, "lost", broker_down_seconds=3)
        threading.Timer(3, own.stop).start()
        with pytest.raises(BrokerUnavailable, match=f"Kafka broker at {own.bootstrap} unreachable for .*retried"):
            load_partition(config, 0, window_seconds=60)
    finally:
        own.stop()
    with psycopg.connect(warehouse_dsn) as conn:  # what was read before the broker went away is committed
        assert (
            conn.execute("select count(*) from staging.purchase_events where kafka_topic = 'lost'").fetchone()[0] == 10
        )


def test_a_recreated_topic_is_read_from_its_start_and_nothing_is_doubled(warehouse_dsn, customers, tmp_path):
    """The embedded broker keeps its log in memory: after a restart the topic comes back empty, with a new
    topic id, and new events start again at offset 0. They must be loaded, not skipped."""
    from purchases.load import load_available

    from .helpers import Staged

    own = EmbeddedBroker(tmp_path / "broker.log", topics={"reborn": 2})
    staged = Staged(warehouse_dsn, "reborn")
    before = [make_event(customers[0], n) for n in range(5)]
    after = [make_event(customers[1], n) for n in range(2)]
    own.start()
    try:
        produce(own.bootstrap, "reborn", [(None, e.to_bytes()) for e in before], partition=1)
        assert sum(r.loaded for r in load_available(own.bootstrap, warehouse_dsn, "reborn")) == 5
        own.stop()
        own.start()
        # a retried event from before the restart, then new ones: offsets 0..2 again
        produce(
            own.bootstrap, "reborn", [(None, before[0].to_bytes())] + [(None, e.to_bytes()) for e in after], partition=1
        )
        results = load_available(own.bootstrap, warehouse_dsn, "reborn")
    finally:
        own.stop()
    assert [(r.partition, r.start_offset, r.loaded, r.duplicates) for r in results] == [(0, 0, 0, 0), (1, 0, 2, 1)]
    assert set(staged.events()) == {e.event_id for e in before + after}
    assert staged.next_offset(1) == 3


def test_offsets_stored_without_a_topic_id_are_not_trusted(warehouse_dsn, customers, tmp_path):
    """A warehouse from before topic ids were kept has offsets with a NULL topic_id. If the embedded broker
    restarted since, trusting them would skip the new log's first records; they are read again instead."""
    from purchases.load import load_available

    from .helpers import Staged

    own = EmbeddedBroker(tmp_path / "broker.log", topics={"untagged": 1})
    staged = Staged(warehouse_dsn, "untagged")
    before = [make_event(customers[0], n) for n in range(4)]
    after = [make_event(customers[1], n) for n in range(3)]
    own.start()
    try:
        produce(own.bootstrap, "untagged", [(None, e.to_bytes()) for e in before])
        assert sum(r.loaded for r in load_available(own.bootstrap, warehouse_dsn, "untagged")) == 4
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            conn.execute("update staging.kafka_offsets set topic_id = null where kafka_topic = 'untagged'")
        own.stop()
        own.start()
        produce(own.bootstrap, "untagged", [(None, e.to_bytes()) for e in after])  # offsets 0..2 of a new log
        results = load_available(own.bootstrap, warehouse_dsn, "untagged")
    finally:
        own.stop()
    assert [(r.start_offset, r.loaded, r.duplicates) for r in results] == [(0, 3, 0)]
    assert set(staged.events()) == {e.event_id for e in before + after}
    assert staged.next_offset(0) == 3
