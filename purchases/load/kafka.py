"""Reading one partition: a consumer assign()ed at an explicit offset, read in batches bounded in records,
bytes and time, with the log end each fetch reports.

No consumer group: the warehouse, not the broker, owns progress (staging.kafka_offsets), and joining a group
takes ~23 s on the embedded broker. The embedded broker's ListOffsets answer (the "watermark" before a
fetch) is wrong (measured: 1 with 1000 records in the partition); the high watermark carried by each fetch
response is right (1000), so the log end is read from the fetches, never asked for.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from purchases.load.config import LoaderConfig

log = logging.getLogger(__name__)


class LoaderError(RuntimeError):
    """A condition the loader cannot resolve by itself; the message says what and what to do."""


class BrokerUnavailable(LoaderError):
    """The broker cannot be reached: an infrastructure fault, so the task fails and is retried."""


class LogTruncated(LoaderError):
    pass


class TopicRecreated(LoaderError):
    pass


def consumer_settings(config: LoaderConfig) -> dict[str, Any]:
    settings = {
        key: value
        for key, value in config.kafka_config.items()
        if not key.startswith("group.") and key not in ("enable.auto.commit", "auto.offset.reset")
    }
    settings.update(
        {
            "bootstrap.servers": config.bootstrap_servers,
            # assign() only: no group join (slow on tansu), no offsets committed to the broker.
            "group.id": "purchases-loader-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # Out of range means the log no longer holds the stored offset: stop rather than skip or re-read.
            "auto.offset.reset": "error",
            # Memory stays bounded by the batch caps plus this prefetch queue.
            "queued.max.messages.kbytes": 16_384,
            "fetch.wait.max.ms": 100,
        }
    )
    return settings


@dataclass
class ReadBatch:
    """Records read in one go, whether the partition's end was reached, and the log end the broker reported
    (None until a fetch has told it)."""

    messages: list[Message]
    eof: bool
    log_end: int | None


class PartitionReader:
    """A consumer assigned to one partition at an explicit offset, read in bounded batches."""

    def __init__(self, config: LoaderConfig, partition: int):
        self.config = config
        self.partition = partition
        self._topic_partition = TopicPartition(config.topic, partition)
        self._broker_errors: list[KafkaError] = []
        self._all_down_since: float | None = None
        settings = consumer_settings(config)
        settings["error_cb"] = self._on_error
        self.consumer = Consumer(settings)
        self.position: int | None = None
        self._admin: AdminClient | None = None
        self._eof_seen = False
        self._assigned_at = 0.0
        self._held_back: list[Message] = []  # fetched beyond a batch's byte cap: the next batch's start

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
                f"({exc.args[0]}); is it running? The task is retried."
            ) from None
        topic = metadata.topics.get(self.config.topic)
        if topic is None or topic.error is not None:
            raise LoaderError(
                f"topic {self.config.topic!r} is not on the broker at "
                f"{self.config.bootstrap_servers}: {topic.error if topic else 'missing'}"
            )
        if self.partition not in topic.partitions:
            raise LoaderError(
                f"topic {self.config.topic!r} has no partition {self.partition} (it has {sorted(topic.partitions)})"
            )

    def topic_id(self) -> str | None:
        """The topic's id (changes when the topic is recreated); None if the broker does not tell."""
        if self._admin is None:
            settings = {
                key: value
                for key, value in consumer_settings(self.config).items()
                if key in ("bootstrap.servers",) or key.startswith(("security.", "sasl.", "ssl."))
            }
            self._admin = AdminClient(settings)
        try:
            description = self._admin.describe_topics(TopicCollection([self.config.topic]))[self.config.topic].result(
                10
            )
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"Kafka broker at {self.config.bootstrap_servers} could not describe topic "
                f"{self.config.topic!r} ({exc.args[0]}); the task is retried."
            ) from None
        return str(description.topic_id) if description.topic_id else None

    def log_start(self) -> int:
        low, _ = self.consumer.get_watermark_offsets(self._topic_partition, timeout=10, cached=False)
        return max(low, 0)

    def seek(self, offset: int) -> None:
        self.consumer.assign([TopicPartition(self.config.topic, self.partition, offset)])
        self.position = offset
        self._eof_seen = False
        self._held_back = []
        self._assigned_at = time.monotonic()

    def fetched_log_end(self) -> int | None:
        """The high watermark of the latest fetch response (exact, unlike a ListOffsets answer)."""
        try:
            _, high = self.consumer.get_watermark_offsets(self._topic_partition, cached=True)
        except KafkaException:
            return None
        return high if high is not None and high >= 0 else None

    def read_batch(self) -> ReadBatch:
        """Records from the current position: until EOF, either cap, an idle pause or batch_max_seconds.
        What one fetch brought beyond the byte cap waits for the next batch."""
        config = self.config
        messages: list[Message] = []
        size = 0
        eof = False
        last_record_at = started = time.monotonic()
        while (
            len(messages) < config.batch_max_events
            and size < config.batch_max_bytes
            and time.monotonic() - started < config.batch_max_seconds
        ):
            got = self._held_back or self.consumer.consume(
                min(config.batch_max_events - len(messages), 5_000), timeout=0.05
            )
            self._held_back = []
            for index, message in enumerate(got):
                error = message.error()
                if error is None:
                    record_size = len(message) + len(message.key() or b"")
                    if messages and size + record_size > config.batch_max_bytes:
                        self._held_back = got[index:]
                        break
                    messages.append(message)
                    size += record_size
                elif error.code() == KafkaError._PARTITION_EOF:
                    eof = True
                else:
                    self._raise_for(error)
            if got and any(m.error() is None for m in got):
                last_record_at = time.monotonic()
                self._all_down_since = None
            if eof or self._held_back or time.monotonic() - last_record_at > config.idle_seconds:
                break
        if messages:
            self.position = messages[-1].offset() + 1
        if eof:
            self._eof_seen = True
        self._check_health(bool(messages))
        log_end = self.position if eof else self.fetched_log_end()
        return ReadBatch(messages, eof, log_end)

    def _raise_for(self, error: KafkaError) -> None:
        if error.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
            raise LogTruncated(
                f"{self.config.topic}[{self.partition}]: the broker no longer has offset {self.position} "
                f"({error.str()}). The topic was recreated or truncated. Check what happened, then move the "
                f"stored offset deliberately: python -m purchases.load rewind --partition {self.partition} "
                f"--to OFFSET"
            )
        if error.fatal():
            raise KafkaException(error)
        log.warning("%s[%d]: broker error, retrying: %s", self.config.topic, self.partition, error.str())

    def _check_health(self, got_records: bool) -> None:
        now = time.monotonic()
        if self._all_down_since is not None and now - self._all_down_since > self.config.broker_down_seconds:
            last = self._broker_errors[-1].str() if self._broker_errors else "no answer"
            raise BrokerUnavailable(
                f"Kafka broker at {self.config.bootstrap_servers} unreachable for "
                f"{now - self._all_down_since:.0f} s ({last}); the task is retried."
            )
        if not got_records and not self._eof_seen and now - self._assigned_at > self.config.stall_check_seconds:
            self._check_log_reaches_position()
            self._assigned_at = now  # check again only after another quiet stretch

    def _check_log_reaches_position(self) -> None:
        # Kafka answers a fetch past the log end with OFFSET_OUT_OF_RANGE; tansu answers with nothing, so
        # ask for the true end: read from the (possibly low) reported watermark until EOF, which is exact.
        low, high = self.consumer.get_watermark_offsets(self._topic_partition, timeout=10, cached=False)
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
                f"stored offset deliberately: python -m purchases.load rewind --partition {self.partition} "
                f"--to {log_end if log_end == 0 else 'OFFSET'}"
            )

    def close(self) -> None:
        self.consumer.close()
        self._admin = None  # destroyed with its last reference: no client left retrying a gone broker
