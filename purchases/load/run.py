"""One loader run on one partition: micro-batches for a time window, each committed exactly once; and the CLI.

    python -m purchases.load load --partition 0 --window 20     # one partition, 20 s
    python -m purchases.load load --partition 0 --until-idle    # until caught up
    python -m purchases.load available                          # every partition, until caught up
    python -m purchases.load rewind --partition 0 --to 0        # move a stored offset deliberately

It takes plain settings (bootstrap servers, a DSN or a connection factory), so it runs the same inside an
Airflow task, from the command line and in benchmarks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from purchases.load.config import LoaderConfig
from purchases.load.kafka import LoaderError, PartitionReader, TopicRecreated
from purchases.load.staging import lock_stored_offset, record_log_end, set_stored_offset, write_batch
from purchases.load.writer import PartitionWriter

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What one loader run did on one partition."""

    topic: str
    partition: int
    start_offset: int
    next_offset: int
    batches: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0
    # Ended because another loader asked for the partition (the next DAG run's task), not at its window's end.
    handed_over: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def start_offset(conn: psycopg.Connection, reader: PartitionReader, topic_id: str | None) -> int:
    """The stored next offset, after checking it belongs to the topic the broker has now.

    If the topic was recreated (its id changed: the embedded broker keeps topics in memory and comes back
    from a restart with new, empty ones), the stored offsets point into a log that no longer exists: the
    new log is read from its start. So is a log whose offsets were stored without a topic id (by a version
    before topic ids were kept). event_ids already loaded stay deduplicated as always.
    """
    topic, partition = reader.config.topic, reader.partition
    with conn.transaction():
        stored = lock_stored_offset(conn, topic, partition)
        (stored_id,) = conn.execute(
            "select topic_id from staging.kafka_offsets where kafka_topic = %s and kafka_partition = %s",
            (topic, partition),
        ).fetchone()
        if topic_id is None or stored_id == topic_id:
            return stored
        if stored_id is not None:
            new_start = reader.log_start()
            log.warning(
                "%s[%d]: the topic was recreated (id %s -> %s); its stored next offset %d belongs to the "
                "old log, reading the new one from offset %d",
                topic,
                partition,
                stored_id,
                topic_id,
                stored,
                new_start,
            )
            stored = new_start
        elif stored > 0:
            # Stored before topic ids were kept (an upgraded warehouse): whose log it points into is unknown.
            new_start = reader.log_start()
            log.warning(
                "%s[%d]: the stored next offset %d has no topic id, so it may belong to an older log; "
                "reading this one from offset %d (events already loaded are skipped as duplicates)",
                topic,
                partition,
                stored,
                new_start,
            )
            stored = new_start
        conn.execute(
            "update staging.kafka_offsets set topic_id = %s, next_offset = %s, updated_at = now() "
            "where kafka_topic = %s and kafka_partition = %s",
            (topic_id, stored, topic, partition),
        )
        return stored


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, application_name="purchases-loader")


class _LogEndRecorder:
    """Records the log end the loader saw, when it changed, at most once per `every` seconds."""

    def __init__(self, conn: psycopg.Connection, topic: str, partition: int, every: float):
        self.conn, self.topic, self.partition, self.every = conn, topic, partition, every
        self.recorded: int | None = None
        self.pending: int | None = None
        self.at = 0.0

    def saw(self, log_end: int | None) -> None:
        if log_end is not None and log_end != self.recorded:
            self.pending = log_end
        if self.pending is not None and time.monotonic() - self.at >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            record_log_end(self.conn, self.topic, self.partition, self.pending)
            self.recorded, self.pending, self.at = self.pending, None, time.monotonic()


def load_partition(
    config: LoaderConfig,
    partition: int,
    connection_factory: Callable[[], psycopg.Connection] | None = None,
    window_seconds: float | None = None,
    stop_when_idle: bool = False,
) -> RunResult:
    """Load micro-batches from one partition for `window_seconds`, committing each. Returns what it did.

    It first takes the partition from its previous loader, and ends early, after the batch in hand, when a
    next one asks for it (writer.py). `stop_when_idle` ends the run at the first EOF with nothing new (tests,
    benchmarks, catch-up).
    """
    window = config.window_seconds if window_seconds is None else window_seconds
    started = time.monotonic()
    conn = connection_factory() if connection_factory else connect(config.dsn)
    conn.autocommit = True  # transactions are explicit: conn.transaction()
    conn.execute("set application_name = 'purchases-loader'")  # visible in pg_stat_activity
    # A batch's transaction only ever waits on Postgres itself; if its client vanishes without closing the
    # socket, this frees the partition's offset lock for the next loader.
    conn.execute("set idle_in_transaction_session_timeout = '120s'")
    lookup = connection_factory() if connection_factory else connect(config.dsn)
    lookup.autocommit = True
    lookup.execute("set application_name = 'purchases-loader-lookup'")
    reader = PartitionReader(config, partition)
    writer = PartitionWriter(conn, config.topic, partition)
    log_ends = _LogEndRecorder(lookup, config.topic, partition, config.log_end_record_seconds)
    try:
        reader.check_broker()
        topic_id = reader.topic_id()  # the consumer is ready before the wait: the takeover costs one seek
        writer.take(config.takeover_wait_seconds)
        start = start_offset(conn, reader, topic_id)
        result = RunResult(config.topic, partition, start, start)
        reader.seek(start)
        while time.monotonic() - started < window:
            if writer.successor_waits():
                result.handed_over = True
                log.info(
                    "%s[%d]: handed over to the next loader at offset %d", config.topic, partition, result.next_offset
                )
                break
            read = reader.read_batch()
            log_ends.saw(read.log_end)
            if not read.messages:
                if read.eof and stop_when_idle:
                    break
                continue
            if topic_id is not None and reader.topic_id() != topic_id:
                # Checked after reading: a record from a recreated topic is never stored at an old offset.
                raise TopicRecreated(
                    f"{config.topic} was recreated while partition {partition} was being loaded; "
                    f"the next run reads the new topic from its start"
                )
            batch = write_batch(conn, config.topic, partition, result.next_offset, read.messages, lookup, topic_id)
            if batch.stale:
                log.warning(
                    "%s[%d]: stored offset moved to %d by another loader; re-reading from there",
                    config.topic,
                    partition,
                    batch.next_offset,
                )
                reader.seek(batch.next_offset)
                result.next_offset = batch.next_offset
                continue
            result.batches += 1
            result.loaded += batch.loaded
            result.duplicates += batch.duplicates
            result.rejected += batch.rejected
            result.next_offset = batch.next_offset
            log.info(
                "%s[%d] offsets %d..%d (batch %d): %d loaded, %d duplicate, %d rejected",
                config.topic,
                partition,
                batch.start_offset,
                batch.next_offset - 1,
                batch.batch_id,
                batch.loaded,
                batch.duplicates,
                batch.rejected,
            )
            if read.eof and stop_when_idle:
                break
        log_ends.flush()
        result.seconds = round(time.monotonic() - started, 3)
        return result
    finally:
        reader.close()
        conn.close()
        lookup.close()


def load_available(
    bootstrap_servers: str, dsn: str, topic: str | None = None, window_seconds: float = 600
) -> list[RunResult]:
    """One-shot: load what the broker holds now from every partition of the topic, then return."""
    from purchases.broker import partitions_of
    from purchases.settings import Settings

    config = LoaderConfig(bootstrap_servers, dsn, topic or Settings().purchases_topic)
    return [
        load_partition(config, partition, window_seconds=window_seconds, stop_when_idle=True)
        for partition in partitions_of(bootstrap_servers, config.topic)
    ]


def rewind(dsn: str, topic: str, partition: int, offset: int) -> int:
    """Set the stored next offset of a partition (after a topic was recreated). Returns the old one."""
    with psycopg.connect(dsn) as conn:
        old = lock_stored_offset(conn, topic, partition)
        set_stored_offset(conn, topic, partition, offset)
    return old


def main(argv: list[str] | None = None) -> None:
    from purchases.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m purchases.load", description="Load purchase events from Kafka into staging, exactly once."
    )
    parser.add_argument("--bootstrap-servers", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--dsn", default=settings.dsn_as("loader"))
    parser.add_argument("--topic", default=settings.purchases_topic)
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="load one partition for a time window")
    load.add_argument("--partition", type=int, required=True)
    load.add_argument("--window", type=float, default=20.0, help="seconds to keep loading (default 20)")
    load.add_argument("--batch-max-events", type=int, default=LoaderConfig.batch_max_events)
    load.add_argument("--until-idle", action="store_true", help="stop at the first EOF with nothing new")
    commands.add_parser("available", help="load what the broker holds now, every partition, then exit")
    back = commands.add_parser("rewind", help="set a partition's stored next offset (after a topic reset)")
    back.add_argument("--partition", type=int, required=True)
    back.add_argument("--to", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "load":
        config = LoaderConfig(args.bootstrap_servers, args.dsn, args.topic, batch_max_events=args.batch_max_events)
        try:
            result = load_partition(config, args.partition, window_seconds=args.window, stop_when_idle=args.until_idle)
        except LoaderError as exc:
            sys.exit(f"loader: {exc}")
        print(json.dumps(result.as_dict()))
    elif args.command == "available":
        try:
            results = load_available(args.bootstrap_servers, args.dsn, args.topic)
        except LoaderError as exc:
            sys.exit(f"loader: {exc}")
        print(json.dumps([r.as_dict() for r in results]))
    elif args.command == "rewind":
        old = rewind(args.dsn, args.topic, args.partition, args.to)
        print(f"{args.topic}[{args.partition}]: next offset {old} -> {args.to}")
