"""Drain the topic into staging before the embedded broker stops (`make down`; `python -m purchases.cli drain`).

The embedded broker (tansu) keeps its log in memory: whatever it holds and staging does not is lost when it
stops. So `make down` stops the API (nothing new comes in), then runs this: it measures every partition's
log end and runs the loader itself (`purchases.load.load_partition(..., stop_when_idle=True)`) on each
partition until the stored offsets (`staging.kafka_offsets.next_offset`) reach those ends. It does not
depend on the Airflow loader running (it may be between runs, retrying, paused or stopped), and it is safe
next to one: each batch locks its partition's offset row and checks it still points where the batch starts.

If the drain cannot finish within its timeout (Postgres down, broker not answering, a partition the loader
refuses), it says exactly which partitions and records are not loaded and fails; the broker must then be
left running. `check()` only reports what is not loaded (for `make down FORCE=1`: what will be lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from purchases.broker import log_end_offsets

# Every connection the drain opens gives up quickly when Postgres does not answer, or when a partition's
# offset row stays locked (by a loader whose client vanished mid-batch): the drain retries within its own
# timeout, and neither a hung connect nor a lock wait must eat all of it.
CONNECT_TIMEOUT_SECONDS = 5
LOCK_TIMEOUT = "10s"


class DrainFailed(RuntimeError):
    """The drain did not finish; the message says what is not loaded and why."""

    def __init__(self, message: str, pending: dict[int, Pending] | None = None):
        super().__init__(message)
        self.pending = pending or {}


@dataclass(frozen=True)
class Pending:
    """Records of one partition that are in the broker's log but not (known to be) in staging."""

    partition: int
    log_end: int
    loaded_to: int | None  # the stored next offset; None when Postgres could not be asked

    @property
    def records(self) -> int:
        return self.log_end - (self.loaded_to or 0)

    def describe(self, topic: str) -> str:
        if self.loaded_to is None:
            return (
                f"{topic}[{self.partition}]: up to {self.records} records (offsets 0..{self.log_end - 1}; "
                f"what is loaded is unknown)"
            )
        return f"{topic}[{self.partition}]: {self.records} records (offsets {self.loaded_to}..{self.log_end - 1})"


@dataclass
class DrainResult:
    topic: str
    log_ends: dict[int, int]
    loaded: dict[int, int] = field(default_factory=dict)  # events loaded into staging by the drain itself
    duplicates: int = 0  # events the drain's batches found already in staging (a producer's retry)
    rejected: int = 0  # records the drain's batches put into staging.purchase_events_rejected
    seconds: float = 0.0


def _dsn(dsn: str) -> str:
    options = " ".join(filter(None, [conninfo_to_dict(dsn).get("options"), f"-c lock_timeout={LOCK_TIMEOUT}"]))
    return make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS, options=options)


def _topic_id(bootstrap_servers: str, topic: str, timeout: float) -> str | None:
    """The topic's id as the loader stores it (None if the broker does not tell)."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    description = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout)
    return str(description.topic_id) if description.topic_id else None


def loaded_offsets(dsn: str, topic: str, partitions: list[int], topic_id: str | None) -> dict[int, int]:
    """The stored next offset of each partition, as far as it counts for the log the broker has now.

    Offsets stored for another topic id (an older log: the topic was recreated) or without one count as 0:
    the loader reads the current log from its start in both cases.
    """
    from purchases.load import stored_offset

    with psycopg.connect(_dsn(dsn), application_name="purchases-drain", autocommit=True) as conn:
        offsets = {partition: stored_offset(conn, topic, partition) for partition in partitions}
        if topic_id is not None:
            try:
                ids = dict(
                    conn.execute(
                        "select kafka_partition, topic_id from staging.kafka_offsets where kafka_topic = %s", (topic,)
                    ).fetchall()
                )
            except psycopg.errors.UndefinedColumn:  # a warehouse without topic ids: offsets taken as they are
                ids = None
            if ids is not None:
                offsets = {p: offset if ids.get(p) == topic_id else 0 for p, offset in offsets.items()}
    return offsets


def _pending(log_ends: dict[int, int], loaded: dict[int, int] | None) -> dict[int, Pending]:
    return {
        p: Pending(p, end, None if loaded is None else loaded[p])
        for p, end in sorted(log_ends.items())
        if end > (0 if loaded is None else loaded[p])
    }


def describe(topic: str, pending: dict[int, Pending]) -> str:
    return "; ".join(item.describe(topic) for item in pending.values())


def total(pending: dict[int, Pending]) -> int:
    return sum(item.records for item in pending.values())


def count(pending: dict[int, Pending]) -> str:
    """'15 records', or 'up to 15 records' when what is loaded could not be read."""
    unknown = any(item.loaded_to is None for item in pending.values())
    return f"{'up to ' if unknown else ''}{total(pending)} records"


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _reasons(errors: dict[int | None, str]) -> str:
    """The errors, each once, with the partitions that got it: '[0, 2] OperationalError: ...'."""
    by_text: dict[str, list[str]] = {}
    for where, text in errors.items():
        by_text.setdefault(text, []).append("warehouse" if where is None else str(where))
    return "; ".join(f"[{', '.join(where)}] {text}" for text, where in by_text.items())


def _partitions(bootstrap_servers: str, topic: str, timeout: float) -> list[int]:
    """The topic's partitions; none if the broker has no such topic (then it holds nothing of it).

    Asked of the metadata of all topics: asking for the one topic makes tansu create it (auto-create).
    """
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=timeout)
    found = metadata.topics.get(topic)
    return sorted(found.partitions) if found is not None and found.error is None else []


def check(bootstrap_servers: str, dsn: str, topic: str, timeout: float = 10.0) -> dict[int, Pending]:
    """What the broker holds that staging does not, without loading anything."""
    partitions = _partitions(bootstrap_servers, topic, timeout)
    if not partitions:
        return {}
    log_ends = log_end_offsets(bootstrap_servers, topic, partitions, timeout=timeout)
    try:
        loaded = loaded_offsets(dsn, topic, partitions, _topic_id(bootstrap_servers, topic, timeout))
    except psycopg.Error:
        loaded = None
    return _pending(log_ends, loaded)


def drain(
    bootstrap_servers: str, dsn: str, topic: str, timeout: float = 120.0, say: Callable[[str], None] = print
) -> DrainResult:
    """Load every partition of `topic` into staging up to its log end, within `timeout` seconds.

    Raises DrainFailed (with what is not loaded) when it cannot.
    """
    from confluent_kafka import KafkaException

    from purchases.load import LoaderConfig, load_partition

    started = time.monotonic()
    deadline = started + timeout
    broker_timeout = max(1.0, min(10.0, timeout))
    try:
        partitions = _partitions(bootstrap_servers, topic, broker_timeout)
        if not partitions:
            say(f"nothing to drain: the broker at {bootstrap_servers} has no topic {topic}")
            return DrainResult(topic, {})
        log_ends = log_end_offsets(bootstrap_servers, topic, partitions, timeout=broker_timeout)
        topic_id = _topic_id(bootstrap_servers, topic, broker_timeout)
    except (KafkaException, TimeoutError) as exc:
        raise DrainFailed(
            f"cannot read the log ends of topic {topic} from the broker at {bootstrap_servers} "
            f"({exc!r}), so what it holds is unknown"
        ) from None
    result = DrainResult(topic, log_ends)
    config = LoaderConfig(bootstrap_servers=bootstrap_servers, dsn=_dsn(dsn), topic=topic)

    loaded: dict[int, int] | None = None  # the last stored offsets read; None until Postgres answered once
    errors: dict[int | None, str] = {}
    try:
        loaded = loaded_offsets(dsn, topic, partitions, topic_id)
    except psycopg.Error as exc:
        errors[None] = _one_line(exc)
    pending = _pending(log_ends, loaded)
    if not pending:
        say(f"{topic}: nothing to drain; staging holds every partition up to its log end ({_ends(log_ends)})")
        result.seconds = round(time.monotonic() - started, 3)
        return result
    say(
        f"waiting up to {timeout:.0f} s for {count(pending)} of {topic} to be loaded into staging: "
        f"{describe(topic, pending)}"
    )

    last_said, said_at = None, time.monotonic()
    while pending:
        if time.monotonic() >= deadline:
            break
        for partition in list(pending):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                run = load_partition(config, partition, window_seconds=remaining, stop_when_idle=True)
                result.loaded[partition] = result.loaded.get(partition, 0) + run.loaded
                result.duplicates += run.duplicates
                result.rejected += run.rejected
                errors.pop(partition, None)
            except Exception as exc:  # noqa: BLE001 - reported with what is not loaded; retried until the deadline
                errors[partition] = _one_line(exc)
        try:
            loaded = loaded_offsets(dsn, topic, partitions, topic_id)
            errors.pop(None, None)
        except psycopg.Error as exc:
            errors[None] = _one_line(exc)
        pending = _pending(log_ends, loaded)
        if not pending:
            # The API is stopped, so nothing should have been added meanwhile; if something was, take it too.
            try:
                newer = log_end_offsets(bootstrap_servers, topic, partitions, timeout=broker_timeout)
            except (KafkaException, TimeoutError) as exc:
                errors[None] = _one_line(exc)
                newer = log_ends
            if newer != log_ends:
                say(f"{topic}: records were added meanwhile (log ends now {_ends(newer)}); loading them too")
                log_ends = result.log_ends = newer
                pending = _pending(log_ends, loaded)
            continue
        reasons = f" ({_reasons(errors)})" if errors else ""
        line = f"still waiting for {count(pending)}: {describe(topic, pending)}{reasons}"
        if line != last_said or time.monotonic() - said_at > 10:  # something changed, or a while passed
            say(line)
            last_said, said_at = line, time.monotonic()
        if errors:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    result.seconds = round(time.monotonic() - started, 3)
    if pending:
        reasons = f" Last errors: {_reasons(errors)}" if errors else ""
        raise DrainFailed(
            f"NOT drained after {timeout:.0f} s: {count(pending)} of {topic} are in the broker "
            f"but not in staging: {describe(topic, pending)}.{reasons}",
            pending,
        )
    say(
        f"{topic}: drained in {result.seconds:.1f} s; staging holds every partition up to its log end "
        f"({_ends(log_ends)}); loaded now: {sum(result.loaded.values())} events, {result.rejected} rejected"
    )
    return result


def _ends(log_ends: dict[int, int]) -> str:
    return ", ".join(f"[{p}] {end}" for p, end in sorted(log_ends.items()))
