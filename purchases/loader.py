"""The exactly-once loader: Kafka partition -> `staging.purchase_events`, one Postgres transaction per batch.

How a batch is made exactly once (README.md, "Loading", has the long version):

1. The partition is `assign()`ed at the offset stored in `staging.kafka_offsets` (no consumer group: the
   warehouse, not the broker, owns progress) and read until partition EOF, the batch cap or an idle pause.
2. In ONE transaction: lock the partition's offset row (`select ... for update`) and check that it still
   says where the batch starts (another loader of the same partition may have moved it: then the batch is
   dropped and reading restarts there); COPY the valid events into staging (an event_id already present is
   ignored, the first copy wins); put the rejected records, raw and with the reason, into
   `staging.purchase_events_rejected`; store the offset after the batch; commit.

A crash anywhere before the commit leaves nothing behind and the offset unchanged, so the next run reads
the same records again; after the commit everything is there and the offset has moved past it.

This module takes plain settings (bootstrap servers, a DSN or a connection factory) so it runs the same
inside an Airflow task, from the command line (`python -m purchases.loader --help`) and in benchmarks.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import errors as pg_errors
from pydantic import ValidationError

from purchases.contract import (
    CURRENCY_PATTERN,
    FUTURE_TOLERANCE,
    MAX_DESCRIPTION,
    MAX_EVENT_BYTES,
    MAX_PRODUCT_NAME,
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    SCHEMA_VERSION,
    TOPIC,
    InvalidEvent,
    PurchaseEvent,
    parse_event,
    utcnow,
)

log = logging.getLogger(__name__)

# Test hook: when set to a file path, the loader writes that file after the batch is written (COPY done,
# offset updated) and then waits before COMMIT until the file is removed, so a test can SIGKILL it at the
# worst moment, or let it commit while another loader waits for the partition's lock.
PAUSE_BEFORE_COMMIT_ENV = "PURCHASES_LOADER_PAUSE_BEFORE_COMMIT"

# Records validated and sent to COPY at a time: Postgres stores one chunk while the next is validated.
CHUNK = 2_000
STAGING_COLUMNS = ("event_id", "customer_id", "product_name", "description", "quantity", "unit_price",
                   "currency", "purchased_at", "schema_version", "extra", "kafka_topic", "kafka_partition",
                   "kafka_offset")
REJECTED_COLUMNS = ("event_id", "customer_id", "reason", "raw_key", "raw_value", "kafka_topic",
                    "kafka_partition", "kafka_offset")
REJECTED_COPY_TYPES = ("uuid", "uuid", "text", "bytea", "bytea", "text", "int4", "int8")


class LoaderError(RuntimeError):
    """A condition the loader cannot resolve by itself; the message says what and what to do."""


class BrokerUnavailable(LoaderError):
    pass


class LogTruncated(LoaderError):
    pass


class TopicRecreated(LoaderError):
    pass


@dataclass(frozen=True)
class LoaderConfig:
    bootstrap_servers: str
    dsn: str | None = None
    topic: str = TOPIC
    # Extra librdkafka settings (security, timeouts) from the Airflow connection; never group settings.
    kafka_config: dict[str, Any] = field(default_factory=dict)
    batch_max_events: int = 20_000
    # A batch is committed once the partition is caught up (EOF), the cap is hit, or no record came for this
    # long: the last bound keeps a trickle of events from waiting for a full batch.
    idle_seconds: float = 0.3
    # ...or once it has been collecting for this long: under a steady stream EOF and idle pauses may never
    # come, and without this bound one batch took in two minutes of purchases before committing any.
    batch_max_seconds: float = 1.0
    # How long one loader run keeps taking micro-batches before it ends (the DAG run then ends and the next
    # continuous run starts).
    window_seconds: float = 20.0
    # With no EOF and no record for this long right after assign(), the loader checks whether the broker's
    # log still reaches the stored offset (an in-memory broker loses its log on restart).
    stall_check_seconds: float = 5.0
    # How long every broker of the cluster may be unreachable before the run fails.
    broker_down_seconds: float = 15.0


@dataclass
class BatchResult:
    partition: int
    start_offset: int
    next_offset: int
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    stale: bool = False  # another loader had moved the stored offset: nothing was written


@dataclass
class RunResult:
    """What one loader run did on one partition; the DAG passes it to the quality gate."""

    topic: str
    partition: int
    start_offset: int
    next_offset: int
    batches: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    # Transaction start of the first committed batch: a lower bound on the loaded rows' loaded_at.
    loaded_since: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- validation -------------------------------------------------------------------------------------------

def validate(raw: bytes | None, now: datetime) -> PurchaseEvent:
    """The contract's verdict on a record (`parse_event`), with a fast path for well-formed events.

    `PurchaseEvent.model_validate_json(strict=True)` is 3-4x faster than parse_event's json.loads +
    model_validate. Strict mode makes it accept a subset of what parse_event accepts (no "1" for 1), and it
    only accepts here when parse_event's own extra checks pass too; anything else (bad records, records
    with unknown extra fields, whose values must keep their exact JSON numbers) goes through parse_event
    itself, which gives the authoritative verdict and reason. tests/loader/test_validation.py checks both
    paths agree.
    """
    if raw is not None and len(raw) <= MAX_EVENT_BYTES:
        try:
            event = PurchaseEvent.model_validate_json(raw, strict=True)
        except ValidationError:
            event = None
        if (event is not None and not event.model_extra and event.schema_version == SCHEMA_VERSION
                and event.purchased_at <= now + FUTURE_TOLERANCE):
            return event
    return parse_event(raw, now)


def _json_text(value: Any, where: str) -> str:
    """Exact JSON text for an extra field's value (Decimal numbers keep the digits the producer wrote).

    Raises ValueError for what Postgres' jsonb cannot store: NaN/Infinity, NUL characters.
    """
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, str)):
        text = json.dumps(value)
        if "\\u0000" in text:
            raise ValueError(f"{where}: contains a NUL character, which Postgres cannot store")
        return text
    if isinstance(value, (Decimal, float)):
        if not (value.is_finite() if isinstance(value, Decimal) else value == value and abs(value) != float("inf")):
            raise ValueError(f"{where}: {value} (NaN or Infinity) is not a JSON number; Postgres jsonb cannot "
                             f"store it")
        return str(value) if isinstance(value, Decimal) else repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_json_text(item, f"{where}[{i}]") for i, item in enumerate(value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_text(str(k), where)}:{_json_text(v, f'{where}.{k}')}"
                              for k, v in value.items()) + "}"
    raise ValueError(f"{where}: {type(value).__name__} is not JSON")


def _storable_extra(event: PurchaseEvent) -> str:
    """The event's unknown fields as jsonb text; InvalidEvent if Postgres could not store the event."""
    for name in ("product_name", "description"):
        value = getattr(event, name)
        if value is not None and "\x00" in value:
            raise InvalidEvent(f"{name}: contains a NUL character, which Postgres cannot store",
                               event.event_id, event.customer_id)
    if not event.model_extra:
        return "{}"
    try:
        return _json_text(event.model_extra, "extra")
    except ValueError as exc:
        raise InvalidEvent(str(exc), event.event_id, event.customer_id) from None


# A valid record, ready for COPY: (event_id, customer_id (both canonical text), offset, its COPY text line
# with the STAGING_COLUMNS values). The ids and offset are kept aside for the customer check and rejections.
Row = tuple

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _line_tail(topic: str, partition: int) -> str:
    """The end of every line of one partition's batch, up to its offset: topic and partition."""
    return f"\t{_copy_text(topic)}\t{partition}\t"


def row_from_event(event: PurchaseEvent, extra: str, topic: str, partition: int, offset: int) -> Row:
    event_id, customer_id = str(event.event_id), str(event.customer_id)
    line = (f"{event_id}\t{customer_id}\t{_copy_text(event.product_name)}\t{_copy_text(event.description)}\t"
            f"{event.quantity}\t{event.unit_price}\t{event.currency}\t{event.purchased_at.isoformat()}\t"
            f"{event.schema_version}\t{_copy_text(extra)}{_line_tail(topic, partition)}{offset}\n")
    return event_id, customer_id, offset, line


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The common shape of a valid event, decoded in C (types only: msgspec's own patterns are slow)."""

    event_id: str
    customer_id: str
    product_name: str
    quantity: int
    unit_price: str
    currency: str
    purchased_at: str
    description: str | None = None
    schema_version: int = SCHEMA_VERSION


_wire_decoder = msgspec.json.Decoder(_WireEvent)
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# event_id|customer_id|unit_price|currency|purchased_at, checked with one fullmatch ("|" occurs in none):
# canonical UUIDs, a plain decimal with at most 2 places, the contract's currency pattern, RFC 3339 times.
_WIRE_TEXT = re.compile(
    rf"{_UUID}\|{_UUID}\|(0|[1-9][0-9]{{0,6}})(\.[0-9]{{1,2}})?\|[A-Z]{{3}}\|"
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")
assert CURRENCY_PATTERN == "^[A-Z]{3}$", "the fast path's currency pattern must follow the contract's"


def _fast_row(raw: bytes | None, now: datetime, tail: str, offset: int) -> Row | None:
    """The row of a plainly valid event (the shape the API writes), or None: then the full path decides.

    Only accepts what `parse_event` accepts, with the same values (tests/loader/test_validation.py checks
    both on a corpus of edge cases); anything unusual (numbers for prices, extra fields, odd date forms)
    returns None and goes through pydantic and the contract.
    """
    if raw is None or len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        wire = _wire_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None
    name, description = wire.product_name, wire.description
    if (wire.schema_version != SCHEMA_VERSION or not 1 <= wire.quantity <= MAX_QUANTITY
            or not 1 <= len(name) <= MAX_PRODUCT_NAME or "\x00" in name
            or (description is not None and (len(description) > MAX_DESCRIPTION or "\x00" in description))
            or _WIRE_TEXT.fullmatch(f"{wire.event_id}|{wire.customer_id}|{wire.unit_price}|{wire.currency}|"
                                    f"{wire.purchased_at}") is None
            or not 0 < Decimal(wire.unit_price) <= MAX_UNIT_PRICE):
        return None
    try:
        purchased_at = datetime.fromisoformat(wire.purchased_at)
    except ValueError:  # e.g. February 30th
        return None
    if purchased_at > now + FUTURE_TOLERANCE:
        return None
    # purchased_at goes to Postgres as written: the pattern above leaves only RFC 3339 forms it reads alike.
    description = "\\N" if description is None else description.translate(_COPY_ESCAPES)
    return (wire.event_id, wire.customer_id, offset,
            f"{wire.event_id}\t{wire.customer_id}\t{name.translate(_COPY_ESCAPES)}\t{description}\t"
            f"{wire.quantity}\t{wire.unit_price}\t{wire.currency}\t{wire.purchased_at}\t{SCHEMA_VERSION}\t{{}}"
            f"{tail}{offset}\n")


def event_row(raw: bytes | None, now: datetime, topic: str, partition: int, offset: int) -> Row:
    """The staging row for a record, or InvalidEvent with the contract's reason."""
    return _fast_row(raw, now, _line_tail(topic, partition), offset) or _full_row(raw, now, topic, partition, offset)


def _full_row(raw: bytes | None, now: datetime, topic: str, partition: int, offset: int) -> Row:
    event = validate(raw, now)
    return row_from_event(event, _storable_extra(event), topic, partition, offset)


@dataclass
class _Sorted:
    valid: list[Row]
    rejected: list[tuple[str, uuid.UUID | None, uuid.UUID | None, Message]]


def _sort_records(messages: Sequence[Message], now: datetime, topic: str, partition: int) -> _Sorted:
    valid, rejected = [], []
    tail = _line_tail(topic, partition)
    for message in messages:
        raw, offset = message.value(), message.offset()
        row = _fast_row(raw, now, tail, offset)
        if row is None:
            try:
                row = _full_row(raw, now, topic, partition, offset)
            except InvalidEvent as exc:
                rejected.append((exc.reason, exc.event_id, exc.customer_id, message))
                continue
        valid.append(row)
    return _Sorted(valid, rejected)


# --- Kafka --------------------------------------------------------------------------------------------------

def consumer_settings(config: LoaderConfig) -> dict[str, Any]:
    settings = {key: value for key, value in config.kafka_config.items()
                if not key.startswith("group.") and key not in ("enable.auto.commit", "auto.offset.reset")}
    settings.update({
        "bootstrap.servers": config.bootstrap_servers,
        # assign() only: no group join (slow on tansu), no offsets committed to the broker.
        "group.id": "purchases-loader-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        # Out of range means the log no longer holds the stored offset: stop rather than skip or re-read.
        "auto.offset.reset": "error",
        # Memory stays bounded by the batch cap plus this prefetch queue.
        "queued.max.messages.kbytes": 16_384,
        "fetch.wait.max.ms": 100,
    })
    return settings


class PartitionReader:
    """A consumer assigned to one partition at an explicit offset, read in bounded batches."""

    def __init__(self, config: LoaderConfig, partition: int):
        self.config = config
        self.partition = partition
        self._broker_errors: list[KafkaError] = []
        self._all_down_since: float | None = None
        settings = consumer_settings(config)
        settings["error_cb"] = self._on_error
        self.consumer = Consumer(settings)
        self.position: int | None = None
        self._admin: AdminClient | None = None
        self._eof_seen = False
        self._assigned_at = 0.0

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._all_down_since = self._all_down_since or time.monotonic()
        self._broker_errors.append(error)
        del self._broker_errors[:-5]

    def check_broker(self, timeout: float = 10.0) -> None:
        """Fail fast, with the address, when the broker cannot be reached or lacks the partition."""
        try:
            metadata = self.consumer.list_topics(self.config.topic, timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"Kafka broker at {self.config.bootstrap_servers} did not answer within {timeout:.0f} s "
                f"({exc.args[0]}); is it running? The task is retried.") from None
        topic = metadata.topics.get(self.config.topic)
        if topic is None or topic.error is not None:
            raise LoaderError(f"topic {self.config.topic!r} is not on the broker at "
                              f"{self.config.bootstrap_servers}: {topic.error if topic else 'missing'}")
        if self.partition not in topic.partitions:
            raise LoaderError(f"topic {self.config.topic!r} has no partition {self.partition} "
                              f"(it has {sorted(topic.partitions)})")

    def topic_id(self) -> str | None:
        """The topic's id (changes when the topic is recreated); None if the broker does not tell."""
        if self._admin is None:
            settings = {key: value for key, value in consumer_settings(self.config).items()
                        if key in ("bootstrap.servers",) or key.startswith(("security.", "sasl.", "ssl."))}
            self._admin = AdminClient(settings)
        try:
            description = self._admin.describe_topics(TopicCollection([self.config.topic]))[self.config.topic].result(10)
        except KafkaException as exc:
            raise BrokerUnavailable(f"Kafka broker at {self.config.bootstrap_servers} could not describe topic "
                                    f"{self.config.topic!r} ({exc.args[0]}); the task is retried.") from None
        return str(description.topic_id) if description.topic_id else None

    def log_start(self) -> int:
        low, _ = self.consumer.get_watermark_offsets(TopicPartition(self.config.topic, self.partition), timeout=10,
                                                     cached=False)
        return max(low, 0)

    def seek(self, offset: int) -> None:
        self.consumer.assign([TopicPartition(self.config.topic, self.partition, offset)])
        self.position = offset
        self._eof_seen = False
        self._assigned_at = time.monotonic()

    def read_batch(self) -> tuple[list[Message], bool]:
        """Records from the current position: until EOF, the cap, an idle pause or batch_max_seconds.
        Returns (records, eof)."""
        cap = self.config.batch_max_events
        messages: list[Message] = []
        eof = False
        last_record_at = started = time.monotonic()
        while len(messages) < cap and time.monotonic() - started < self.config.batch_max_seconds:
            got = self.consumer.consume(min(cap - len(messages), 5_000), timeout=0.05)
            for message in got:
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    eof = True
                else:
                    self._raise_for(error)
            if got and any(m.error() is None for m in got):
                last_record_at = time.monotonic()
                self._all_down_since = None
            if eof or time.monotonic() - last_record_at > self.config.idle_seconds:
                break
        if messages:
            self.position = messages[-1].offset() + 1
        if eof:
            self._eof_seen = True
        self._check_health(bool(messages))
        return messages, eof

    def _raise_for(self, error: KafkaError) -> None:
        if error.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
            raise LogTruncated(
                f"{self.config.topic}[{self.partition}]: the broker no longer has offset {self.position} "
                f"({error.str()}). The topic was recreated or truncated. Check what happened, then move the "
                f"stored offset deliberately: python -m purchases.loader rewind --partition {self.partition} "
                f"--to OFFSET")
        if error.fatal():
            raise KafkaException(error)
        log.warning("%s[%d]: broker error, retrying: %s", self.config.topic, self.partition, error.str())

    def _check_health(self, got_records: bool) -> None:
        now = time.monotonic()
        if self._all_down_since is not None and now - self._all_down_since > self.config.broker_down_seconds:
            last = self._broker_errors[-1].str() if self._broker_errors else "no answer"
            raise BrokerUnavailable(
                f"Kafka broker at {self.config.bootstrap_servers} unreachable for "
                f"{now - self._all_down_since:.0f} s ({last}); the task is retried.")
        if (not got_records and not self._eof_seen
                and now - self._assigned_at > self.config.stall_check_seconds):
            self._check_log_reaches_position()
            self._assigned_at = now  # check again only after another quiet stretch

    def _check_log_reaches_position(self) -> None:
        # Kafka answers a fetch past the log end with OFFSET_OUT_OF_RANGE; tansu answers with nothing, so
        # ask for the true end: read from the (possibly low) reported watermark until EOF, which is exact.
        tp = TopicPartition(self.config.topic, self.partition)
        low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        probe = Consumer({**consumer_settings(self.config), "auto.offset.reset": "latest"})
        try:
            probe.assign([TopicPartition(self.config.topic, self.partition, max(low, high - 1, 0))])
            deadline = time.monotonic() + 10
            log_end = None
            while log_end is None and time.monotonic() < deadline:
                for message in probe.consume(1000, timeout=0.2):
                    error = message.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        log_end = message.offset()
        finally:
            probe.close()
        if log_end is not None and self.position is not None and log_end < self.position:
            raise LogTruncated(
                f"{self.config.topic}[{self.partition}]: the stored next offset is {self.position} but the "
                f"broker's log ends at {log_end}. The topic was recreated or truncated (the embedded broker "
                f"keeps its log in memory and loses it on restart). Check what happened, then move the "
                f"stored offset deliberately: python -m purchases.loader rewind --partition {self.partition} "
                f"--to {log_end if log_end == 0 else 'OFFSET'}")

    def close(self) -> None:
        self.consumer.close()
        self._admin = None  # destroyed with its last reference: no client left retrying a gone broker


# --- Postgres -----------------------------------------------------------------------------------------------

def _lock_stored_offset(conn: psycopg.Connection, topic: str, partition: int) -> int:
    conn.execute("insert into staging.kafka_offsets (kafka_topic, kafka_partition, next_offset) "
                 "values (%s, %s, 0) on conflict do nothing", (topic, partition))
    row = conn.execute("select next_offset from staging.kafka_offsets "
                       "where kafka_topic = %s and kafka_partition = %s for update", (topic, partition)).fetchone()
    return row[0]


def start_offset(conn: psycopg.Connection, reader: PartitionReader, topic_id: str | None) -> int:
    """The stored next offset, after checking it belongs to the topic the broker has now.

    If the topic was recreated (its id changed: the embedded broker keeps topics in memory and comes back
    from a restart with new, empty ones), the stored offsets point into a log that no longer exists: the
    new log is read from its start. So is a log whose offsets were stored without a topic id (by a version
    before topic ids were kept). event_ids already loaded stay deduplicated as always.
    """
    topic, partition = reader.config.topic, reader.partition
    with conn.transaction():
        stored = _lock_stored_offset(conn, topic, partition)
        (stored_id,) = conn.execute("select topic_id from staging.kafka_offsets where kafka_topic = %s "
                                    "and kafka_partition = %s", (topic, partition)).fetchone()
        if topic_id is None or stored_id == topic_id:
            return stored
        if stored_id is not None:
            new_start = reader.log_start()
            log.warning("%s[%d]: the topic was recreated (id %s -> %s); its stored next offset %d belongs to the "
                        "old log, reading the new one from offset %d", topic, partition, stored_id, topic_id,
                        stored, new_start)
            stored = new_start
        elif stored > 0:
            # Stored before topic ids were kept (an upgraded warehouse): whose log it points into is unknown.
            new_start = reader.log_start()
            log.warning("%s[%d]: the stored next offset %d has no topic id, so it may belong to an older log; "
                        "reading this one from offset %d (events already loaded are skipped as duplicates)",
                        topic, partition, stored, new_start)
            stored = new_start
        conn.execute("update staging.kafka_offsets set topic_id = %s, next_offset = %s, updated_at = now() "
                     "where kafka_topic = %s and kafka_partition = %s", (topic_id, stored, topic, partition))
        return stored


def stored_offset(conn: psycopg.Connection, topic: str, partition: int) -> int:
    row = conn.execute("select next_offset from staging.kafka_offsets where kafka_topic = %s "
                       "and kafka_partition = %s", (topic, partition)).fetchone()
    return row[0] if row else 0


def _known_customers(conn: psycopg.Connection, customer_ids: Iterable[str]) -> set[str]:
    """Which of these customer ids (canonical text) are in app.customers."""
    wanted = list(set(customer_ids))
    if not wanted:
        return set()
    rows = conn.execute("select customer_id::text from app.customers where customer_id = any(%s::uuid[])", (wanted,))
    return {row[0] for row in rows}


def _copy_staging_rows(conn: psycopg.Connection, table: str, row_chunks: Iterable[Sequence[Row]]) -> None:
    """COPY in text format, lines built here: several times cheaper per row than psycopg's write_row.

    Chunks are sent as they come, so Postgres stores one chunk while the next is being validated.
    """
    with conn.cursor() as cursor:
        with cursor.copy(f"copy {table} ({', '.join(STAGING_COLUMNS)}) from stdin") as copy:
            for rows in row_chunks:
                if rows:
                    copy.write("".join(row[3] for row in rows))


def _copy(conn: psycopg.Connection, table: str, columns: Sequence[str], types: Sequence[str], rows) -> None:
    with conn.cursor() as cursor:
        with cursor.copy(f"copy {table} ({', '.join(columns)}) from stdin (format binary)") as copy:
            copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)


def _insert_events(conn: psycopg.Connection, row_chunks: Iterable[Sequence[Row]]) -> tuple[int, int]:
    """COPY rows into staging, ignoring event_ids already there. Returns (rows offered, rows inserted)."""
    sent: list[Row] = []

    def remembered():
        for rows in row_chunks:
            sent.extend(rows)
            yield rows

    chunks = remembered()
    # Fast path: straight COPY into the table. A duplicate event_id (rare: a producer retry) aborts it, and
    # the savepoint lets the batch go the slower way: COPY into a temp table, insert ... on conflict do nothing.
    try:
        with conn.transaction():
            _copy_staging_rows(conn, "staging.purchase_events", chunks)
        return len(sent), len(sent)
    except pg_errors.UniqueViolation:
        for _ in chunks:  # the error can come before every chunk was produced
            pass
    rows = sent
    conn.execute("create temp table if not exists purchase_events_batch "
                 "(like staging.purchase_events including defaults) on commit delete rows")
    conn.execute("alter table purchase_events_batch add column if not exists batch_position bigserial")
    _copy_staging_rows(conn, "purchase_events_batch", [rows])
    # Within the batch, the first record (lowest offset) wins too.
    cursor = conn.execute(f"""
        insert into staging.purchase_events ({', '.join(STAGING_COLUMNS)})
        select distinct on (event_id) {', '.join(STAGING_COLUMNS)}
          from purchase_events_batch order by event_id, batch_position
        on conflict (event_id) do nothing""")
    return len(rows), cursor.rowcount


def _pause_before_commit_for_tests(batch: BatchResult) -> None:
    marker = os.environ.get(PAUSE_BEFORE_COMMIT_ENV)
    if not marker:
        return
    with open(marker, "w") as f:
        json.dump(asdict(batch), f)
    log.warning("test hook %s: batch written, waiting before COMMIT until %s is removed",
                PAUSE_BEFORE_COMMIT_ENV, marker)
    while os.path.exists(marker):
        time.sleep(0.05)


def write_batch(conn: psycopg.Connection, topic: str, partition: int, start_offset: int,
                messages: Sequence[Message], lookup: psycopg.Connection) -> BatchResult:
    """One transaction: check the stored offset, COPY valid events, keep rejected ones, move the offset.

    `lookup` is a second connection for customer look-ups, which cannot share `conn` while its COPY
    streams; customers are committed data, so reading them outside the batch's transaction is the same.
    """
    next_offset = messages[-1].offset() + 1
    result = BatchResult(partition, start_offset, next_offset)
    with conn.transaction():
        stored = _lock_stored_offset(conn, topic, partition)
        if stored != start_offset:
            result.stale = True
            result.next_offset = stored
            return result  # the transaction ends without writing; the caller re-reads from `stored`
        now = utcnow()
        rejected: list[tuple[str, uuid.UUID | None, uuid.UUID | None, Message]] = []
        known: set[str] = set()  # customers seen in this batch; asked for once per batch, not per row

        def valid_row_chunks():
            for start in range(0, len(messages), CHUNK):
                chunk = messages[start:start + CHUNK]
                records = _sort_records(chunk, now, topic, partition)
                rejected.extend(records.rejected)
                customers = {row[1] for row in records.valid}
                known.update(_known_customers(lookup, customers - known))
                if not customers <= known:
                    by_offset = {message.offset(): message for message in chunk}
                    rejected.extend(
                        (f"customer_id: unknown customer {row[1]} (not in app.customers)", uuid.UUID(row[0]),
                         uuid.UUID(row[1]), by_offset[row[2]])
                        for row in records.valid if row[1] not in known)
                yield [row for row in records.valid if row[1] in known]

        offered, result.loaded = _insert_events(conn, valid_row_chunks())
        result.duplicates = offered - result.loaded
        if rejected:
            _copy_rejected(conn, topic, partition, rejected)
            result.rejected = len(rejected)
        conn.execute("update staging.kafka_offsets set next_offset = %s, updated_at = now() "
                     "where kafka_topic = %s and kafka_partition = %s", (next_offset, topic, partition))
        _pause_before_commit_for_tests(result)
    return result


def _copy_rejected(conn: psycopg.Connection, topic: str, partition: int, rejected) -> None:
    rows = [(event_id, customer_id, reason, message.key(), message.value(), topic, partition, message.offset())
            for reason, event_id, customer_id, message in sorted(rejected, key=lambda r: r[3].offset())]
    # A record's place in the log is unique, and the offset lock means nobody else writes this range;
    # the temp table + on conflict only guards against a topic whose offsets were deliberately rewound.
    conn.execute("create temp table if not exists purchase_events_rejected_batch "
                 "(like staging.purchase_events_rejected including defaults) on commit delete rows")
    _copy(conn, "purchase_events_rejected_batch", REJECTED_COLUMNS, REJECTED_COPY_TYPES, rows)
    cursor = conn.execute(f"""
        insert into staging.purchase_events_rejected ({', '.join(REJECTED_COLUMNS)})
        select {', '.join(REJECTED_COLUMNS)} from purchase_events_rejected_batch
        on conflict (kafka_topic, kafka_partition, kafka_offset) do nothing""")
    if cursor.rowcount != len(rows):
        log.warning("%s[%d]: %d rejected records were already recorded at the same offsets (offsets rewound?)",
                    topic, partition, len(rows) - cursor.rowcount)


# --- one run ------------------------------------------------------------------------------------------------

def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, application_name="purchases-loader")


def load_partition(config: LoaderConfig, partition: int,
                   connection_factory: Callable[[], psycopg.Connection] | None = None,
                   window_seconds: float | None = None, stop_when_idle: bool = False) -> RunResult:
    """Load micro-batches from one partition for `window_seconds`, committing each. Returns what it did.

    `stop_when_idle` ends the run at the first EOF with nothing new (tests, benchmarks, catch-up).
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
    try:
        reader.check_broker()
        topic_id = reader.topic_id()
        start = start_offset(conn, reader, topic_id)
        result = RunResult(config.topic, partition, start, start)
        reader.seek(start)
        while time.monotonic() - started < window:
            messages, eof = reader.read_batch()
            if not messages:
                if eof and stop_when_idle:
                    break
                continue
            if topic_id is not None and reader.topic_id() != topic_id:
                # Checked after reading: a record from a recreated topic is never stored at an old offset.
                raise TopicRecreated(f"{config.topic} was recreated while partition {partition} was being loaded; "
                                     f"the next run reads the new topic from its start")
            batch_started = conn.execute("select now()").fetchone()[0] if result.batches == 0 else None
            batch = write_batch(conn, config.topic, partition, result.next_offset, messages, lookup)
            if batch.stale:
                log.warning("%s[%d]: stored offset moved to %d by another loader; re-reading from there",
                            config.topic, partition, batch.next_offset)
                reader.seek(batch.next_offset)
                result.next_offset = batch.next_offset
                continue
            if batch_started is not None:
                result.loaded_since = batch_started.isoformat()
            result.batches += 1
            result.loaded += batch.loaded
            result.duplicates += batch.duplicates
            result.rejected += batch.rejected
            result.next_offset = batch.next_offset
            log.info("%s[%d] offsets %d..%d: %d loaded, %d duplicate, %d rejected", config.topic, partition,
                     batch.start_offset, batch.next_offset - 1, batch.loaded, batch.duplicates, batch.rejected)
            if eof and stop_when_idle:
                break
        result.seconds = round(time.monotonic() - started, 3)
        return result
    finally:
        reader.close()
        conn.close()
        lookup.close()


def load_available(bootstrap_servers: str, dsn: str, topic: str | None = None,
                   window_seconds: float = 600) -> list[RunResult]:
    """One-shot: load what the broker holds now from every partition of the topic, then return."""
    from purchases.broker import partitions_of
    from purchases.settings import Settings

    config = LoaderConfig(bootstrap_servers, dsn, topic or Settings().purchases_topic)
    return [load_partition(config, partition, window_seconds=window_seconds, stop_when_idle=True)
            for partition in partitions_of(bootstrap_servers, config.topic)]


def rewind(dsn: str, topic: str, partition: int, offset: int) -> int:
    """Set the stored next offset of a partition (after a topic was recreated). Returns the old one."""
    with psycopg.connect(dsn) as conn:
        old = _lock_stored_offset(conn, topic, partition)
        conn.execute("update staging.kafka_offsets set next_offset = %s, updated_at = now() "
                     "where kafka_topic = %s and kafka_partition = %s", (offset, topic, partition))
    return old


def main(argv: list[str] | None = None) -> None:
    from purchases.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m purchases.loader",
                                     description="Load purchase events from Kafka into staging, exactly once.")
    parser.add_argument("--bootstrap-servers", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--dsn", default=settings.warehouse_dsn)
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
            result = load_partition(config, args.partition, window_seconds=args.window,
                                    stop_when_idle=args.until_idle)
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


if __name__ == "__main__":
    main()
