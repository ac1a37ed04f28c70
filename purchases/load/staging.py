"""Postgres side of loading: one transaction per batch, and per-record isolation inside it.

A batch's transaction (`write_batch`): lock the partition's offset row and check it still says where the
batch starts; COPY the valid events into `staging.purchase_events` (the first copy of an event_id wins);
keep the rejected records, raw and with the reason, in `staging.purchase_events_rejected`; record the batch
in `staging.loaded_batches` (the quality gate's to-do list); move the offset; commit. A crash anywhere
before the commit leaves nothing behind and the offset unchanged.

Duplicates: a second copy of an event_id is a retry, dropped silently (counted as a duplicate), unless both
copies carry a request fingerprint (keyed purchases of the API do) and they differ: then the same
Idempotency-Key was reused for another purchase, and the newcomer is rejected as an idempotency conflict
(`idempotency_conflicts`). Only batches that hold a duplicate pay for this check.

Isolation: the COPY normally takes the whole batch at once. If Postgres refuses it because of what a row
holds (a duplicate event_id, or any data error: SQLSTATE classes 22, 23, 54), the batch goes the careful
way: COPY into a temporary table in halves, each in a savepoint, halving again what fails, until the rows
Postgres refuses are alone. Those are rejected with Postgres' own message; the rest is inserted with
`on conflict (event_id) do nothing`. Errors of any other kind (connection, permission, missing table) are
faults of the infrastructure: they fail the batch, and so the task, which is retried.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import psycopg
from confluent_kafka import Message

from purchases.contract import REQUEST_FINGERPRINT, fingerprints_comparable, utcnow
from purchases.load.records import (
    STAGING_COLUMNS,
    LineTail,
    Rejection,
    StagingRow,
    canonical_fingerprint,
    sort_records,
)

log = logging.getLogger(__name__)

# Test hook: when set to a file path, the loader writes that file after the batch is written (COPY done,
# offset updated) and then waits before COMMIT until the file is removed, so a test can SIGKILL it at the
# worst moment, or let it commit while another loader waits for the partition's lock.
PAUSE_BEFORE_COMMIT_ENV = "PURCHASES_LOADER_PAUSE_BEFORE_COMMIT"

# Records validated and sent to COPY at a time: Postgres stores one chunk while the next is validated.
CHUNK = 2_000
REJECTED_COLUMNS = (
    "event_id",
    "customer_id",
    "reason",
    "raw_key",
    "raw_value",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "batch_id",
)
REJECTED_COPY_TYPES = ("uuid", "uuid", "text", "bytea", "bytea", "text", "int4", "int8", "int8")
# SQLSTATE classes of errors caused by what a row holds: data exception, integrity constraint violation,
# program limit exceeded. Any other class is the infrastructure's (and is not the record's fault).
DATA_ERROR_CLASSES = ("22", "23", "54")
BATCH_ID_SEQUENCE = "staging.loaded_batches_batch_id_seq"


@dataclass
class BatchResult:
    partition: int
    start_offset: int
    next_offset: int
    batch_id: int | None = None
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    stale: bool = False  # another loader had moved the stored offset: nothing was written


@dataclass
class StoreOutcome:
    """What became of the rows offered to staging: inserted, already there, or refused by Postgres."""

    loaded: int = 0
    duplicates: int = 0
    refused: list[tuple[StagingRow, str]] = field(default_factory=list)


def is_data_error(exc: BaseException) -> bool:
    """Whether Postgres (or the encoding on the way to it) refused what a row holds."""
    if isinstance(exc, UnicodeError):
        return True
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "")[:2] in DATA_ERROR_CLASSES


def lock_stored_offset(conn: psycopg.Connection, topic: str, partition: int) -> int:
    """The partition's stored next offset, its row locked until the transaction ends."""
    conn.execute(
        "insert into staging.kafka_offsets (kafka_topic, kafka_partition, next_offset) "
        "values (%s, %s, 0) on conflict do nothing",
        (topic, partition),
    )
    row = conn.execute(
        "select next_offset from staging.kafka_offsets where kafka_topic = %s and kafka_partition = %s for update",
        (topic, partition),
    ).fetchone()
    return row[0]


def stored_offset(conn: psycopg.Connection, topic: str, partition: int) -> int:
    row = conn.execute(
        "select next_offset from staging.kafka_offsets where kafka_topic = %s and kafka_partition = %s",
        (topic, partition),
    ).fetchone()
    return row[0] if row else 0


def set_stored_offset(conn: psycopg.Connection, topic: str, partition: int, next_offset: int) -> None:
    conn.execute(
        "update staging.kafka_offsets set next_offset = %s, updated_at = now() "
        "where kafka_topic = %s and kafka_partition = %s",
        (next_offset, topic, partition),
    )


def record_log_end(conn: psycopg.Connection, topic: str, partition: int, log_end: int) -> None:
    """What the loader saw of the partition's log: with the stored offset, its lag (marts.partition_lag)."""
    conn.execute(
        "insert into staging.kafka_log_ends (kafka_topic, kafka_partition, log_end_offset) "
        "values (%s, %s, %s) on conflict (kafka_topic, kafka_partition) do update "
        "set log_end_offset = excluded.log_end_offset, seen_at = now()",
        (topic, partition, log_end),
    )


def known_customers(conn: psycopg.Connection, customer_ids: Iterable[str]) -> set[str]:
    """Which of these customer ids (canonical text) are in app.customers."""
    wanted = list(set(customer_ids))
    if not wanted:
        return set()
    rows = conn.execute("select customer_id::text from app.customers where customer_id = any(%s::uuid[])", (wanted,))
    return {row[0] for row in rows}


def unknown_customer_reason(customer_id: uuid.UUID | str) -> str:
    return f"customer_id: unknown customer {customer_id} (not in app.customers)"


def new_batch_id(conn: psycopg.Connection) -> int:
    return conn.execute("select nextval(%s)", (BATCH_ID_SEQUENCE,)).fetchone()[0]


def record_batch(
    conn: psycopg.Connection,
    batch_id: int,
    kind: str,
    topic: str,
    partition: int | None,
    start_offset: int | None,
    next_offset: int | None,
    outcome: StoreOutcome,
    rejected: int,
    topic_id: str | None = None,
) -> None:
    """The batch, for the quality gate (which picks every batch it has not passed yet: checked_at null)."""
    conn.execute(
        "insert into staging.loaded_batches (batch_id, kind, kafka_topic, kafka_topic_id, kafka_partition, "
        "start_offset, next_offset, loaded, duplicates, rejected) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            batch_id,
            kind,
            topic,
            topic_id,
            partition,
            start_offset,
            next_offset,
            outcome.loaded,
            outcome.duplicates,
            rejected,
        ),
    )


def _copy_lines(conn: psycopg.Connection, table: str, row_chunks: Iterable[Sequence[StagingRow]]) -> None:
    """COPY in text format, lines built in Python: several times cheaper per row than psycopg's write_row.
    Chunks are sent as they come, so Postgres stores one chunk while the next is being validated."""
    with conn.cursor() as cursor:
        with cursor.copy(f"copy {table} ({', '.join(STAGING_COLUMNS)}) from stdin") as copy:
            for rows in row_chunks:
                if rows:
                    copy.write("".join(row.line for row in rows).encode())


def _copy_isolating(conn: psycopg.Connection, table: str, rows: Sequence[StagingRow]) -> list[tuple[StagingRow, str]]:
    """COPY `rows` into `table`, each attempt in a savepoint; a part Postgres refuses for its data is halved
    until the refused rows are alone. Returns those, with Postgres' reason."""
    refused: list[tuple[StagingRow, str]] = []
    parts = [list(rows)]
    while parts:
        part = parts.pop()
        try:
            with conn.transaction():
                _copy_lines(conn, table, [part])
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(part) == 1:
                refused.append((part[0], _postgres_reason(exc)))
            else:
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]
    return refused


def _postgres_reason(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        message = (exc.diag.message_primary or str(exc)).strip()
        return f"Postgres cannot store it: {message} (SQLSTATE {exc.sqlstate})"
    return f"cannot be encoded for Postgres: {exc}"


IDEMPOTENCY_CONFLICT = "idempotency conflict"


def idempotency_conflict_reason(event_id: str, first: str, fingerprint: str, where: str) -> str:
    return (
        f"{IDEMPOTENCY_CONFLICT}: event_id {event_id} {where} from a request with another body "
        f"({REQUEST_FINGERPRINT} {first}; this record's {fingerprint}): its Idempotency-Key was reused for a "
        "different purchase, which is not recorded"
    )


def idempotency_conflicts(conn: psycopg.Connection, rows: Sequence[StagingRow]) -> list[tuple[StagingRow, str]]:
    """The rows whose event_id is taken already, in staging or by an earlier row of `rows` (the lowest
    offset first, as it wins), by a request with another fingerprint. A copy without a fingerprint (an
    unkeyed or older producer's), or one whose fingerprint is of another version, cannot be told from a
    retry: it stays a duplicate."""
    keyed = list({row.event_id for row in rows if row.fingerprint is not None})
    if not keyed:
        return []
    taken: dict[str, tuple[str | None, str]] = {
        event_id: (canonical_fingerprint(fingerprint), "is already recorded")
        for event_id, fingerprint in conn.execute(
            "select event_id::text, extra ->> %s from staging.purchase_events where event_id = any(%s::uuid[])",
            (REQUEST_FINGERPRINT, keyed),
        )
    }
    conflicts = []
    for row in sorted(rows, key=lambda row: row.offset):
        first = taken.get(row.event_id)
        if first is None:
            taken[row.event_id] = (row.fingerprint, f"is already taken by the record at offset {row.offset}")
        elif (
            first[0] is not None
            and row.fingerprint is not None
            and first[0] != row.fingerprint
            and fingerprints_comparable(first[0], row.fingerprint)
        ):
            conflicts.append((row, idempotency_conflict_reason(row.event_id, first[0], row.fingerprint, first[1])))
    return conflicts


def store_events(conn: psycopg.Connection, row_chunks: Iterable[Sequence[StagingRow]]) -> StoreOutcome:
    """COPY rows into staging.purchase_events, the first copy of an event_id winning; rows Postgres refuses
    and idempotency conflicts are returned, not raised. Must run inside the batch's transaction."""
    sent: list[StagingRow] = []

    def remembered() -> Iterator[Sequence[StagingRow]]:
        for rows in row_chunks:
            sent.extend(rows)
            yield rows

    stream = remembered()
    try:
        with conn.transaction():
            _copy_lines(conn, "staging.purchase_events", stream)
        return StoreOutcome(loaded=len(sent))
    except Exception as exc:
        if not is_data_error(exc):
            raise
        log.info("batch refused as a whole (%s); storing it row by row where needed", _postgres_reason(exc))
    for _ in stream:  # the error can come before every chunk was produced
        pass
    conflicts = idempotency_conflicts(conn, sent)
    conflicting = {id(row) for row, _ in conflicts}
    candidates = [row for row in sent if id(row) not in conflicting] if conflicts else sent
    conn.execute(
        "create temp table if not exists purchase_events_batch "
        "(like staging.purchase_events including defaults) on commit delete rows"
    )
    refused = _copy_isolating(conn, "purchase_events_batch", candidates)
    # Within the batch, the first record (lowest offset) wins too.
    cursor = conn.execute(f"""
        insert into staging.purchase_events ({", ".join(STAGING_COLUMNS)})
        select distinct on (event_id) {", ".join(STAGING_COLUMNS)}
          from purchase_events_batch order by event_id, kafka_offset
        on conflict (event_id) do nothing""")
    conn.execute("truncate purchase_events_batch")
    return StoreOutcome(
        loaded=cursor.rowcount,
        duplicates=len(candidates) - len(refused) - cursor.rowcount,
        refused=conflicts + refused,
    )


def store_rejections(
    conn: psycopg.Connection, topic: str, partition: int, batch_id: int, rejections: Sequence[Rejection]
) -> None:
    """Binary COPY: every value is storable by construction (bytes as bytea, reasons cleaned of NUL and lone
    surrogates by Rejection.of, ids parsed)."""
    rows = [
        (r.event_id, r.customer_id, r.reason, r.key, r.value, topic, partition, r.offset, batch_id)
        for r in sorted(rejections, key=lambda r: r.offset)
    ]
    with conn.cursor() as cursor:
        with cursor.copy(
            f"copy staging.purchase_events_rejected ({', '.join(REJECTED_COLUMNS)}) from stdin (format binary)"
        ) as copy:
            copy.set_types(list(REJECTED_COPY_TYPES))
            for row in rows:
                copy.write_row(row)


def _pause_before_commit_for_tests(batch: BatchResult) -> None:
    marker = os.environ.get(PAUSE_BEFORE_COMMIT_ENV)
    if not marker:
        return
    with open(marker, "w") as f:
        json.dump(asdict(batch), f)
    log.warning(
        "test hook %s: batch written, waiting before COMMIT until %s is removed", PAUSE_BEFORE_COMMIT_ENV, marker
    )
    while os.path.exists(marker):
        time.sleep(0.05)


def write_batch(
    conn: psycopg.Connection,
    topic: str,
    partition: int,
    start_offset: int,
    messages: Sequence[Message],
    lookup: psycopg.Connection,
    topic_id: str | None = None,
) -> BatchResult:
    """One transaction: check the stored offset, COPY valid events, keep rejected ones, move the offset.

    `lookup` is a second connection for customer look-ups, which cannot share `conn` while its COPY
    streams; customers are committed data, so reading them outside the batch's transaction is the same.
    """
    next_offset = messages[-1].offset() + 1
    result = BatchResult(partition, start_offset, next_offset)
    with conn.transaction():
        stored = lock_stored_offset(conn, topic, partition)
        if stored != start_offset:
            result.stale = True
            result.next_offset = stored
            return result  # the transaction ends without writing; the caller re-reads from `stored`
        result.batch_id = new_batch_id(conn)
        tail = LineTail(topic, partition, result.batch_id)
        now = utcnow()
        rejections: list[Rejection] = []
        known: set[str] = set()  # customers seen in this batch; asked for once per batch, not per row

        def valid_row_chunks() -> Iterator[list[StagingRow]]:
            for start in range(0, len(messages), CHUNK):
                chunk = messages[start : start + CHUNK]
                records = sort_records(chunk, now, tail)
                rejections.extend(records.rejections)
                customers = {row.customer_id for row in records.rows}
                known.update(known_customers(lookup, customers - known))
                if not customers <= known:
                    by_offset = {message.offset(): message for message in chunk}
                    rejections.extend(
                        Rejection.of(
                            by_offset[row.offset],
                            unknown_customer_reason(row.customer_id),
                            row.event_id,
                            row.customer_id,
                        )
                        for row in records.rows
                        if row.customer_id not in known
                    )
                yield [row for row in records.rows if row.customer_id in known]

        outcome = store_events(conn, valid_row_chunks())
        if outcome.refused:
            by_offset = {message.offset(): message for message in messages}
            rejections.extend(
                Rejection.of(by_offset[row.offset], reason, row.event_id, row.customer_id)
                for row, reason in outcome.refused
            )
        if rejections:
            store_rejections(conn, topic, partition, result.batch_id, rejections)
        record_batch(
            conn,
            result.batch_id,
            "load",
            topic,
            partition,
            start_offset,
            next_offset,
            outcome,
            len(rejections),
            topic_id,
        )
        set_stored_offset(conn, topic, partition, next_offset)
        result.loaded, result.duplicates, result.rejected = outcome.loaded, outcome.duplicates, len(rejections)
        _pause_before_commit_for_tests(result)
    return result
